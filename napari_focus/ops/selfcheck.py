"""A compiled kernel must compute, not only build: one small run against the PyTorch reference.

The case covers what the model exercises: three levels of different shapes,
points inside, on the border and outside the maps, the head width the model
uses (32, a specialised code path) and an odd one (8, the generic path), batch
2, and for CUDA also float16. A wrong result or an error at launch disables
the kernel (see :mod:`napari_focus.ops.build`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .reference import ms_deform_attn_torch

_LEVELS = ((6, 9), (3, 5), (2, 2))
# (head width, dtype, absolute tolerance) per kernel kind
_CASES = {
    "cpu": ((32, torch.float32, 1e-4), (8, torch.float32, 1e-4)),
    "cuda": ((32, torch.float32, 1e-4), (8, torch.float32, 1e-4), (32, torch.float16, 2e-2)),
}


def _inputs(head_dim: int, device: str) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1234)
    shapes = torch.tensor(_LEVELS, dtype=torch.int64)
    areas = shapes.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    batch, queries, heads, points = 2, 7, 2, 4
    value = torch.randn(batch, int(areas.sum()), heads, head_dim, generator=gen)
    locations = torch.rand(batch, queries, heads, len(_LEVELS), points, 2, generator=gen) * 1.4
    locations = locations - 0.2
    locations[0, 0, 0, :, 0] = torch.tensor([0.0, 1.0])  # exactly on the border
    weights = torch.rand(batch, queries, heads, len(_LEVELS), points, generator=gen)
    weights = weights / weights.flatten(-2).sum(-1)[..., None, None]
    return [t.to(device) for t in (value, shapes, starts, locations, weights)]


def run(op: Callable[..., torch.Tensor], kind: str) -> str | None:
    """``None`` when ``op`` agrees with the reference, else what went wrong."""
    device = "cuda" if kind == "cuda" else "cpu"
    for head_dim, dtype, atol in _CASES[kind]:
        value, shapes, starts, locations, weights = _inputs(head_dim, device)
        value = value.to(dtype)
        if device == "cpu" and dtype != torch.float32:
            continue
        try:
            with torch.no_grad():
                got = op(value, shapes, starts, locations, weights)
            if device == "cuda":
                torch.cuda.synchronize()
        except Exception as exc:  # a launch error or a refused input: the kernel is unusable
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            return f"it raised {type(exc).__name__} on a test case ({first})"
        expected = ms_deform_attn_torch(
            value.float(), shapes, starts, locations.float(), weights.float()
        )
        if got.shape != expected.shape:
            return f"it returned shape {tuple(got.shape)} instead of {tuple(expected.shape)}"
        diff = (got.float() - expected).abs().max().item()
        if not diff <= atol:  # also catches NaN
            return (
                f"on a test case ({dtype}, head width {head_dim}) it differs from the PyTorch "
                f"reference by up to {diff:.3g} (allowed {atol:g})"
            )
    return None
