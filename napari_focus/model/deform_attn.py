"""Multi-scale deformable attention module (projections around the op)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import ms_deform_attn


def level_geometry(sizes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``spatial_shapes (L, 2)`` and ``level_start_index (L,)`` of flattened levels, as
    host tensors on every device: the compiled CUDA kernel checks them on the host and
    uploads them itself without waiting for the GPU, and the PyTorch backend reads
    them as numbers (either would synchronise with the GPU on device copies)."""
    shapes = torch.tensor(sizes, dtype=torch.long)
    starts = torch.cat((shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]))
    return shapes, starts


def _upload(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A few numbers onto ``device`` without waiting for the work queued on a GPU: from
    pinned memory, non-blocking (a plain copy would synchronise with the GPU)."""
    if host.device == device:
        return host
    if device.type == "cuda" and host.device.type == "cpu" and not torch.compiler.is_compiling():
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def reference_points(sizes: list[tuple[int, int]], device: torch.device) -> torch.Tensor:
    """Pixel-centre reference points ``(1, sum(h*w), 1, 2)`` as normalised ``(x, y)``."""
    points = []
    for h, w in sizes:
        ys = torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device) / h
        xs = torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), -1))
    return torch.cat(points, 0)[None, :, None]


class MSDeformAttn(nn.Module):
    """Deformable attention of queries over multi-level flattened features.

    ``ratio`` shrinks the value width (the ViT adapter uses 0.5).
    """

    def __init__(
        self, d_model: int, n_levels: int, n_heads: int, n_points: int, ratio: float = 1.0
    ) -> None:
        super().__init__()
        self.n_levels, self.n_heads, self.n_points = n_levels, n_heads, n_points
        self.value_dim = int(d_model * ratio)
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, self.value_dim)
        self.output_proj = nn.Linear(self.value_dim, d_model)
        self.backend = "auto"

    def forward(
        self,
        query: torch.Tensor,
        ref_points: torch.Tensor,
        features: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
    ) -> torch.Tensor:
        """query ``(B, Q, C)``, ref_points ``(B or 1, Q, 1 or L, 2)``, features ``(B, S, C)``."""
        b, q, _ = query.shape
        s = features.shape[1]
        value = self.value_proj(features).view(b, s, self.n_heads, -1)
        # Sampling offsets and weights stay float32 under autocast: offsets of a few
        # pixels on a large map lose too much precision in half types. The value
        # keeps its dtype (the CUDA kernel reads half values, accumulating in float32).
        with torch.autocast(query.device.type, enabled=False):
            query = query.float()
            offsets = self.sampling_offsets(query).view(
                b, q, self.n_heads, self.n_levels, self.n_points, 2
            )
            weights = F.softmax(
                self.attention_weights(query).view(b, q, self.n_heads, -1), -1
            ).view(b, q, self.n_heads, self.n_levels, self.n_points)
            normalizer = _upload(spatial_shapes.flip(-1).float(), offsets.device)  # (W, H)
            locations = (
                ref_points[:, :, None, :, None, :].float()
                + offsets / normalizer[None, None, None, :, None]
            )
        out = ms_deform_attn(
            value, spatial_shapes, level_start_index, locations, weights, backend=self.backend
        )
        return self.output_proj(out)
