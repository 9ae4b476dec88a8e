"""Hungarian matching of the predicted queries to the target masks (Mask2Former style).

The cost of giving query ``q`` target ``t`` is, as FOCUS configures it,
``1 * (-p_q(class_t)) + 5 * BCE(mask_q, mask_t) + 5 * dice(mask_q, mask_t)``, the mask
terms evaluated on one set of uniformly random points shared by all queries and targets
of an image; the assignment minimising the total cost is found with
:func:`scipy.optimize.linear_sum_assignment`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from .points import point_sample


@dataclass(frozen=True)
class Target:
    """One image's targets: ``labels`` ``(T,)`` int64, ``masks`` ``(T, H, W)`` float."""

    labels: torch.Tensor
    masks: torch.Tensor


def pairwise_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean sigmoid BCE between every row of ``logits`` ``(N, P)`` and of ``targets``
    ``(M, P)``: ``(N, M)``."""
    positive = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    negative = F.binary_cross_entropy_with_logits(
        logits, torch.zeros_like(logits), reduction="none"
    )
    cost = positive @ targets.T + negative @ (1 - targets).T
    return cost / logits.shape[1]


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss (+1 smoothed) between every row of ``logits`` and of ``targets``."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


@dataclass(frozen=True)
class HungarianMatcher:
    cost_class: float = 1.0
    cost_mask: float = 5.0
    cost_dice: float = 5.0
    num_points: int = 12544

    def cost_matrix(
        self, logits: torch.Tensor, masks: torch.Tensor, target: Target, coords: torch.Tensor
    ) -> torch.Tensor:
        """``(Q, T)`` cost of one image, mask terms read at ``coords`` ``(P, 2)`` in [0, 1]."""
        probs = logits.float().softmax(-1)
        cost_class = -probs[:, target.labels]
        pred = point_sample(masks[:, None].float(), coords[None].expand(len(masks), -1, -1))
        gt = point_sample(
            target.masks[:, None].float(), coords[None].expand(len(target.masks), -1, -1)
        )
        pred, gt = pred[:, 0], gt[:, 0]
        return (
            self.cost_mask * pairwise_bce(pred, gt)
            + self.cost_class * cost_class
            + self.cost_dice * pairwise_dice(pred, gt)
        )

    @torch.no_grad()
    def __call__(
        self, pred_logits: torch.Tensor, pred_masks: torch.Tensor, targets: Sequence[Target]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image, the matched ``(query indices, target indices)``, both int64."""
        matches = []
        for logits, masks, target in zip(pred_logits, pred_masks, targets, strict=True):
            coords = torch.rand(self.num_points, 2, device=masks.device)
            with torch.autocast(masks.device.type, enabled=False):
                cost = self.cost_matrix(logits, masks, target, coords)
            matches.append(assign(cost))
        return matches


class TrainingDiverged(FloatingPointError, ValueError):
    """The model's outputs or its loss stopped being finite numbers; the message says
    what to do. A ValueError too, as every other refusal of a training run."""


DIVERGED_ADVICE = (
    "training diverged; lower the learning rate (or turn mixed precision off) and start "
    "again, or resume from the last evaluation"
)


def assign(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment of the rows and columns of ``cost``.

    Raises:
        TrainingDiverged: ``cost`` holds NaN or infinite values (the predictions do).
    """
    values = cost.detach().cpu().numpy().astype(np.float64)
    if not np.isfinite(values).all():
        raise TrainingDiverged(f"the predictions are no longer finite numbers: {DIVERGED_ADVICE}")
    rows, cols = linear_sum_assignment(values)
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)
