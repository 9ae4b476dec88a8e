"""Inputs for the deformable-attention op tests (shared by the CPU and CUDA tests)."""

from __future__ import annotations

from pathlib import Path

import torch
from hypothesis import strategies as st

ARG_NAMES = (
    "value",
    "spatial_shapes",
    "level_start_index",
    "sampling_locations",
    "attention_weights",
)


def golden(reference: Path) -> tuple[list[torch.Tensor], torch.Tensor]:
    from safetensors.torch import load_file

    tensors = load_file(reference / "postprocess_and_msda_golden.safetensors")
    return [tensors[f"msda.{name}"] for name in ARG_NAMES], tensors["msda.output"]


def random_inputs(
    seed: int,
    batch: int,
    queries: int,
    heads: int,
    head_dim: int,
    levels: list[tuple[int, int]],
    points: int,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    spread: float = 0.3,
) -> list[torch.Tensor]:
    """Random inputs; sampling locations cover ``[-spread, 1 + spread]``."""
    gen = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(levels, dtype=torch.int64)
    areas = shapes.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    n_levels = len(levels)
    value = torch.randn(
        batch, int(areas.sum()), heads, head_dim, generator=gen, dtype=torch.float64
    )
    locations = (
        torch.rand(batch, queries, heads, n_levels, points, 2, generator=gen, dtype=torch.float64)
        * (1 + 2 * spread)
        - spread
    )
    weights = torch.rand(
        batch, queries, heads, n_levels, points, generator=gen, dtype=torch.float64
    )
    weights = weights / weights.flatten(-2).sum(-1)[..., None, None]
    return [
        value.to(device, dtype),
        shapes.to(device),
        starts.to(device),
        locations.to(device, dtype),
        weights.to(device, dtype),
    ]


@st.composite
def shapes(draw: st.DrawFn) -> dict:
    """Random problem sizes: 1-4 levels of odd and even sizes, 1-16 heads, head dims 8-64."""
    n_levels = draw(st.integers(1, 4))
    return {
        "seed": draw(st.integers(0, 2**31 - 1)),
        "batch": draw(st.integers(1, 3)),
        "queries": draw(st.integers(1, 40)),
        "heads": draw(st.integers(1, 16)),
        "head_dim": draw(st.sampled_from([8, 13, 16, 24, 31, 32, 48, 64])),
        "levels": [(draw(st.integers(1, 13)), draw(st.integers(1, 13))) for _ in range(n_levels)],
        "points": draw(st.integers(1, 4)),
    }
