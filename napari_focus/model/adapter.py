"""ViT-adapter interaction blocks: injector (edges -> ViT) and extractor (ViT -> edges)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .deform_attn import MSDeformAttn
from .vit import LAYER_NORM_EPS, Block

# The edge tokens hold three levels (strides 8, 16, 32) in proportions 16:4:1.
LEVEL_SHARES = (16, 4, 1)


class DWConv(nn.Module):
    """Depth-wise 3x3 convolution applied separately to each of the three levels."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        unit = n // sum(LEVEL_SHARES)
        sizes = ((2 * h, 2 * w), (h, w), (h // 2, w // 2))
        chunks = x.split([share * unit for share in LEVEL_SHARES], dim=1)
        out = [
            self.dwconv(chunk.transpose(1, 2).reshape(b, c, hh, ww)).flatten(2).transpose(1, 2)
            for chunk, (hh, ww) in zip(chunks, sizes, strict=True)
        ]
        return torch.cat(out, dim=1)


class ConvFFN(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(F.gelu(self.dwconv(self.fc1(x), h, w)))


class Injector(nn.Module):
    """ViT tokens attend to the three edge levels; the result is added with a learned scale."""

    def __init__(self, dim: int, heads: int, points: int, ratio: float) -> None:
        super().__init__()
        self.query_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.feat_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = MSDeformAttn(dim, n_levels=3, n_heads=heads, n_points=points, ratio=ratio)
        self.gamma = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, geometry: dict) -> torch.Tensor:
        attn = self.attn(
            self.query_norm(x), geometry["ref"], self.feat_norm(c), *geometry["levels"]
        )
        return x + self.gamma * attn


class Extractor(nn.Module):
    """Edge tokens attend to the ViT tokens (one level), then a ConvFFN."""

    def __init__(self, dim: int, heads: int, points: int, ratio: float, cffn_ratio: float) -> None:
        super().__init__()
        self.query_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.feat_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = MSDeformAttn(dim, n_levels=1, n_heads=heads, n_points=points, ratio=ratio)
        self.ffn = ConvFFN(dim, int(dim * cffn_ratio))
        self.ffn_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(
        self, c: torch.Tensor, x: torch.Tensor, geometry: dict, h: int, w: int
    ) -> torch.Tensor:
        c = c + self.attn(
            self.query_norm(c), geometry["ref"], self.feat_norm(x), *geometry["levels"]
        )
        return c + self.ffn(self.ffn_norm(c), h, w)


class InteractionBlock(nn.Module):
    """Injector, a range of ViT blocks over ``[cls, tokens]``, extractor(s)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        points: int,
        ratio: float,
        cffn_ratio: float,
        extra_extractors: bool,
    ) -> None:
        super().__init__()
        self.injector = Injector(dim, heads, points, ratio)
        self.extractor = Extractor(dim, heads, points, ratio, cffn_ratio)
        self.extra_extractors = (
            nn.Sequential(*(Extractor(dim, heads, points, ratio, cffn_ratio) for _ in range(2)))
            if extra_extractors
            else None
        )
        self.checkpoint_blocks = False

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        cls: torch.Tensor,
        blocks: list[Block],
        injector_geometry: dict,
        extractor_geometry: dict,
        level_hw: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.injector(x, c, injector_geometry)
        x = torch.cat((cls, x), dim=1)
        for block in blocks:
            if self.checkpoint_blocks and torch.is_grad_enabled():  # training: recompute
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        cls, x = x[:, :1], x[:, 1:]
        extractors = [self.extractor, *(self.extra_extractors or ())]
        for extractor in extractors:
            c = extractor(c, x, extractor_geometry, *level_hw)
        return x, c, cls
