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

Prediction = dict[str, torch.Tensor]


def training_forward(model: FocusModel, images: torch.Tensor) -> list[Prediction]:
    """``images`` normalised ``(B, 3, H, W)`` (multiples of 32) -> the 10 predictions
    (``pred_logits`` ``(B, Q, 3)``, ``pred_masks`` ``(B, Q, H/4, W/4)``), final last."""
    features = model.backbone(images)
    mask_features, multi_scale = model.sem_seg_head.pixel_decoder(features)
    outputs = model.sem_seg_head.predictor.predictions(
        multi_scale, mask_features, mask_first_layer=False
    )
    return [{"pred_logits": logits, "pred_masks": masks} for logits, masks in outputs]
