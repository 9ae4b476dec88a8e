"""FOCUS post-processing: mask logits -> foreground probability and final binary mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F

TOP_K = 4
SCORE_THRESHOLD = 0.5
FOREGROUND, BACKGROUND = 0, 1


def resize_mask_logits(
    pred_masks: torch.Tensor,
    padded_hw: tuple[int, int],
    image_hw: tuple[int, int],
    output_hw: tuple[int, int],
) -> torch.Tensor:
    """Stride-4 mask logits ``(Q, h, w)`` (or a batch ``(B, Q, h, w)``) ->
    ``(Q, *output_hw)``: upsample to the padded input, crop the padding away,
    resize to the original image."""
    batched = pred_masks.dim() == 4
    masks = F.interpolate(
        (pred_masks if batched else pred_masks[None]).float(),
        size=padded_hw,
        mode="bilinear",
        align_corners=False,
    )
    masks = masks[:, :, : image_hw[0], : image_hw[1]]
    masks = F.interpolate(masks, size=output_hw, mode="bilinear", align_corners=False)
    return masks if batched else masks[0]


def semantic_probabilities(mask_cls: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """``sem_seg`` ``(2, H, W)``: class probabilities (no-object dropped) times mask
    probabilities, summed over queries. Channel 0 is foreground.

    Batched inputs ``(B, Q, C + 1)`` and ``(B, Q, H, W)`` give ``(B, 2, H, W)``.
    """
    probs = F.softmax(mask_cls.float(), dim=-1)[..., :-1]
    return torch.einsum("...qc,...qhw->...chw", probs, mask_logits.float().sigmoid())


def final_mask(mask_cls: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """The official binary mask ``(H, W)`` uint8 (1 = foreground).

    Every (query, class) pair is scored by its class probability times the
    query's self-weighted mean mask probability. Walking the top four in
    descending order, up to two confident pairs of alternating class are kept:
    with one of each class the mask is ``p_foreground > p_background``;
    otherwise the single best pair decides (foreground: ``p > 0.5``,
    background: ``p < 0.5``).
    """
    return final_masks(mask_cls[None], mask_logits[None])[0]


def final_masks(mask_cls: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """:func:`final_mask` of a batch, ``(B, Q, C + 1)`` and ``(B, Q, H, W)`` ->
    ``(B, H, W)`` uint8, decided with tensor operations only (no device sync)."""
    batch, num_queries, num_cls = mask_cls.shape[0], mask_cls.shape[1], mask_cls.shape[2] - 1
    class_probs = F.softmax(mask_cls.float(), dim=-1)[..., :-1]  # B, Q, C
    mask_probs = mask_logits.float().sigmoid()  # B, Q, H, W
    flat = mask_probs.flatten(2)
    mask_quality = (flat * flat).sum(2) / (flat.sum(2) + 1e-6)  # B, Q

    k = min(TOP_K, num_queries * num_cls)
    top_scores, top_index = class_probs.flatten(1).topk(k, dim=1, sorted=True)  # B, k
    labels = top_index % num_cls
    queries = top_index // num_cls
    scores = top_scores * mask_quality.gather(1, queries)

    # The walk over the top k: the first confident pair, then the first later
    # confident pair of the other class.
    confident = scores > SCORE_THRESHOLD
    rank = torch.arange(k, device=scores.device).expand(batch, k)
    first = confident.to(torch.uint8).argmax(1, keepdim=True)  # first True (0 if none)
    has_first = confident.gather(1, first)
    other = confident & (rank > first) & (labels != labels.gather(1, first))
    second = other.to(torch.uint8).argmax(1, keepdim=True)
    has_pair = (has_first & other.gather(1, second)).view(batch, 1, 1)

    first_label, first_query = labels.gather(1, first), queries.gather(1, first)
    second_query = queries.gather(1, second)
    fg_query = torch.where(first_label == FOREGROUND, first_query, second_query)
    bg_query = torch.where(first_label == FOREGROUND, second_query, first_query)
    pair = _pick(mask_probs, fg_query) > _pick(mask_probs, bg_query)

    best = scores.argmax(1, keepdim=True)  # the first maximum, as list.index(max(...))
    best_prob = _pick(mask_probs, queries.gather(1, best))
    best_is_fg = (labels.gather(1, best) == FOREGROUND).view(batch, 1, 1)
    single = torch.where(best_is_fg, best_prob > 0.5, best_prob < 0.5)
    return torch.where(has_pair, pair, single).to(torch.uint8)


def _pick(mask_probs: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """``mask_probs[b, query[b]]`` for every ``b``: ``(B, H, W)``."""
    index = query.view(-1, 1, 1, 1).expand(-1, 1, *mask_probs.shape[2:])
    return mask_probs.gather(1, index)[:, 0]
