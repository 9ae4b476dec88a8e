"""The official tiny cases on a CUDA GPU: every stage and the final mask, float32, with
the compiled CUDA deformable-attention kernel and with the PyTorch backend (same bars
as on the CPU), and the half precisions against the official float32 outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_golden import ATOL, _input, _padded_input, assert_stages_match, model_stages

from napari_focus import FocusPredictor
from napari_focus.ops.build import unavailable_reason
from napari_focus.runtime import autocast

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
BACKENDS = ["torch", "cuda"]


@pytest.fixture(scope="module", params=["tiny_mlp", "tiny_swiglu"])
def cuda_case(request, focus_reference):
    arch, state = request.getfixturevalue(request.param)
    golden = load_file(focus_reference / f"{request.param}_golden.safetensors")
    return request.param, arch, state, golden


def _predictor(arch, state, precision: str = "float32") -> FocusPredictor:
    weights = {k: v.clone() for k, v in state.items()}
    return FocusPredictor.from_state_dict(
        weights, "sod", architecture=arch, device="cuda", precision=precision
    )


def _use_backend(predictor: FocusPredictor, backend: str) -> None:
    if backend == "cuda" and (reason := unavailable_reason("cuda")) is not None:
        pytest.fail(f"the CUDA kernel must build on a GPU machine: {reason}")
    predictor.model.set_deform_attn_backend(backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_stage_matches_on_cuda(cuda_case, backend, focus_reference):
    name, arch, state, golden = cuda_case
    predictor = _predictor(arch, state)
    _use_backend(predictor, backend)
    x = _padded_input(focus_reference).cuda()
    with autocast(predictor.device, "float32"):  # IEEE float32, as predict runs it
        stages = model_stages(predictor.model, x)
    assert_stages_match(stages, golden, f"{name}/{backend} on CUDA")


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_matches_on_cuda(cuda_case, backend, focus_reference):
    name, arch, state, golden = cuda_case
    predictor = _predictor(arch, state)
    _use_backend(predictor, backend)
    result = predictor.predict(_input(focus_reference))
    expected = golden["sem_seg"][0].numpy()
    assert result.probability.shape == expected.shape
    assert np.abs(result.probability - expected).max() < ATOL
    agreement = (result.mask == golden["final_mask"].numpy()).mean()
    assert agreement >= 0.999, f"{name}/{backend}: final mask agreement {agreement:.5f}"


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_half_precision_stays_close_on_cuda(cuda_case, precision, focus_reference):
    """Half precision is an approximation: the bars are the float16/bfloat16 rounding
    of a ~1e-2 relative error, far from a broken cast or a wrong region."""
    name, arch, state, golden = cuda_case
    result = _predictor(arch, state, precision).predict(_input(focus_reference))
    diff = np.abs(result.probability - golden["sem_seg"][0].numpy()).max()
    agreement = (result.mask == golden["final_mask"].numpy()).mean()
    assert diff < 0.05, f"{name}/{precision}: probability differs by {diff}"
    assert agreement >= 0.99, f"{name}/{precision}: final mask agreement {agreement:.5f}"


def test_cuda_batch_equals_one_at_a_time(cuda_case, focus_reference):
    """Batched forwards on the GPU give each image the result it gets alone."""
    _, arch, state, _ = cuda_case
    predictor = _predictor(arch, state)
    rgb = _input(focus_reference)
    flipped = np.ascontiguousarray(rgb[:, ::-1])
    batch = predictor.predict_batch([rgb, flipped, rgb], batch_size=3)
    for image, got in zip([rgb, flipped, rgb], batch, strict=True):
        alone = predictor.predict(image)
        assert np.abs(got.probability - alone.probability).max() < 1e-4
        assert (got.mask == alone.mask).mean() >= 0.9999
