"""The compiled kernels behind :func:`napari_focus.ops.ms_deform_attn`.

Backends:

* ``"cpu"`` / ``"cuda"``: the compiled kernel for that device, built on first
  use (see :mod:`napari_focus.ops.build`). A tensor on the other device is a
  ``ValueError``; a kernel that cannot be built is a ``RuntimeError``
  (:class:`~napari_focus.ops.build.KernelUnavailableError`) naming the reason
  and the build log.
* ``"auto"``: the compiled kernel of the tensor's device when it builds and
  passes its self-check against the reference, else the PyTorch reference,
  with one :class:`KernelFallbackWarning` per kernel and process saying why.
  Devices other than CPU and CUDA use the reference.

The kernels compute the forward pass only. When gradients are needed (grad mode
on and an input that requires grad) the compiled forward is kept and the
backward pass recomputes the PyTorch reference and differentiates it, so
gradients are always correct, just not accelerated.

dtypes: the CPU kernel runs float32 and float64 natively; float16 and bfloat16
are computed in float32 and rounded back. The CUDA kernel runs float32,
float64, float16 and bfloat16 (half types accumulate in float32).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from . import build
from .reference import ms_deform_attn_torch

__all__ = ["KernelFallbackWarning", "dispatch"]

_HALF = (torch.float16, torch.bfloat16)
_CUDA_DTYPES = (torch.float32, torch.float64, *_HALF)
_CPU_DTYPES = (torch.float32, torch.float64, *_HALF)


class KernelFallbackWarning(RuntimeWarning):
    """``backend="auto"`` could not build or use a compiled kernel (no compiler, a failed
    build, a failed self-check) and uses the PyTorch reference."""


class _CompiledMSDA(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        op: Any,
        value: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        sampling_locations: torch.Tensor,
        attention_weights: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
        return _run(
            op, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        value, shapes, starts, locations, weights = ctx.saved_tensors
        inputs = (value, locations, weights)
        needs = (ctx.needs_input_grad[1], ctx.needs_input_grad[4], ctx.needs_input_grad[5])
        with torch.enable_grad():
            leaves = [
                t.detach().requires_grad_(need) for t, need in zip(inputs, needs, strict=True)
            ]
            out = ms_deform_attn_torch(leaves[0], shapes, starts, leaves[1], leaves[2])
            wanted = [leaf for leaf in leaves if leaf.requires_grad]
            grads = iter(torch.autograd.grad(out, wanted, grad_output))
        value_grad, loc_grad, weight_grad = (
            next(grads) if leaf.requires_grad else None for leaf in leaves
        )
        return None, value_grad, None, None, loc_grad, weight_grad


def _run(
    op: Any,
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    if value.device.type == "cpu" and value.dtype in _HALF:
        out = op(
            value.float(), spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
        return out.to(value.dtype)
    return op(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _supported_dtype(kind: str, dtype: torch.dtype) -> bool:
    return dtype in (_CUDA_DTYPES if kind == "cuda" else _CPU_DTYPES)


def dispatch(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str,
) -> torch.Tensor:
    """Run ``backend`` (``"auto"``, ``"cpu"`` or ``"cuda"``); see the module docstring."""
    device = value.device.type
    args = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if backend == "auto":
        if device not in build.KINDS or not _supported_dtype(device, value.dtype):
            return ms_deform_attn_torch(*args)
        try:
            op = build.load(device)
        except build.KernelUnavailableError as exc:
            state = build.state(device)
            if not state.warned:
                state.warned = True
                warnings.warn(
                    f"napari-focus: {exc} Using the slower PyTorch implementation instead; "
                    "run `napari-focus doctor` for details.",
                    KernelFallbackWarning,
                    stacklevel=3,
                )
            return ms_deform_attn_torch(*args)
    else:
        if device != backend:
            raise ValueError(
                f"backend={backend!r} needs {backend.upper()} tensors, but value is on "
                f"{value.device}; use backend='auto' to follow the tensors' device"
            )
        if not _supported_dtype(backend, value.dtype):
            raise ValueError(f"backend={backend!r} does not support {value.dtype}")
        op = build.load(backend)
    if _needs_grad(value, sampling_locations, attention_weights):
        return _CompiledMSDA.apply(op, *args)
    return _run(op, *args)
