"""The float32 CPU fast path: folded BatchNorms, channels-last, and the measured choice
of the linear-layer path. Same results as the plain model; same state dict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from napari_focus import FocusPredictor, cpu_linear
from napari_focus.runtime import apply_cpu_fast_path, cpu_bfloat16_supported, linear_shapes


@pytest.fixture
def linear_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_FOCUS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(cpu_linear.ENV, raising=False)
    return tmp_path / "cache" / cpu_linear.CACHE_NAME


def _predictor(case, **kwargs) -> FocusPredictor:
    arch, state = case
    return FocusPredictor.from_state_dict(
        {k: v.clone() for k, v in state.items()}, "sod", architecture=arch, device="cpu", **kwargs
    )


def _randomise_batchnorms(model: torch.nn.Module) -> None:
    """Non-trivial inference statistics, so that folding has something to fold."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)


@pytest.mark.parametrize("case_name", ["tiny_mlp", "tiny_swiglu"])
def test_folded_backbone_equals_plain(case_name, request, linear_cache):
    predictor = _predictor(request.getfixturevalue(case_name))
    backbone = predictor.model.backbone
    _randomise_batchnorms(backbone)  # in place: the next forward refolds
    x = torch.randn(2, 3, 128, 160, generator=torch.Generator().manual_seed(0))
    edges = torch.rand(2, 3, 128, 160, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        fast = backbone(x, edges)
        backbone.cpu_fast_path = False
        plain = backbone(x, edges)
    for name in ("res2", "res3", "res4", "res5"):
        assert fast[name].shape == plain[name].shape
        assert fast[name].is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(fast[name], plain[name], atol=2e-5, rtol=1e-5)
    # with gradients (training) the plain modules run, whatever is folded (with autograd
    # on, oneDNN may choose other kernels than in inference mode: not bit for bit)
    backbone.cpu_fast_path = True
    folded_calls: list[str] = []
    edge, tail = backbone.folded.edge, type(backbone.folded.tail)
    real_edge, real_tail = edge.forward, tail.__call__
    edge.forward = lambda *args: folded_calls.append("edge") or real_edge(*args)
    tail.__call__ = lambda self, inputs: folded_calls.append("tail") or real_tail(self, inputs)
    try:
        with torch.inference_mode():
            backbone(x, edges)
        assert folded_calls == ["edge", "tail"]  # what the spies see at inference
        folded_calls.clear()
        with torch.enable_grad():
            trained = backbone(x, edges)
    finally:
        del edge.forward
        tail.__call__ = real_tail
    assert trained["res2"].requires_grad and folded_calls == []
    torch.testing.assert_close(trained["res2"].detach(), plain["res2"], atol=2e-5, rtol=1e-5)


def test_fast_path_keeps_the_state_dict_and_the_masks(tiny_mlp, focus_reference, linear_cache):
    fast = _predictor(tiny_mlp)
    assert fast.model.backbone.cpu_fast_path and fast.model.backbone.folded is not None
    assert fast.cpu_linear_path in cpu_linear.PATHS
    keys = set(fast.model.state_dict())
    assert not any("folded" in key for key in keys)
    plain = _predictor(tiny_mlp)
    plain.model.backbone.cpu_fast_path = False
    cpu_linear.route_linears(plain.model, "mkl")
    assert keys == set(plain.model.state_dict())
    rgb = np.array(Image.open(focus_reference / "input.png").convert("RGB"))
    a, b = fast.predict(rgb), plain.predict(rgb)
    # float32 rounding of folded against unfolded BatchNorms; MKL picks its thread count
    # (so its summation order) by load, which has moved the difference past 1e-5
    assert np.abs(a.probability - b.probability).max() < 5e-5
    assert np.array_equal(a.mask, b.mask)


@pytest.mark.parametrize("path", cpu_linear.PATHS)
def test_another_predictor_on_the_same_model_undoes_the_fast_path(
    tiny_mlp, focus_reference, linear_cache, monkeypatch, path
):
    """A float32 CPU predictor's model handed to a bfloat16 (or GPU) predictor: plain
    modules and autocast, exactly as a fresh bfloat16 predictor."""
    if not cpu_bfloat16_supported():
        pytest.skip("processor without bfloat16 support")
    monkeypatch.setenv(cpu_linear.ENV, path)
    first = _predictor(tiny_mlp)
    second = FocusPredictor(first.model, "sod", device="cpu", precision="bfloat16")
    assert second.cpu_linear_path is None
    assert not first.model.backbone.cpu_fast_path and first.model.backbone.folded is None
    assert all("forward" not in m.__dict__ for m in first.model.modules())
    fresh = _predictor(tiny_mlp, precision="bfloat16")
    rgb = np.array(Image.open(focus_reference / "input.png").convert("RGB"))
    a, b = second.predict(rgb), fresh.predict(rgb)
    assert np.array_equal(a.mask, b.mask)
    assert np.abs(a.probability - b.probability).max() < 1e-6
    assert apply_cpu_fast_path(first.model, torch.device("cuda"), "float32") is None


def test_fold_applies_only_to_float32_cpu_inference(tiny_mlp, linear_cache):
    backbone = _predictor(tiny_mlp).model.backbone
    x = torch.randn(1, 3, 64, 64)
    edges = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        assert backbone(x, edges)["res2"].is_contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast: the plain modules
            assert not backbone(x, edges)["res2"].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not cpu_linear.onednn_available(), reason="torch built without oneDNN")
