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
    """Stride-4 mask logits ``(Q, h, w)`` -> ``(Q, *output_hw)``: upsample to the padded
    input, crop the padding away, resize to the original image."""
    masks = F.interpolate(
        pred_masks[None].float(), size=padded_hw, mode="bilinear", align_corners=False
    )
    masks = masks[:, :, : image_hw[0], : image_hw[1]]
    return F.interpolate(masks, size=output_hw, mode="bilinear", align_corners=False)[0]


def semantic_probabilities(mask_cls: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """``sem_seg`` ``(2, H, W)``: class probabilities (no-object dropped) times mask
    probabilities, summed over queries. Channel 0 is foreground."""
    probs = F.softmax(mask_cls.float(), dim=-1)[..., :-1]
    return torch.einsum("qc,qhw->chw", probs, mask_logits.float().sigmoid())


def final_mask(mask_cls: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """The official binary mask ``(H, W)`` uint8 (1 = foreground).

    Every (query, class) pair is scored by its class probability times the
    query's self-weighted mean mask probability. Walking the top four in
    descending order, up to two confident pairs of alternating class are kept:
    with one of each class the mask is ``p_foreground > p_background``;
    otherwise the single best pair decides (foreground: ``p > 0.5``,
    background: ``p < 0.5``).
    """
    num_queries, num_cls = mask_cls.shape[0], mask_cls.shape[1] - 1
    class_probs = F.softmax(mask_cls.float(), dim=-1)[:, :-1]
    mask_probs = mask_logits.float().sigmoid()
    flat = mask_probs.flatten(1)
    mask_quality = (flat * flat).sum(1) / (flat.sum(1) + 1e-6)

    k = min(TOP_K, num_queries * num_cls)
    top_scores, top_index = class_probs.flatten().topk(k, sorted=True)
    labels = (top_index % num_cls).tolist()
    queries = (top_index // num_cls).tolist()
    scores = (top_scores * mask_quality[top_index // num_cls]).tolist()

    chosen: list[tuple[int, int]] = []  # (class, query)
    for score, label, query in zip(scores, labels, queries, strict=True):
        if len(chosen) < 2 and score > SCORE_THRESHOLD and (not chosen or label != chosen[-1][0]):
            chosen.append((label, query))
    if len(chosen) == 2:
        by_class = dict(chosen)
        return (mask_probs[by_class[FOREGROUND]] > mask_probs[by_class[BACKGROUND]]).to(torch.uint8)
    best = scores.index(max(scores))
    prob = mask_probs[queries[best]]
    keep = prob > 0.5 if labels[best] == FOREGROUND else prob < 0.5
    return keep.to(torch.uint8)
