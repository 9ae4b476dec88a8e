"""A synthetic foreground set: bright random shapes on textured noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def shape_sample(rng: np.random.Generator, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """``(size, size, 3)`` uint8 image and its bool mask: one bright ellipse or rectangle
    on smooth dark noise."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    ry, rx = rng.uniform(0.12, 0.3, 2) * size
    if rng.integers(2):
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    else:
        mask = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
    coarse = rng.uniform(20, 110, (size // 8 + 1, size // 8 + 1, 3))
    texture = np.kron(coarse, np.ones((8, 8, 1)))[:size, :size]
    image = texture + rng.normal(0, 12, (size, size, 3))
    image[mask] = rng.uniform(190, 235) + rng.normal(0, 10, (int(mask.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def export_shapes(root: Path, layout: str, count: int, seed: int = 0, size: int = 96) -> list[str]:
    """Export ``count`` samples into ``layout`` under ``root``; returns their names."""
    from napari_focus.datasets import export_sample

    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        image, mask = shape_sample(rng, size)
        result = export_sample(root, layout, f"shape-{i:03d}", image, mask)
        names.append(result.name)
    return names
