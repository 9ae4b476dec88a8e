"""Checkpoint loading (official .pth, bare state dicts, .safetensors) and inference checkpoints."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import napari_focus
from napari_focus import FocusPredictor
from napari_focus.checkpoints import (
    METADATA_FORMAT,
    TRAINING_ONLY_PREFIXES,
    CheckpointError,
    drop_training_keys,
    infer_size,
    save_inference_checkpoint,
)


def _inference_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}


def _assert_model_weights(predictor: FocusPredictor, expected: dict[str, torch.Tensor]) -> None:
    loaded = predictor.model.state_dict()
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        got = loaded[key]
        assert got.shape == value.shape, key
        if value.is_floating_point():
            assert got.dtype == torch.float32, key
            assert torch.equal(got, value.float()), key
        else:
            assert torch.equal(got, value), key


@pytest.fixture(scope="module")
def tiny(tiny_mlp):
    """(architecture, a private copy of the tiny_mlp state dict with its training-only keys)."""
    arch, state = tiny_mlp
    return arch, dict(state)


@pytest.fixture(scope="module")
def detectron2_pth(tiny, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("d2") / "focus_tiny_sod.pth"
    torch.save({"model": tiny[1], "iteration": 5}, path)
    return path


# ----------------------------------------------------------------------------- .pth loading
def test_fixture_has_training_only_keys(tiny):
    _, state = tiny
    assert any(k.startswith("sem_seg_head.predictor.text_embed.") for k in state)
    assert any(k.startswith("sem_seg_head.predictor.image_embed.") for k in state)


def test_detectron2_checkpoint_loads_with_the_source_weights(tiny, detectron2_pth):
    arch, state = tiny
    predictor = FocusPredictor.from_checkpoint(
        detectron2_pth, "sod", architecture=arch, device="cpu"
    )
    assert predictor.task == "sod"
    assert predictor.architecture.embed_dim == 64
    _assert_model_weights(predictor, _inference_keys(state))
    assert not any(k.startswith(TRAINING_ONLY_PREFIXES) for k in predictor.model.state_dict())
    assert not any(p.is_meta for p in predictor.model.parameters())
    assert not any(b.is_meta for b in predictor.model.buffers())


def test_bare_state_dict_loads(tiny, tmp_path):
    arch, state = tiny
    path = tmp_path / "bare.pth"
    torch.save(state, path)
    predictor = FocusPredictor.from_checkpoint(path, architecture=arch, device="cpu")
    assert predictor.task is None
    _assert_model_weights(predictor, _inference_keys(state))


def test_float16_pth_is_loaded_as_float32(tiny, tmp_path):
    arch, state = tiny
    path = tmp_path / "half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, path)
    predictor = FocusPredictor.from_checkpoint(path, architecture=arch, device="cpu")
    expected = {
        k: v.half().float() if v.is_floating_point() else v
        for k, v in _inference_keys(state).items()
    }
    _assert_model_weights(predictor, expected)


def test_training_only_keys_are_dropped_silently(tiny, tmp_path):
    arch, state = tiny
    extra = {
        "sem_seg_head.predictor.clip_refiner.visual.proj": torch.zeros(3, 5),
        "sem_seg_head.predictor.text_embed.weight": torch.zeros(7),
        "sem_seg_head.predictor.image_embed.something.else": torch.zeros(2, 2),
    }
    path = tmp_path / "with_training.pth"
    torch.save({"model": {**state, **extra}, "iteration": 5}, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor = FocusPredictor.from_checkpoint(path, architecture=arch, device="cpu")
    ours = [w for w in caught if "napari_focus" in (w.filename or "")]
    assert not ours, [str(w.message) for w in ours]
    _assert_model_weights(predictor, _inference_keys(state))
    assert set(drop_training_keys(extra)) == set()


def test_unexpected_key_is_named(tiny, tmp_path):
    arch, state = tiny
    path = tmp_path / "extra.pth"
    torch.save({"model": {**state, "backbone.surprise.weight": torch.zeros(3)}}, path)
    with pytest.raises(CheckpointError) as info:
        FocusPredictor.from_checkpoint(path, architecture=arch, device="cpu")
    message = str(info.value)
    assert "unexpected keys (1)" in message
    assert "backbone.surprise.weight" in message
    assert "missing" not in message and "mismatch" not in message
    assert str(path) in message


def test_missing_key_is_named(tiny, tmp_path):
    arch, state = tiny
    gone = "sem_seg_head.predictor.class_embed.weight"
    assert gone in state
    path = tmp_path / "missing.pth"
    torch.save({k: v for k, v in state.items() if k != gone}, path)
    with pytest.raises(CheckpointError) as info:
        FocusPredictor.from_checkpoint(path, architecture=arch, device="cpu")
    message = str(info.value)
    assert "missing keys (1)" in message
    assert gone in message
    assert "unexpected" not in message


def test_reshaped_tensor_is_listed_as_shape_mismatch(tiny, tmp_path):
    arch, state = tiny
    key = "backbone.patch_embed.proj.weight"
    bad = dict(state)
    bad[key] = state[key].reshape(state[key].shape[0], -1)  # same values, wrong shape
    path = tmp_path / "reshaped.pth"
    torch.save(bad, path)
    with pytest.raises(CheckpointError) as info:
        FocusPredictor.from_checkpoint(path, architecture=arch, device="cpu")
    message = str(info.value)
    assert "shape mismatches (1)" in message
    assert key in message
    assert str(tuple(bad[key].shape)) in message and str(tuple(state[key].shape)) in message


def test_all_problems_are_reported_in_one_error(tiny, tmp_path):
    arch, state = tiny
    bad = dict(state)
    del bad["sem_seg_head.predictor.query_feat.weight"]
    bad["totally.unknown"] = torch.zeros(1)
    bad["sem_seg_head.predictor.class_embed.bias"] = torch.zeros(99)
    path = tmp_path / "bad.pth"
    torch.save({"model": bad}, path)
    with pytest.raises(CheckpointError) as info:
        FocusPredictor.from_checkpoint(path, architecture=arch, device="cpu")
    message = str(info.value)
    for needle in (
        "missing keys (1)",
        "sem_seg_head.predictor.query_feat.weight",
        "unexpected keys (1)",
        "totally.unknown",
        "shape mismatches (1)",
        "sem_seg_head.predictor.class_embed.bias (99,)",
    ):
        assert needle in message


def test_weights_of_another_configuration_are_refused(tiny, tiny_swiglu, detectron2_pth):
    swiglu_arch, _ = tiny_swiglu
    with pytest.raises(CheckpointError) as info:
        FocusPredictor.from_checkpoint(detectron2_pth, architecture=swiglu_arch, device="cpu")
    message = str(info.value)
    # the MLP feed-forward keys are unexpected for a SwiGLU model, and vice versa
    assert "missing keys" in message and "mlp.w12" in message
    assert "unexpected keys" in message and "mlp.fc1" in message
    assert "more)" in message  # long lists are shortened, with a count


def test_wrong_width_is_listed_as_shape_mismatches(tiny, tmp_path):
    arch, state = tiny
    wider = {**arch, "embed_dim": 128, "num_heads": 8, "deform_heads": 8}
    path = tmp_path / "tiny.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        FocusPredictor.from_checkpoint(path, architecture=wider, device="cpu")
    message = str(info.value)
    assert "shape mismatches" in message
    assert "backbone.blocks.0.attn.proj.bias (64,) vs model (128,)" in message
    assert "more)" in message  # hundreds of mismatches: the list is shortened with a count
    assert "missing keys" not in message and "unexpected keys" not in message


# ----------------------------------------------------------------------------- size inference
def test_size_cannot_be_inferred_for_the_tiny_model(tiny, detectron2_pth):
    arch, state = tiny
    with pytest.raises(CheckpointError) as info:
        FocusPredictor.from_checkpoint(detectron2_pth, device="cpu")
    message = str(info.value)
    assert "architecture=" in message
    assert "width 64" in message
    predictor = FocusPredictor.from_checkpoint(detectron2_pth, architecture=arch, device="cpu")
    _assert_model_weights(predictor, _inference_keys(state))


@pytest.fixture(scope="module")
def meta_state_dicts() -> dict[str, dict[str, torch.Tensor]]:
    states = {}
    for size in ("large", "giant"):
        with torch.device("meta"):
            model = napari_focus.build_model(size)
        states[size] = model.state_dict()
    return states


@pytest.mark.parametrize("size", ["large", "giant"])
def test_infer_size_of_official_shapes(meta_state_dicts, size):
    state = meta_state_dicts[size]
    assert infer_size(state) == size
    # training-only keys alongside do not change the answer
    extra = {"sem_seg_head.predictor.clip_refiner.x": torch.empty(1, device="meta")}
    assert infer_size({**state, **extra}) == size


@pytest.mark.parametrize("size", ["large", "giant"])
def test_official_key_set_matches_the_reference_manifest(meta_state_dicts, focus_reference, size):
    """The loader's strict check is only right if the model's keys are the official ones."""
    manifest = json.loads((focus_reference / "state_dict_manifest.json").read_text())[size]
    assert set(manifest["training_only_prefixes"]) == set(TRAINING_ONLY_PREFIXES)
    expected = {
        k: tuple(v) for k, v in manifest["keys"].items() if not k.startswith(TRAINING_ONLY_PREFIXES)
    }
    state = meta_state_dicts[size]
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert sum(v.numel() for v in state.values()) == manifest["num_params_inference"]


def test_infer_size_refuses_non_focus_state():
    with pytest.raises(CheckpointError, match="not a FOCUS model"):
        infer_size({"something.weight": torch.zeros(1)})


# ----------------------------------------------------------------------------- .safetensors
@pytest.fixture(scope="module")
def fp32_state(tiny) -> dict[str, torch.Tensor]:
    """The tiny weights made genuinely float32.

    The reference weights were stored as float16, so rounding them to float16 again would
    change nothing; a relative perturbation of ~1e-3 gives them float32 precision, as the
    official (float32) checkpoints have, so that the float16 round trip really rounds.
    """
    _, state = tiny
    generator = torch.Generator().manual_seed(0)
    out = {}
    for key, value in _inference_keys(state).items():
        if value.is_floating_point():
            noise = torch.randn(value.shape, generator=generator) * 1e-3
            value = value * (1 + noise)
        out[key] = value
    return out


@pytest.fixture(scope="module")
def predictor32(tiny, fp32_state) -> FocusPredictor:
    arch, _ = tiny
    return FocusPredictor.from_state_dict(
        fp32_state, "sod", architecture=arch, device="cpu", source="tiny_mlp"
    )


@pytest.fixture(scope="module")
def fp16_checkpoint(predictor32, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fp16")
    return predictor32.save_inference_checkpoint(folder / "tiny_sod.safetensors")


def test_inference_checkpoint_float16_round_trip(predictor32, fp16_checkpoint, fp32_state):
    state = fp32_state
    assert sorted(os.listdir(fp16_checkpoint.parent)) == [fp16_checkpoint.name]
    with safe_open(str(fp16_checkpoint), framework="pt") as f:
        metadata = f.metadata()
        keys = set(f.keys())
        dtypes = {k: f.get_slice(k).get_dtype() for k in keys}
    assert metadata["format"] == METADATA_FORMAT
    assert metadata["task"] == "sod"
    assert metadata["dtype"] == "float16"
    assert json.loads(metadata["architecture"]) == predictor32.architecture.to_dict()
    assert not any(k.startswith(TRAINING_ONLY_PREFIXES) for k in keys)
    assert keys == set(state)
    assert {d for k, d in dtypes.items() if state[k].is_floating_point()} == {"F16"}
    assert {d for k, d in dtypes.items() if not state[k].is_floating_point()} <= {"I64"}

    loaded = FocusPredictor.from_checkpoint(fp16_checkpoint, device="cpu")  # nothing else needed
    assert loaded.task == "sod"
    assert loaded.architecture == predictor32.architecture
    expected = {k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}
    _assert_model_weights(loaded, expected)
    # the rounding is real: the float16 file does not hold the float32 values
    assert any(not torch.equal(expected[k], v) for k, v in state.items())


def test_inference_checkpoint_float32_round_trip_is_exact(predictor32, fp32_state, tmp_path):
    path = predictor32.save_inference_checkpoint(tmp_path / "f32.safetensors", dtype=torch.float32)
    loaded = FocusPredictor.from_checkpoint(path, device="cpu")
    assert loaded.task == "sod"
    _assert_model_weights(loaded, fp32_state)
    assert os.listdir(tmp_path) == ["f32.safetensors"]


def test_explicit_task_overrides_metadata(fp16_checkpoint):
    assert FocusPredictor.from_checkpoint(fp16_checkpoint, "cod", device="cpu").task == "cod"


def test_inference_checkpoint_needs_safetensors_suffix(predictor32, tmp_path):
    for name in ("weights.pth", "weights.pt", "weights", "weights.safetensor"):
        with pytest.raises(ValueError, match=r"\.safetensors"):
            predictor32.save_inference_checkpoint(tmp_path / name)
    assert os.listdir(tmp_path) == []


def test_inference_checkpoint_overflow_is_refused(tmp_path):
    with pytest.raises(ValueError, match="overflows"):
        save_inference_checkpoint(
            {"a": torch.tensor([1e6])}, tmp_path / "x.safetensors", architecture={}, task=None
        )
    assert os.listdir(tmp_path) == []


def test_inference_checkpoint_write_is_atomic(predictor32, tmp_path, monkeypatch):
    import safetensors.torch

    target = tmp_path / "model.safetensors"
    target.write_bytes(b"previous version")

    def broken_save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save_file)
    with pytest.raises(OSError, match="disk full"):
        predictor32.save_inference_checkpoint(target)
    assert target.read_bytes() == b"previous version"
    assert os.listdir(tmp_path) == ["model.safetensors"]

    monkeypatch.undo()
    predictor32.save_inference_checkpoint(target)
    assert os.listdir(tmp_path) == ["model.safetensors"]
    assert FocusPredictor.from_checkpoint(target, device="cpu").task == "sod"


def test_float16_checkpoint_predictions_match_float32(
    predictor32, fp16_checkpoint, focus_reference, record_property
):
    image = np.array(Image.open(focus_reference / "input.png").convert("RGB"))
    full = predictor32.predict(image)
    half = FocusPredictor.from_checkpoint(fp16_checkpoint, device="cpu").predict(image)
    assert full.mask.shape == half.mask.shape == image.shape[:2]
    agreement = float((full.mask == half.mask).mean())
    max_prob_diff = float(np.abs(full.probability - half.probability).max())
    record_property("fp16_mask_agreement", agreement)
    record_property("fp16_max_probability_diff", max_prob_diff)
    print(f"\nfp16 vs fp32: mask agreement {agreement:.6f}, max |dp| {max_prob_diff:.3e}")
    assert 0 < full.mask.mean() < 1, "degenerate mask: the comparison would prove nothing"
    assert max_prob_diff > 0, "float16 rounding changed nothing: the comparison proves nothing"
    assert agreement >= 0.999
    assert max_prob_diff < 0.05
