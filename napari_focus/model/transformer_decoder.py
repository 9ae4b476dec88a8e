"""Masked-attention transformer decoder (Mask2Former style) with FOCUS's 2 queries."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .position_encoding import sine_position_embedding

NUM_LEVELS = 3


class CrossAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        mask: torch.Tensor,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
    ) -> torch.Tensor:
        out = self.multihead_attn(
            tgt + query_pos, memory + pos, memory, attn_mask=mask, need_weights=False
        )[0]
        return self.norm(tgt + out)


class SelfAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        q = tgt + query_pos
        return self.norm(tgt + self.self_attn(q, q, tgt, need_weights=False)[0])


class FFNLayer(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int, layers: int) -> None:
        super().__init__()
        widths = [dim] + [hidden] * (layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths, [*widths[1:], out], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class TransformerDecoder(nn.Module):
    """Queries refined over the three pixel-decoder levels, with masks that
    restrict each query's cross-attention to its current foreground."""

    def __init__(
        self,
        in_channels: int,
        hidden_dim: int,
        num_queries: int,
        num_classes: int,
        heads: int,
        dim_feedforward: int,
        layers: int,
        mask_dim: int,
    ) -> None:
        super().__init__()
        self.num_heads = heads
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, heads) for _ in range(layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, heads) for _ in range(layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward) for _ in range(layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(NUM_LEVELS, hidden_dim)
        self.input_proj = nn.ModuleList(
            nn.Conv2d(in_channels, hidden_dim, 1) if in_channels != hidden_dim else nn.Sequential()
            for _ in range(NUM_LEVELS)
        )
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        # Box head of the training objective; kept so official checkpoints load strictly.
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)

    def _heads(
        self, output: torch.Tensor, mask_features: torch.Tensor, target_hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        decoded = self.decoder_norm(output).transpose(0, 1)  # B, Q, C
        logits = self.class_embed(decoded)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoded), mask_features)
        small = F.interpolate(masks, size=target_hw, mode="bilinear", align_corners=False)
        # True = may not attend; one copy per head, as nn.MultiheadAttention expects.
        blocked = (small.sigmoid().flatten(2) < 0.5).repeat_interleave(self.num_heads, dim=0)
        return logits, masks, blocked

    def forward(
        self, multi_scale: list[torch.Tensor], mask_features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns class logits ``(B, Q, classes + 1)`` and mask logits ``(B, Q, H/4, W/4)``."""
        return self.predictions(multi_scale, mask_features)[-1]

    def predictions(
        self,
        multi_scale: list[torch.Tensor],
        mask_features: torch.Tensor,
        *,
        mask_first_layer: bool = True,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(class logits, mask logits)`` from the initial queries and after each layer,
        the final prediction last (training supervises all of them).

        ``mask_first_layer=False`` lets the first layer attend everywhere, as official
        training does (see :mod:`napari_focus.training.forward`).
        """
        srcs, poss, sizes = [], [], []
        for i, x in enumerate(multi_scale):
            h, w = x.shape[-2:]
            sizes.append((h, w))
            pos = sine_position_embedding(h, w, x.shape[1] // 2, x.device).to(x.dtype)
            poss.append(pos.flatten(2).permute(2, 0, 1))
            src = self.input_proj[i](x).flatten(2) + self.level_embed.weight[i][None, :, None]
            srcs.append(src.permute(2, 0, 1))  # HW, B, C
        b = srcs[0].shape[1]
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, b, 1)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, b, 1)

        logits, masks, blocked = self._heads(output, mask_features, sizes[0])
        if not mask_first_layer:
            blocked = torch.zeros_like(blocked)
        predictions = [(logits, masks)]
        for i in range(len(self.transformer_cross_attention_layers)):
            level = i % NUM_LEVELS
            # a query whose mask is empty everywhere may look at the whole level
            blocked = blocked & ~blocked.all(-1, keepdim=True)
            output = self.transformer_cross_attention_layers[i](
                output, srcs[level], blocked, poss[level], query_pos
            )
            output = self.transformer_self_attention_layers[i](output, query_pos)
            output = self.transformer_ffn_layers[i](output)
            logits, masks, blocked = self._heads(output, mask_features, sizes[(i + 1) % NUM_LEVELS])
            predictions.append((logits, masks))
        return predictions
