"""Mask2Former-style pixel decoder: deformable encoder over res3..res5, FPN for res2."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .deform_attn import MSDeformAttn, level_geometry, reference_points
from .position_encoding import sine_position_embedding

GROUPS = 32


class ConvNorm(nn.Conv2d):
    """Bias-free convolution followed by GroupNorm and an optional ReLU (stored as `.norm`)."""

    def __init__(self, cin: int, cout: int, kernel: int, relu: bool = False) -> None:
        super().__init__(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.norm = nn.GroupNorm(GROUPS, cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(super().forward(x))
        return F.relu(x) if self.relu else x


class EncoderLayer(nn.Module):
    """Post-norm deformable self-attention + ReLU feed-forward."""

    def __init__(self, dim: int, ffn: int, levels: int, heads: int, points: int) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(dim, levels, heads, points)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        ref: torch.Tensor,
        shapes: torch.Tensor,
        starts: torch.Tensor,
    ) -> torch.Tensor:
        src = self.norm1(src + self.self_attn(src + pos, ref, src, shapes, starts))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class _Encoder(nn.Module):
    def __init__(self, layers: list[EncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


class DeformableEncoder(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int, layers: int, levels: int, points: int):
        super().__init__()
        self.encoder = _Encoder(
            [EncoderLayer(dim, ffn, levels, heads, points) for _ in range(layers)]
        )
        self.level_embed = nn.Parameter(torch.zeros(levels, dim))

    def forward(self, srcs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sizes = [tuple(s.shape[-2:]) for s in srcs]
        device = srcs[0].device
        pos = torch.cat(
            [
                sine_position_embedding(h, w, srcs[0].shape[1] // 2, device)
                .flatten(2)
                .transpose(1, 2)
                + self.level_embed[lvl].view(1, 1, -1)
                for lvl, (h, w) in enumerate(sizes)
            ],
            dim=1,
        )
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], dim=1)
        shapes, starts = level_geometry(sizes)
        ref = reference_points(sizes, device)
        for layer in self.encoder.layers:
            src = layer(src, pos, ref, shapes, starts)
        return src, shapes, starts


class PixelDecoder(nn.Module):
    """Returns ``mask_features`` (stride 4, ``mask_dim``) and three multi-scale maps,
    coarsest first (strides 32, 16, 8), each ``conv_dim`` wide."""

    def __init__(
        self,
        in_channels: int,
        conv_dim: int,
        mask_dim: int,
        heads: int,
        ffn: int,
        layers: int,
        points: int,
    ) -> None:
        super().__init__()
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, conv_dim, 1), nn.GroupNorm(GROUPS, conv_dim))
            for _ in range(3)
        )
        self.transformer = DeformableEncoder(conv_dim, heads, ffn, layers, 3, points)
        self.adapter_1 = ConvNorm(in_channels, conv_dim, 1)
        self.layer_1 = ConvNorm(conv_dim, conv_dim, 3, relu=True)
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # The deformable encoder runs in float32 whatever the autocast state.
        with torch.autocast(features["res2"].device.type, enabled=False):
            inputs = [features[name].float() for name in ("res5", "res4", "res3")]
            srcs = [proj(x) for proj, x in zip(self.input_proj, inputs, strict=True)]
            memory, _, _ = self.transformer(srcs)
            b = memory.shape[0]
            sizes = [tuple(src.shape[-2:]) for src in srcs]  # host ints: no device sync
            maps = [
                part.transpose(1, 2).reshape(b, -1, h, w)
                for part, (h, w) in zip(
                    memory.split([h * w for h, w in sizes], dim=1), sizes, strict=True
                )
            ]
            lateral = self.adapter_1(features["res2"].float())
            fine = lateral + F.interpolate(
                maps[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False
            )
            fine = self.layer_1(fine)
            return self.mask_features(fine), maps