def test_routed_model_compiles_and_pickles(tiny_mlp, linear_cache, monkeypatch):
    import copy
    import pickle

    monkeypatch.setenv(cpu_linear.ENV, "onednn")
    predictor = _predictor(tiny_mlp)
    clone = pickle.loads(pickle.dumps(predictor.model))
    assert clone.backbone.folded is None and clone.backbone.cpu_fast_path  # refolds on use
    assert copy.deepcopy(predictor.model).backbone.folded is None
    x, edges = torch.randn(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        expected = predictor.model(x, edges)["pred_masks"]
        torch.testing.assert_close(clone(x, edges)["pred_masks"], expected)
        assert clone.backbone.folded is not None
        compiled = torch.compile(predictor.model, backend="eager")  # no C++ toolchain needed
        torch.testing.assert_close(compiled(x, edges)["pred_masks"], expected)


@pytest.mark.skipif(not cpu_linear.onednn_available(), reason="torch built without oneDNN")
def test_onednn_linear_path_matches_mkl(tiny_swiglu, focus_reference, linear_cache, monkeypatch):
    rgb = np.array(Image.open(focus_reference / "input.png").convert("RGB"))
    results = {}
    for path in cpu_linear.PATHS:
        monkeypatch.setenv(cpu_linear.ENV, path)
        predictor = _predictor(tiny_swiglu)
        assert predictor.cpu_linear_path == path
        results[path] = predictor.predict(rgb)
    assert np.abs(results["mkl"].probability - results["onednn"].probability).max() < 1e-5
    assert np.array_equal(results["mkl"].mask, results["onednn"].mask)
    assert not linear_cache.exists()  # forced: nothing measured, nothing cached


def test_linear_path_is_measured_once_and_cached(tiny_mlp, linear_cache, monkeypatch):
    if not cpu_linear.onednn_available():
        pytest.skip("torch built without oneDNN: MKL is the only path")
    calls = []

    def fake_measure(shapes, rounds=3):
        calls.append(shapes)
        return {"mkl": 100.0, "onednn": 250.0}

    monkeypatch.setattr(cpu_linear, "measure", fake_measure)
    first = _predictor(tiny_mlp)
    assert first.cpu_linear_path == "onednn"
    assert calls == [linear_shapes(first.model)]
    shapes = " ".join("x".join(map(str, shape)) for shape in linear_shapes(first.model))
    entry = json.loads(linear_cache.read_text())[f"{cpu_linear.machine_key()}|{shapes}"]
    assert entry == {"path": "onednn", "gflops": {"mkl": 100.0, "onednn": 250.0},
                     "model": "custom"}  # the tiny architecture: neither large nor giant
    second = _predictor(tiny_mlp)
    assert second.cpu_linear_path == "onednn" and len(calls) == 1  # from the cache
    assert (
        f"onednn for the custom model's linear shapes {shapes} (measured GFLOP per "
        "CPU-second: mkl 100, onednn 250)" in cpu_linear.describe()
    )
    # a tie within the margin keeps PyTorch's default path
    linear_cache.unlink()
    monkeypatch.setattr(cpu_linear, "measure", lambda shapes, rounds=3: {"mkl": 100, "onednn": 105})
    assert _predictor(tiny_mlp).cpu_linear_path == "mkl"


def test_real_measurement_and_unreadable_cache(linear_cache, monkeypatch):
    rates = cpu_linear.measure([(64, 32, 48)], rounds=1)
    assert set(rates) == set(cpu_linear.PATHS) and all(r > 0 for r in rates.values())
    linear_cache.parent.mkdir(parents=True)
    linear_cache.write_text("{not json")
    assert cpu_linear.choose([(64, 32, 48)]) in cpu_linear.PATHS  # rewritten, no crash
    assert isinstance(json.loads(linear_cache.read_text()), dict)
    monkeypatch.setenv(cpu_linear.ENV, "mkl")
    assert cpu_linear.describe() == f"CPU float32 linear layers: mkl (set by {cpu_linear.ENV})"
    monkeypatch.setenv(cpu_linear.ENV, "fastest")
    with pytest.raises(ValueError, match="NAPARI_FOCUS_CPU_LINEAR must be auto, mkl or onednn"):
        cpu_linear.choose([(64, 32, 48)])


def test_fold_follows_weight_changes_and_training_mode(tiny_mlp, linear_cache):
    """Validation during fine-tuning must see the current weights, not those at load."""
    predictor = _predictor(tiny_mlp)
    backbone = predictor.model.backbone
    first = backbone.folded
    x = torch.randn(1, 3, 128, 160, generator=torch.Generator().manual_seed(0))
    edges = torch.rand(1, 3, 128, 160, generator=torch.Generator().manual_seed(1))

    def both() -> tuple[dict, dict]:
        with torch.inference_mode():
            fast = backbone(x, edges)
            backbone.cpu_fast_path = False
            plain = backbone(x, edges)
            backbone.cpu_fast_path = True
        return fast, plain

    with torch.no_grad():  # an optimizer step or load_state_dict: in-place updates
        backbone.norm1.running_var.mul_(3.0)
        backbone.edge.layer1[0].conv1.weight.add_(0.05)
        backbone.up.bias.add_(0.1)
    fast, plain = both()
    assert backbone.folded is not first  # rebuilt from the new weights
    for name in fast:
        torch.testing.assert_close(fast[name], plain[name], atol=2e-5, rtol=1e-5)
    second = backbone.folded
    both()
    assert backbone.folded is second  # unchanged weights: no new fold

    backbone.train()  # BatchNorms on batch statistics: the folded copy cannot apply
    with torch.no_grad():
        out = backbone(x, edges)
    assert not out["res2"].is_contiguous(memory_format=torch.channels_last)
    assert backbone.folded is second  # kept for when the model is back in eval mode


@pytest.mark.parametrize("path", cpu_linear.PATHS)
def test_a_released_model_is_freed_at_once_and_a_routed_one_still_copies(
    tiny_mlp, focus_reference, linear_cache, monkeypatch, path
):
    """Changing the model in napari frees the old one as its last reference goes: no
    reference cycle waits for a full garbage collection (0.3 s of napari's time). A
    routed model pickles and deep-copies with each layer's route on its own copy."""
    import copy
    import gc
    import pickle
    import weakref

    monkeypatch.setenv(cpu_linear.ENV, path)
    predictor = _predictor(tiny_mlp)
    rgb = np.array(Image.open(focus_reference / "input.png").convert("RGB"))
    expected = predictor.predict(rgb).probability
    for copied in (pickle.loads(pickle.dumps(predictor.model)), copy.deepcopy(predictor.model)):
        again = FocusPredictor(copied, "sod", device="cpu")
        np.testing.assert_allclose(again.predict(rgb).probability, expected, atol=5e-5)
        for layer in copied.modules():
            if "forward" in vars(layer):
                assert vars(layer)["forward"]._linear() is layer
    gc.collect()
    model = weakref.ref(predictor.model)
    gc.disable()
    try:
        del predictor
        assert model() is None
    finally:
        gc.enable()
