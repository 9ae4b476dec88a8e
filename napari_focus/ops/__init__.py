"""Multi-scale deformable attention: one dispatch function for every caller.

The model calls only :func:`ms_deform_attn`. ``backend="torch"`` is the pure
PyTorch reference; the compiled CPU and CUDA kernels (sources in the
repository's ``ops/`` folder) plug in behind ``"cpu"``, ``"cuda"`` and
``"auto"``.
"""

from __future__ import annotations

import contextlib

import torch

from .reference import ms_deform_attn_torch

__all__ = ["BACKENDS", "ms_deform_attn", "ms_deform_attn_torch", "preload_kernel"]

BACKENDS = ("auto", "torch", "cpu", "cuda")


def _check_inputs(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> None:
    if value.dim() != 4:
        raise ValueError(
            f"value must be (batch, tokens, heads, head_dim), got {tuple(value.shape)}"
        )
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            "sampling_locations must be (batch, queries, heads, levels, points, 2), "
            f"got {tuple(sampling_locations.shape)}"
        )
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ValueError(
            f"attention_weights {tuple(attention_weights.shape)} must match sampling_locations "
            f"{tuple(sampling_locations.shape[:-1])}"
        )
    levels = sampling_locations.shape[3]
    if spatial_shapes.shape != (levels, 2) or level_start_index.shape != (levels,):
        raise ValueError(
            f"spatial_shapes must be ({levels}, 2) and level_start_index ({levels},), got "
            f"{tuple(spatial_shapes.shape)} and {tuple(level_start_index.shape)}"
        )


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str = "auto",
) -> torch.Tensor:
    """Multi-scale deformable attention core.

    Args:
        value: ``(B, S, M, D)`` values of all levels, flattened row-major and
            concatenated, ``S = sum(H_l * W_l)``; M heads of width D.
        spatial_shapes: ``(L, 2)`` int64 ``(H_l, W_l)`` per level.
        level_start_index: ``(L,)`` int64 offset of each level in ``S``.
        sampling_locations: ``(B, Q, M, L, P, 2)`` normalised ``(x, y)``;
            points outside ``[0, 1]`` read zeros.
        attention_weights: ``(B, Q, M, L, P)``, already normalised.
        backend: ``"auto"``, ``"torch"``, ``"cpu"`` or ``"cuda"``.

    Returns:
        ``(B, Q, M * D)`` in the dtype of ``value``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    _check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if backend == "torch":
        return ms_deform_attn_torch(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    from . import compiled

    return compiled.dispatch(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, backend
    )


def preload_kernel(device: torch.device) -> None:
    """Build or load the compiled kernel of ``device`` now rather than at its first call
    (where ``backend="auto"`` would fall back, it says so at that call instead)."""
    from . import build

    if device.type in build.KINDS:
        with contextlib.suppress(build.KernelUnavailableError):
            build.load(device.type)
