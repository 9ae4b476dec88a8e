"""The FOCUS forward pass as training runs it: every decoder prediction is kept.

Same modules and weights as :class:`napari_focus.model.FocusModel`; what differs from
inference is what the official training does:

* the predictions before the first decoder layer and after every layer are returned
  (deep supervision), not only the last;
* the first decoder layer's cross-attention is not masked. Official training replaces
  that layer's mask by one built from a PCA of the ViT tokens, min-max scaled to [0, 1]
  and then thresholded as ``sigmoid(x) < 0.5``, which no value in [0, 1] passes: every
  query attends to the whole image. Later layers use the masks of the previous
  prediction, as at inference.
"""

from __future__ import annotations

import torch

from ..model import FocusModel
from ..model.position_encoding import sine_position_embedding
from ..model.transformer_decoder import NUM_LEVELS

Prediction = dict[str, torch.Tensor]


def training_forward(model: FocusModel, images: torch.Tensor) -> list[Prediction]:
    """``images`` normalised ``(B, 3, H, W)`` (multiples of 32) -> the 10 predictions
    (``pred_logits`` ``(B, Q, 3)``, ``pred_masks`` ``(B, Q, H/4, W/4)``), final last."""
    features = model.backbone(images)
    mask_features, multi_scale = model.sem_seg_head.pixel_decoder(features)
    decoder = model.sem_seg_head.predictor
    srcs, poss, sizes = [], [], []
    for i, x in enumerate(multi_scale):
        h, w = x.shape[-2:]
        sizes.append((h, w))
        pos = sine_position_embedding(h, w, x.shape[1] // 2, x.device).to(x.dtype)
        poss.append(pos.flatten(2).permute(2, 0, 1))
        src = decoder.input_proj[i](x).flatten(2) + decoder.level_embed.weight[i][None, :, None]
        srcs.append(src.permute(2, 0, 1))
    b = srcs[0].shape[1]
    query_pos = decoder.query_embed.weight.unsqueeze(1).repeat(1, b, 1)
    output = decoder.query_feat.weight.unsqueeze(1).repeat(1, b, 1)

    logits, masks, blocked = decoder._heads(output, mask_features, sizes[0])
    predictions = [{"pred_logits": logits, "pred_masks": masks}]
    blocked = torch.zeros_like(blocked)  # see the module docstring
    layers = len(decoder.transformer_cross_attention_layers)
    for i in range(layers):
        level = i % NUM_LEVELS
        blocked = blocked & ~blocked.all(-1, keepdim=True)
        output = decoder.transformer_cross_attention_layers[i](
            output, srcs[level], blocked, poss[level], query_pos
        )
        output = decoder.transformer_self_attention_layers[i](output, query_pos)
        output = decoder.transformer_ffn_layers[i](output)
        logits, masks, blocked = decoder._heads(output, mask_features, sizes[(i + 1) % NUM_LEVELS])
        predictions.append({"pred_logits": logits, "pred_masks": masks})
    return predictions
