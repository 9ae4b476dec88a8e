"""The FOCUS set criterion (Mask2Former style), as the official configuration sets it.

For the final prediction and, with deep supervision, for every intermediate one (the
prediction before the first decoder layer and after each layer but the last), the
queries are matched to the target masks (:class:`~.matcher.HungarianMatcher`) and

* ``loss_ce``: cross-entropy of every query's class logits against its matched target's
  class, unmatched queries against "no object", the no-object class weighted 0.1;
* ``loss_mask``: sigmoid BCE of the matched masks on 12,544 importance-sampled points
  (oversample 3.0, importance 0.75), averaged over points, summed over masks and divided
  by the number of target masks in the batch;
* ``loss_dice``: dice loss on the same points, normalised the same way;

weighted 1 / 5 / 5. The intermediate terms carry the suffix ``_{i}``.

Left out: the official recipe also trains the CLIP refiner's distillation
(``loss_clip``) and the box head (``loss_bbox``, ``loss_giou``). The refiner needs the
CLIP ViT-B/16 weights, which are not ours to ship, and neither term takes part in
inference. :attr:`SetCriterion.extra_terms` takes further terms with the same signature
as :meth:`SetCriterion.mask_losses` should they be wanted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .matcher import HungarianMatcher, Target
from .points import point_sample, uncertain_points

Prediction = Mapping[str, torch.Tensor]  # "pred_logits" (B, Q, C + 1), "pred_masks" (B, Q, h, w)
Matches = list[tuple[torch.Tensor, torch.Tensor]]
LossTerm = Callable[[Prediction, Sequence[Target], Matches, float], dict[str, torch.Tensor]]


def sigmoid_bce_loss(logits: torch.Tensor, labels: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Per-mask mean BCE over the points ``(N, P)``, summed, divided by ``num_masks``."""
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, num_masks: float) -> torch.Tensor:
    """``1 - (2 |p t| + 1) / (|p| + |t| + 1)`` per mask, summed, divided by ``num_masks``."""
    probs = logits.sigmoid().flatten(1)
    numerator = 2 * (probs * labels).sum(-1)
    denominator = probs.sum(-1) + labels.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


@dataclass
class SetCriterion:
    num_classes: int = 2
    no_object_weight: float = 0.1
    class_weight: float = 1.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_ratio: float = 0.75
    deep_supervision: bool = True
    extra_terms: dict[str, tuple[LossTerm, dict[str, float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.matcher = HungarianMatcher(
            self.class_weight, self.mask_weight, self.dice_weight, self.num_points
        )

    @property
    def weights(self) -> dict[str, float]:
        weights = {
            "loss_ce": self.class_weight,
            "loss_mask": self.mask_weight,
            "loss_dice": self.dice_weight,
        }
        for _, term_weights in self.extra_terms.values():
            weights.update(term_weights)
        return weights

    def class_loss(
        self, prediction: Prediction, targets: Sequence[Target], matches: Matches
    ) -> torch.Tensor:
        logits = prediction["pred_logits"].float()
        classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        for b, ((queries, chosen), target) in enumerate(zip(matches, targets, strict=True)):
            classes[b, queries.to(logits.device)] = target.labels[chosen].to(logits.device)
        weight = torch.ones(self.num_classes + 1, device=logits.device)
        weight[-1] = self.no_object_weight
        return F.cross_entropy(logits.transpose(1, 2), classes, weight)

    def mask_losses(
        self,
        prediction: Prediction,
        targets: Sequence[Target],
        matches: Matches,
        num_masks: float,
    ) -> dict[str, torch.Tensor]:
        masks = prediction["pred_masks"].float()
        pred, gt = [], []
        for b, ((queries, chosen), target) in enumerate(zip(matches, targets, strict=True)):
            pred.append(masks[b, queries.to(masks.device)])
            gt.append(target.masks[chosen.to(target.masks.device)].to(masks))
        pred_masks = torch.cat(pred)[:, None]
        if pred_masks.shape[0] == 0:
            zero = masks.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero}
        with torch.no_grad():
            coords = uncertain_points(
                pred_masks, self.num_points, self.oversample_ratio, self.importance_ratio
            )
            labels = torch.cat(
                [
                    point_sample(g[:, None], c)
                    for g, c in zip(gt, coords.split([len(g) for g in gt]), strict=True)
                ]
            )[:, 0]
        logits = point_sample(pred_masks, coords)[:, 0]
        return {
            "loss_mask": sigmoid_bce_loss(logits, labels, num_masks),
            "loss_dice": dice_loss(logits, labels, num_masks),
        }

    def layer_losses(
        self, prediction: Prediction, targets: Sequence[Target], num_masks: float
    ) -> dict[str, torch.Tensor]:
        with torch.autocast(prediction["pred_masks"].device.type, enabled=False):
            matches = self.matcher(prediction["pred_logits"], prediction["pred_masks"], targets)
            losses = {"loss_ce": self.class_loss(prediction, targets, matches)}
            losses.update(self.mask_losses(prediction, targets, matches, num_masks))
            for term, _ in self.extra_terms.values():
                losses.update(term(prediction, targets, matches, num_masks))
        return losses

    def __call__(
        self, predictions: Sequence[Prediction], targets: Sequence[Target]
    ) -> dict[str, torch.Tensor]:
        """``predictions``: every decoder prediction, the final one last. Returns the
        weighted terms (final ones unsuffixed, intermediate ones ``_{i}``)."""
        num_masks = max(float(sum(len(t.labels) for t in targets)), 1.0)
        weights = self.weights
        losses = {
            k: v * weights[k]
            for k, v in self.layer_losses(predictions[-1], targets, num_masks).items()
        }
        if self.deep_supervision:
            for i, prediction in enumerate(predictions[:-1]):
                for k, v in self.layer_losses(prediction, targets, num_masks).items():
                    losses[f"{k}_{i}"] = v * weights[k]
        return losses


def total_loss(losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([v for v in losses.values()]).sum()
