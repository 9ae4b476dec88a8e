"""Stage-by-stage agreement with the official FOCUS model on the shared tiny cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from napari_focus import FocusPredictor
from napari_focus.model.edge_prior import edge_injected_u8
from napari_focus.model.postprocess import final_mask, semantic_probabilities
from napari_focus.ops.build import unavailable_reason
from napari_focus.presets import input_preset
from napari_focus.transforms import normalize_and_pad, resize_rgb, resized_shape

ATOL = 1e-3
BACKENDS = ["torch", "cpu"]


def _input(reference) -> np.ndarray:
    return np.array(Image.open(reference / "input.png").convert("RGB"))


def _padded_input(reference) -> torch.Tensor:
    rgb = _input(reference)
    resized = resize_rgb(rgb, resized_shape(*rgb.shape[:2], 512, 2048))
    return normalize_and_pad(resized, input_preset())


@pytest.fixture(scope="module", params=["tiny_mlp", "tiny_swiglu"])
def case(request, focus_reference):
    arch, state = request.getfixturevalue(request.param)
    predictor = FocusPredictor.from_state_dict(state, "sod", architecture=arch, device="cpu")
    golden = load_file(focus_reference / f"{request.param}_golden.safetensors")
    return request.param, predictor, golden


def test_resize_matches_official(focus_reference):
    rgb = _input(focus_reference)
    expected = np.array(Image.open(focus_reference / "resized.png").convert("RGB"))
    got = resize_rgb(rgb, resized_shape(*rgb.shape[:2], 512, 2048))
    assert got.shape == expected.shape == (512, 740, 3)
    np.testing.assert_array_equal(got, expected)


def test_edge_injection_is_exact(focus_reference):
    golden = load_file(focus_reference / "tiny_mlp_golden.safetensors")["edge_injected_u8"]
    x = _padded_input(focus_reference)
    assert tuple(x.shape) == (1, 3, 512, 768)
    got = torch.from_numpy(edge_injected_u8(x[0])).permute(2, 0, 1)[None]
    assert torch.equal(got, golden)


@pytest.mark.parametrize("folded", [True, False], ids=["folded", "plain"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_stage_matches(case, backend, folded, focus_reference):
    """Both backbone paths: the CPU float32 one with BatchNorms folded (what the predictor
    runs) and the plain modules (training, other devices)."""
    if backend != "torch" and (reason := unavailable_reason(backend)) is not None:
        pytest.skip(f"the compiled {backend} kernel cannot be built here: {reason}")
    name, predictor, golden = case
    model = predictor.model
    model.set_deform_attn_backend(backend)
    assert model.backbone.cpu_fast_path and model.backbone.folded is not None
    model.backbone.cpu_fast_path = folded
    try:
        stages = model_stages(model, _padded_input(focus_reference))
    finally:
        model.set_deform_attn_backend("auto")
        model.backbone.cpu_fast_path = True
    assert_stages_match(stages, golden, f"{name}/{backend}")


def model_stages(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every stage output the official golden files hold, by their names."""
    with torch.inference_mode():
        features = model.backbone(x)
        mask_features, multi_scale = model.sem_seg_head.pixel_decoder(features)
        logits, masks = model.sem_seg_head.predictor(multi_scale, mask_features)
    stages = {f"backbone.{k}": v for k, v in features.items()}
    stages["pixel_decoder.mask_features"] = mask_features
    stages.update({f"pixel_decoder.multi_scale.{i}": m for i, m in enumerate(multi_scale)})
    stages["predictor.pred_logits"] = logits
    stages["predictor.pred_masks"] = masks
    return stages


def assert_stages_match(stages: dict[str, torch.Tensor], golden: dict, label: str) -> None:
    compared = [key for key in stages if key in golden]
    assert "predictor.pred_masks" in compared and "backbone.res5" in compared
    for key in compared:
        diff = (stages[key].float().cpu() - golden[key]).abs().max().item()
        assert diff < ATOL, f"{label}: {key} differs by {diff}"


def test_predict_matches_sem_seg_and_final_mask(case, focus_reference):
    name, predictor, golden = case
    result = predictor.predict(_input(focus_reference))
    expected_prob = golden["sem_seg"][0].numpy()
    assert result.probability.shape == expected_prob.shape == (180, 260)
    assert result.probability.dtype == np.float32
    assert np.abs(result.probability - expected_prob).max() < ATOL
    agreement = (result.mask == golden["final_mask"].numpy()).mean()
    assert agreement >= 0.999, f"{name}: final mask agreement {agreement:.5f}"


POSTPROCESS_CASES = [
    "fallback_bg",
    "fallback_fg",
    "merge_bg_first",
    "merge_fg_first",
    "random",
    "same_class",
]


@pytest.mark.parametrize("name", POSTPROCESS_CASES)
def test_postprocess_cases(name, focus_reference):
    golden = load_file(focus_reference / "postprocess_and_msda_golden.safetensors")
    cls, pred = golden[f"{name}.mask_cls"], golden[f"{name}.mask_pred"]
    torch.testing.assert_close(
        semantic_probabilities(cls, pred), golden[f"{name}.sem_seg"], atol=1e-6, rtol=0
    )
    assert torch.equal(final_mask(cls, pred), golden[f"{name}.final_mask"])


def test_msda_reference_core(focus_reference):
    from napari_focus.ops import ms_deform_attn

    golden = load_file(focus_reference / "postprocess_and_msda_golden.safetensors")
    args = [
        golden[f"msda.{k}"]
        for k in (
            "value",
            "spatial_shapes",
            "level_start_index",
            "sampling_locations",
            "attention_weights",
        )
    ]
    out = ms_deform_attn(*args, backend="torch")
    assert (out - golden["msda.output"]).abs().max().item() < 1e-5


def test_the_model_traces_under_torch_compile(tiny_mlp, focus_reference):
    """`predict --compile` gives the official outputs (Dynamo with its eager backend:
    the tracing is what can fail; inductor's code generation is PyTorch's)."""
    arch, state = tiny_mlp
    predictor = FocusPredictor.from_state_dict(state, "sod", architecture=arch, device="cpu")
    predictor.compile(backend="eager")
    result = predictor.predict(_input(focus_reference))
    golden = load_file(focus_reference / "tiny_mlp_golden.safetensors")
    assert np.abs(result.probability - golden["sem_seg"][0].numpy()).max() < ATOL
    assert (result.mask == golden["final_mask"].numpy()).mean() >= 0.999
