"""Point sampling of mask logits (PointRend's importance sampling, as Mask2Former uses it).

Coordinates are ``(x, y)`` in [0, 1] over the whole map, so a stride-4 prediction and a
full-resolution target are read at the same places without resizing either.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``maps`` ``(N, C, H, W)`` at ``coords`` ``(N, P, 2)``:
    ``(N, C, P)`` (``grid_sample`` with ``align_corners=False``, zeros outside)."""
    grid = (2.0 * coords - 1.0).unsqueeze(2)
    return F.grid_sample(maps, grid, align_corners=False).squeeze(3)


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Higher for logits nearer 0 (the decision boundary): ``-|logit|``."""
    return -logits.abs()


def uncertain_points(
    logits: torch.Tensor,
    num_points: int,
    oversample_ratio: float = 3.0,
    importance_ratio: float = 0.75,
) -> torch.Tensor:
    """Coordinates ``(N, num_points, 2)`` for the masks ``logits`` ``(N, 1, H, W)``.

    ``num_points * oversample_ratio`` uniform candidates are drawn per mask; the
    ``importance_ratio * num_points`` most uncertain of them (uncertainty of the
    *interpolated* logit at the candidate) are kept, and the rest of the points are
    fresh uniform draws.
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_ratio <= 1:
        raise ValueError(f"importance_ratio must be in [0, 1], got {importance_ratio}")
    n = logits.shape[0]
    candidates = torch.rand(n, int(num_points * oversample_ratio), 2, device=logits.device)
    scores = uncertainty(point_sample(logits, candidates))[:, 0]  # (N, candidates)
    keep = int(importance_ratio * num_points)
    index = scores.topk(keep, dim=1).indices
    chosen = torch.gather(candidates, 1, index[..., None].expand(-1, -1, 2))
    fresh = torch.rand(n, num_points - keep, 2, device=logits.device)
    return torch.cat((chosen, fresh), dim=1)
