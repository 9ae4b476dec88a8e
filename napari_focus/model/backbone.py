"""FOCUS backbone: DINOv2 ViT with an edge-prior adapter, producing res2..res5."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .adapter import InteractionBlock
from .config import FocusArchitecture
from .deform_attn import level_geometry, reference_points
from .edge_prior import EdgePriorModule, inject_edges
from .folded import FoldedBackbone, TailInputs, current_fold
from .vit import Block, PatchEmbed


def _fold_applies(images: torch.Tensor) -> bool:
    """The folded copies serve float32 CPU inference only (no gradients, no autocast)."""
    return (
        images.is_cpu
        and images.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


class FocusBackbone(nn.Module):
    """Maps a normalised, padded ``(B, 3, H, W)`` image (H, W multiples of 32) to
    ``{"res2": stride 4, "res3": 8, "res4": 16, "res5": 32}``, each ``embed_dim`` wide."""

    def __init__(self, arch: FocusArchitecture) -> None:
        super().__init__()
        dim = arch.embed_dim
        self.patch_size = arch.patch_size
        self.pretrain_grid = arch.pretrain_size // arch.patch_size
        self.interaction_indexes = arch.interaction_indexes

        self.patch_embed = PatchEmbed(arch.patch_size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pretrain_grid**2 + 1, dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(
            Block(dim, arch.num_heads, arch.ffn_type, arch.mlp_ratio) for _ in range(arch.depth)
        )
        self.level_embed = nn.Parameter(torch.zeros(3, dim))
        self.edge = EdgePriorModule(dim)
        self.interactions = nn.ModuleList(
            InteractionBlock(
                dim,
                arch.deform_heads,
                arch.n_points,
                arch.deform_ratio,
                arch.cffn_ratio,
                extra_extractors=i == len(arch.interaction_indexes) - 1,
            )
            for i in range(len(arch.interaction_indexes))
        )
        self.up = nn.ConvTranspose2d(dim, dim, 2, 2)
        self.norm1 = nn.BatchNorm2d(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.norm3 = nn.BatchNorm2d(dim)
        self.norm4 = nn.BatchNorm2d(dim)
        # float32 CPU inference through folded copies (set by napari_focus.runtime);
        # `folded` caches them and is rebuilt when the weights change
        self.cpu_fast_path = False
        self.folded: FoldedBackbone | None = None

    def __getstate__(self) -> dict:
        # copies and pickles leave the folded copies behind; they are rebuilt when used
        return {**super().__getstate__(), "folded": None}

    def _position_embedding(self, h: int, w: int) -> torch.Tensor:
        """The pretraining grid of position embeddings resized bicubically to ``h x w``
        tokens, as two matrix products with PyTorch's own 1-D bicubic weights: the same
        values as a 2-D ``F.interpolate``, whose CUDA kernel takes ~7 ms here (H100)."""
        g = self.pretrain_grid
        grid = self.pos_embed[0, 1:].reshape(g, g, -1)
        with torch.autocast(grid.device.type, enabled=False):  # float32, like interpolate
            rows = _bicubic_weights(g, h, grid)  # (h, g)
            cols = _bicubic_weights(g, w, grid)  # (w, g)
            resized = torch.einsum("ik,kjc->ijc", rows, torch.einsum("jl,klc->kjc", cols, grid))
        return torch.cat((self.pos_embed[:, :1], resized.reshape(1, h * w, -1)), dim=1)

    def forward(
        self, images: torch.Tensor, edges: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``edges``: the edge-injected images ``(B, 3, H, W)`` float in [0, 1] (BGR),
        computed from ``images`` (through the host) when not given."""
        b, _, height, width = images.shape
        if height % 32 or width % 32:
            raise ValueError(
                f"backbone input must be padded to multiples of 32, got {height}x{width}"
            )
        device = images.device
        edge_sizes = [(height // s, width // s) for s in (8, 16, 32)]
        token_hw = (height // self.patch_size, width // self.patch_size)
        injector_geometry = {
            "ref": reference_points([token_hw], device),
            "levels": level_geometry(edge_sizes),
        }
        extractor_geometry = {
            "ref": reference_points(edge_sizes, device),
            "levels": level_geometry([token_hw]),
        }

        if edges is None:
            edges = inject_edges(images)
        folded = None
        if self.cpu_fast_path and _fold_applies(images):
            folded = current_fold(self, self.folded)  # None while BatchNorms train
            self.folded = folded or self.folded
        edge = self.edge if folded is None else folded.edge
        c1, c2, c3, c4 = edge(edges.to(images.dtype))
        c = torch.cat(
            [c2 + self.level_embed[0], c3 + self.level_embed[1], c4 + self.level_embed[2]], dim=1
        )

        x, th, tw = self.patch_embed(images)
        tokens = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        tokens = tokens + self._position_embedding(th, tw)
        cls, x = tokens[:, :1], tokens[:, 1:]

        vit_tokens = []
        for layer, (first, last) in zip(self.interactions, self.interaction_indexes, strict=True):
            blocks = list(self.blocks[first : last + 1])
            x, c, cls = layer(
                x, c, cls, blocks, injector_geometry, extractor_geometry, edge_sizes[1]
            )
            vit_tokens.append(x)

        edge_tokens = list(c.split([h * w for h, w in edge_sizes], dim=1))
        inputs = TailInputs(c1, edge_tokens, vit_tokens, (th, tw), edge_sizes)
        return self._tail(inputs) if folded is None else folded.tail(inputs)

    def _tail(self, inputs: TailInputs) -> dict[str, torch.Tensor]:
        """``res2..res5``: ViT maps resized onto the edge levels, added, normalised."""
        c1, edge_tokens, vit_tokens, token_hw, edge_sizes = inputs
        b = c1.shape[0]
        # contiguous at token resolution: the transposed view would make the
        # stride-4 interpolation, addition and BatchNorm run channels-last
        # against NCHW operands (3x slower on CPU)
        vit_maps = [x.transpose(1, 2).reshape(b, -1, *token_hw).contiguous() for x in vit_tokens]
        tokens2, tokens3, tokens4 = edge_tokens
        c2, c3, c4 = (
            part.transpose(1, 2).reshape(b, -1, h, w)
            for part, (h, w) in zip((tokens2, tokens3, tokens4), edge_sizes, strict=True)
        )
        c1 = self._upsample(tokens2, *edge_sizes[0]).add_(c1)
        outputs = {}
        for name, feature, vit_map, norm in zip(
            ("res2", "res3", "res4", "res5"),
            (c1, c2, c3, c4),
            vit_maps,
            (self.norm1, self.norm2, self.norm3, self.norm4),
            strict=True,
        ):
            resized = F.interpolate(
                vit_map, size=feature.shape[-2:], mode="bilinear", align_corners=False
            )
            outputs[name] = norm(resized.add_(feature))
        return outputs

    def _upsample(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``self.up`` (2x2 transposed convolution, stride 2) on ``(B, h*w, C)`` tokens.

        With kernel == stride every output pixel comes from one input pixel, so the
        layer is a single matrix product followed by a pixel shuffle; on CPU this is
        about twice as fast as the generic transposed convolution.
        """
        b = tokens.shape[0]
        weight = self.up.weight  # (C_in, C_out, 2, 2)
        c_out = weight.shape[1]
        out = torch.matmul(tokens, weight.flatten(1))  # (B, h*w, C_out*4)
        out = out.view(b, h, w, c_out, 2, 2).permute(0, 3, 1, 4, 2, 5)
        out = out.reshape(b, c_out, 2 * h, 2 * w)
        return out.add_(self.up.bias.view(1, -1, 1, 1))


def _bicubic_weights(size: int, out: int, like: torch.Tensor) -> torch.Tensor:
    """``(out, size)``: row ``i`` holds the weights of ``F.interpolate(mode="bicubic",
    align_corners=False)`` for output ``i`` (resizing the identity gives them exactly)."""
    eye = torch.eye(size, dtype=like.dtype, device=like.device).reshape(size, 1, size, 1)
    weights = F.interpolate(eye, size=(out, 1), mode="bicubic", align_corners=False)
    return weights.reshape(size, out).T
