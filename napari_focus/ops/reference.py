"""Pure-PyTorch multi-scale deformable attention (the `backend="torch"` path).

Runs on any device and dtype and supports autograd. Sampling is bilinear with
zero padding under the pixel-centre convention of
``grid_sample(align_corners=False)``: location (0, 0) is the top-left corner of
the first pixel and (1, 1) the bottom-right corner of the last one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ms_deform_attn_torch(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Reference implementation; see :func:`napari_focus.ops.ms_deform_attn` for shapes."""
    if value.dtype != sampling_locations.dtype:
        # grid_sample needs one dtype: sample half values at float32 locations in float32
        out = ms_deform_attn_torch(
            value.to(sampling_locations.dtype),
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights.to(sampling_locations.dtype),
        )
        return out.to(value.dtype)
    del level_start_index  # levels are contiguous in `value`; their sizes suffice
    batch, _, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    sizes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]

    # grid_sample wants coordinates in [-1, 1]; fold heads into the batch.
    grids = (2.0 * sampling_locations - 1.0).transpose(1, 2).flatten(0, 1)  # B*M, Q, L, P, 2
    per_level = value.split([h * w for h, w in sizes], dim=1)
    sampled = []
    for level, (h, w) in enumerate(sizes):
        # B, HW, M, D -> B*M, D, H, W
        v = per_level[level].permute(0, 2, 3, 1).reshape(batch * heads, head_dim, h, w)
        sampled.append(
            F.grid_sample(
                v, grids[:, :, level], mode="bilinear", padding_mode="zeros", align_corners=False
            )
        )  # B*M, D, Q, P
    stacked = torch.cat(sampled, dim=-1)  # B*M, D, Q, L*P
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    out = (stacked * weights).sum(-1)  # B*M, D, Q
    return out.view(batch, heads * head_dim, queries).transpose(1, 2).contiguous()
