"""The composed FOCUS inference model and its builder."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .backbone import FocusBackbone
from .config import FocusArchitecture, resolve_architecture
from .deform_attn import MSDeformAttn
from .pixel_decoder import PixelDecoder
from .transformer_decoder import TransformerDecoder


class FocusHead(nn.Module):
    def __init__(self, arch: FocusArchitecture) -> None:
        super().__init__()
        self.pixel_decoder = PixelDecoder(
            in_channels=arch.embed_dim,
            conv_dim=arch.conv_dim,
            mask_dim=arch.mask_dim,
            heads=arch.nheads,
            ffn=arch.enc_dim_feedforward,
            layers=arch.enc_layers,
            points=arch.enc_n_points,
        )
        self.predictor = TransformerDecoder(
            in_channels=arch.conv_dim,
            hidden_dim=arch.hidden_dim,
            num_queries=arch.num_queries,
            num_classes=arch.num_classes,
            heads=arch.nheads,
            dim_feedforward=arch.dim_feedforward,
            layers=arch.dec_layers,
            mask_dim=arch.mask_dim,
        )


class FocusModel(nn.Module):
    """FOCUS at inference: normalised padded images in, class and mask logits out.

    State-dict keys and shapes equal the official detectron2 model's (minus the
    training-only CLIP refiner and projection heads).
    """

    def __init__(self, arch: FocusArchitecture) -> None:
        super().__init__()
        self.architecture = arch
        self.backbone = FocusBackbone(arch)
        self.sem_seg_head = FocusHead(arch)

    def set_deform_attn_backend(self, backend: str) -> None:
        """Route every deformable attention of this model to one `ms_deform_attn` backend."""
        for module in self.modules():
            if isinstance(module, MSDeformAttn):
                module.backend = backend

    def forward(
        self, images: torch.Tensor, edges: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            images: ``(B, 3, H, W)`` float, normalised with the FOCUS pixel mean/std,
                zero-padded to multiples of 32.
            edges: optional edge-injected images ``(B, 3, H, W)`` float in [0, 1]
                (BGR order, see :mod:`.edge_prior`); computed from ``images`` if
                omitted, which costs a round trip through the host.

        Returns:
            ``pred_logits`` ``(B, 2, 3)`` (foreground, background, no-object) and
            ``pred_masks`` ``(B, 2, H/4, W/4)`` mask logits.
        """
        features = self.backbone(images, edges)
        mask_features, multi_scale = self.sem_seg_head.pixel_decoder(features)
        logits, masks = self.sem_seg_head.predictor(multi_scale, mask_features)
        return {"pred_logits": logits.float(), "pred_masks": masks.float()}


def build_model(architecture: str | Mapping[str, Any] | FocusArchitecture) -> FocusModel:
    """Build an (uninitialised) FOCUS model in eval mode.

    ``architecture`` is ``"large"``, ``"giant"`` or a mapping with the keys
    ``embed_dim, num_heads, depth, ffn_type, deform_heads, interaction_indexes,
    conv_dim, mask_dim, hidden_dim, nheads, dim_feedforward, dec_layers,
    enc_layers``. Works under ``with torch.device("meta"):``.
    """
    return FocusModel(resolve_architecture(architecture)).eval()
