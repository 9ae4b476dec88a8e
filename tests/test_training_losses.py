"""The set criterion's parts against direct computations on small tensors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from napari_focus.training.criterion import SetCriterion, dice_loss, sigmoid_bce_loss
from napari_focus.training.matcher import HungarianMatcher, Target, assign
from napari_focus.training.points import point_sample, uncertain_points


def brute_force(cost: np.ndarray) -> float:
    rows, cols = cost.shape
    best = math.inf
    if rows >= cols:
        for chosen in itertools.permutations(range(rows), cols):
            best = min(best, sum(cost[r, c] for c, r in enumerate(chosen)))
    else:
        for chosen in itertools.permutations(range(cols), rows):
            best = min(best, sum(cost[r, c] for r, c in enumerate(chosen)))
    return best


@pytest.mark.parametrize("shape", [(2, 2), (2, 1), (3, 2), (4, 4), (5, 3), (2, 4)])
def test_assignment_is_the_brute_force_optimum(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        cost = rng.normal(size=shape)
        rows, cols = assign(torch.from_numpy(cost))
        assert len(rows) == min(shape) and len(set(rows.tolist())) == len(rows)
        assert len(set(cols.tolist())) == len(cols)
        total = float(cost[rows.numpy(), cols.numpy()].sum())
        assert total == pytest.approx(brute_force(cost), abs=1e-12)


def test_matcher_cost_is_the_weighted_sum_of_its_terms() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3)
    masks = torch.randn(2, 8, 8)
    target = Target(torch.tensor([0, 1]), (torch.rand(2, 8, 8) > 0.5).float())
    coords = torch.rand(50, 2)
    cost = HungarianMatcher().cost_matrix(logits, masks, target, coords)
    pred = point_sample(masks[:, None], coords[None].expand(2, -1, -1))[:, 0]
    gt = point_sample(target.masks[:, None], coords[None].expand(2, -1, -1))[:, 0]
    probs = logits.softmax(-1)
    for q in range(2):
        for t in range(2):
            bce = torch.nn.functional.binary_cross_entropy_with_logits(pred[q], gt[t])
            p = pred[q].sigmoid()
            dice = 1 - (2 * (p * gt[t]).sum() + 1) / (p.sum() + gt[t].sum() + 1)
            expected = -probs[q, target.labels[t]] + 5 * bce + 5 * dice
            assert cost[q, t].item() == pytest.approx(expected.item(), rel=1e-5)


def test_matcher_pairs_each_query_with_its_own_mask() -> None:
    fg = torch.zeros(16, 16)
    fg[4:12, 4:12] = 1
    targets = [Target(torch.tensor([0, 1]), torch.stack([fg, 1 - fg]))]
    # query 0 predicts the background, query 1 the foreground
    masks = torch.stack([(1 - fg) * 20 - 10, fg * 20 - 10])[None]
    logits = torch.tensor([[[-5.0, 5.0, -5.0], [5.0, -5.0, -5.0]]])
    ((queries, chosen),) = HungarianMatcher(num_points=500)(logits, masks, targets)
    assert dict(zip(queries.tolist(), chosen.tolist(), strict=True)) == {0: 1, 1: 0}


def test_bce_and_dice_against_direct_formulas() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0, 3.0], [1.0, -2.0, 0.5, 0.0]])
    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    bce = 0.0
    dice = 0.0
    for x_row, t_row in zip(logits.tolist(), labels.tolist(), strict=True):
        terms = [
            -(t * math.log(1 / (1 + math.exp(-x))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-x))))
            for x, t in zip(x_row, t_row, strict=True)
        ]
        bce += sum(terms) / len(terms)
        p = [1 / (1 + math.exp(-x)) for x in x_row]
        inter = sum(a * b for a, b in zip(p, t_row, strict=True))
        dice += 1 - (2 * inter + 1) / (sum(p) + sum(t_row) + 1)
    assert sigmoid_bce_loss(logits, labels, 2.0).item() == pytest.approx(bce / 2, rel=1e-6)
    assert dice_loss(logits, labels, 2.0).item() == pytest.approx(dice / 2, rel=1e-6)


def test_class_loss_weights_no_object_by_a_tenth() -> None:
    criterion = SetCriterion()
    logits = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 1.0, 3.0]]])
    target = Target(torch.tensor([1]), torch.ones(1, 4, 4))
    matches = [(torch.tensor([0]), torch.tensor([0]))]  # query 0 -> background, query 1 unmatched
    loss = criterion.class_loss({"pred_logits": logits}, [target], matches)
    log_p = logits[0].log_softmax(-1)
    expected = (-1.0 * log_p[0, 1] - 0.1 * log_p[1, 2]) / (1.0 + 0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_criterion_sums_every_layer_with_the_official_weights() -> None:
    torch.manual_seed(0)
    criterion = SetCriterion(num_points=64)
    fg = torch.zeros(32, 32)
    fg[8:20, 10:30] = 1
    targets = [Target(torch.tensor([0, 1]), torch.stack([fg, 1 - fg]))]
    layers = [
        {"pred_logits": torch.randn(1, 2, 3), "pred_masks": torch.randn(1, 2, 8, 8)}
        for _ in range(10)
    ]
    losses = criterion(layers, targets)
    assert set(losses) == {
        f"loss_{k}{suffix}"
        for k in ("ce", "mask", "dice")
        for suffix in ["", *(f"_{i}" for i in range(9))]
    }
    torch.manual_seed(1)
    unweighted = criterion.layer_losses(layers[-1], targets, 2.0)
    torch.manual_seed(1)
    weighted = criterion([layers[-1]], targets)
    assert weighted["loss_ce"].item() == pytest.approx(unweighted["loss_ce"].item())
    assert weighted["loss_mask"].item() == pytest.approx(5 * unweighted["loss_mask"].item())
    assert weighted["loss_dice"].item() == pytest.approx(5 * unweighted["loss_dice"].item())


def test_point_sampling_keeps_the_most_uncertain_candidates() -> None:
    # logits grow from -8 on the left to +8 on the right: uncertainty is highest at x = 0.5
    logits = torch.linspace(-8, 8, 64).repeat(64, 1)[None, None]
    torch.manual_seed(0)
    coords = uncertain_points(logits, 1000, oversample_ratio=3.0, importance_ratio=0.75)
    assert coords.shape == (1, 1000, 2)
    torch.manual_seed(0)
    candidates = torch.rand(1, 3000, 2)
    values = point_sample(logits, candidates)[0, 0]
    threshold = (-values.abs()).topk(750).values.min()
    chosen = point_sample(logits, coords[:, :750])[0, 0]
    assert ((-chosen.abs()) >= threshold - 1e-6).all()
    # the chosen points are candidates, near the boundary; the other 250 are uniform
    assert (coords[0, :750, 0] - 0.5).abs().max() < 0.2
    assert (coords[0, 750:, 0] - 0.5).abs().max() > 0.3
    assert set(map(tuple, coords[0, :750].tolist())) <= set(map(tuple, candidates[0].tolist()))


def test_point_sample_reads_bilinear_values_in_unit_coordinates() -> None:
    maps = torch.arange(16.0).view(1, 1, 4, 4)
    # pixel centres are at (i + 0.5) / 4
    coords = torch.tensor([[[0.125, 0.125], [0.875, 0.125], [0.375, 0.625]]])
    values = point_sample(maps, coords)[0, 0]
    assert values.tolist() == pytest.approx([0.0, 3.0, 9.0])
