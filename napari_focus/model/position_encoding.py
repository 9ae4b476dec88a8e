"""Normalised sine position embedding of a feature map (DETR / Mask2Former style)."""

from __future__ import annotations

import math

import torch


def sine_position_embedding(
    height: int,
    width: int,
    num_feats: int,
    device: torch.device,
    temperature: float = 10000.0,
    scale: float = 2 * math.pi,
) -> torch.Tensor:
    """``(1, 2 * num_feats, H, W)`` embedding: y features first, then x.

    Coordinates are the 1-based row/column index divided by the map size, times
    ``scale``; channel pairs hold sin/cos at geometric frequencies.
    """
    eps = 1e-6
    ones = torch.ones(1, height, width, dtype=torch.bool, device=device)
    y = ones.cumsum(1, dtype=torch.float32)
    x = ones.cumsum(2, dtype=torch.float32)
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
    steps = torch.arange(num_feats, dtype=torch.float32, device=device)
    freqs = temperature ** (2 * (steps // 2) / num_feats)

    def encode(coord: torch.Tensor) -> torch.Tensor:
        phase = coord[..., None] / freqs
        return torch.stack((phase[..., 0::2].sin(), phase[..., 1::2].cos()), dim=4).flatten(3)

    return torch.cat((encode(y), encode(x)), dim=3).permute(0, 3, 1, 2)
