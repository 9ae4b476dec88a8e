"""Quality metrics (against PySODMetrics and by hand), the uncertainty ranking, the report."""

from __future__ import annotations

import csv
import math
from html.parser import HTMLParser

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.stats import norm, spearmanr

from napari_focus.quality import (
    METRICS,
    as_probability,
    folder_report,
    mask_metrics,
    uncertainty,
)

sod = pytest.importorskip("py_sod_metrics")


def library_metrics(pred: np.ndarray, gt: np.ndarray, *, normalize: bool) -> dict[str, float]:
    """The metrics straight from PySODMetrics, as its README evaluates a folder."""
    mae, sm, em, wfm = sod.MAE(), sod.Smeasure(), sod.Emeasure(), sod.WeightedFmeasure()
    fm = sod.FmeasureV2(
        {
            "ber": sod.BERHandler(False, False, with_binary=True),
            "iou": sod.IOUHandler(False, False, with_binary=True),
        }
    )
    for metric in (mae, sm, em, wfm, fm):
        metric.step(pred, gt, normalize=normalize)
    e = em.get_results()["em"]
    f = fm.get_results()
    return {
        "mae": mae.get_results()["mae"],
        "smeasure": sm.get_results()["sm"],
        "emeasure_mean": e["curve"].mean(),
        "emeasure_adaptive": e["adp"],
        "emeasure_max": e["curve"].max(),
        "wfmeasure": wfm.get_results()["wfm"],
        "ber": f["ber"]["binary"],
        "iou": f["iou"]["binary"],
    }


def blob(h: int = 40, w: int = 56, cy: float = 20, cx: float = 26, r: float = 10) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_identical_masks_are_perfect():
    gt = blob()
    metrics = mask_metrics(gt, gt)
    assert list(metrics) == list(METRICS)
    assert metrics["mae"] == 0
    assert metrics["iou"] == 1
    assert metrics["ber"] == 0
    assert metrics["smeasure"] == pytest.approx(1)
    assert metrics["wfmeasure"] == pytest.approx(1)
    assert metrics["emeasure_max"] == pytest.approx(1, abs=1e-3)  # the library adds eps
    # the same mask as 8-bit 0/255 and as probability 0/1 gives the same numbers
    assert mask_metrics(gt.astype(np.uint8) * 255, gt.astype(np.uint8) * 255) == metrics
    assert mask_metrics(gt.astype(np.float32), gt) == metrics


def test_ber_iou_mae_by_hand():
    gt = np.zeros((4, 4), bool)
    gt[0, :] = True  # 4 foreground pixels
    pred = np.zeros((4, 4), np.float32)
    pred[0, :2] = 0.9  # 2 true positives
    pred[1, :2] = 0.8  # 2 false positives -> fn 2, tn 10
    metrics = mask_metrics(pred, gt)
    assert metrics["iou"] == pytest.approx(2 / 6)
    assert metrics["ber"] == pytest.approx(1 - 0.5 * (2 / 4 + 10 / 12))
    expected_mae = (2 * 0.1 + 2 * 0.8 + 2 * 1.0) / 16
    assert metrics["mae"] == pytest.approx(expected_mae, abs=1e-6)


def test_empty_reference_and_empty_proposal_count_as_perfect_iou():
    empty = np.zeros((8, 8), bool)
    metrics = mask_metrics(np.full((8, 8), 0.1, np.float32), empty)
    assert metrics["iou"] == 1
    assert metrics["mae"] == pytest.approx(0.1)
    assert mask_metrics(np.full((8, 8), 0.9, np.float32), empty)["iou"] == 0


def test_probability_maps_match_pysodmetrics():
    rng = np.random.default_rng(3)
    gt = blob() | blob(cy=8, cx=45, r=5)
    for _ in range(4):
        prob = np.clip(
            ndi.gaussian_filter(gt.astype(float), 2) + rng.normal(0, 0.2, gt.shape), 0, 1
        )
        ours = mask_metrics(prob.astype(np.float32), gt)
        theirs = library_metrics(prob.astype(np.float32).astype(np.float64), gt, normalize=False)
        for key in METRICS:
            assert ours[key] == pytest.approx(float(theirs[key]), abs=1e-9), key


def test_8bit_maps_match_the_papers_pipeline():
    """uint8 prediction and 0/255 ground truth through PySODMetrics' own normalisation
    (as when evaluating PNG files); the map spans 0-255, so min-max is the identity."""
    rng = np.random.default_rng(4)
    gt = blob(cy=18, cx=30, r=12)
    prob = np.clip(ndi.gaussian_filter(gt.astype(float), 3) + rng.normal(0, 0.1, gt.shape), 0, 1)
    pred8 = np.round(prob * 255).astype(np.uint8)
    pred8[0, 0], pred8[-1, -1] = 0, 255
    gt8 = gt.astype(np.uint8) * 255
    ours = mask_metrics(pred8, gt8)
    theirs = library_metrics(pred8, gt8, normalize=True)
    for key in METRICS:
        assert ours[key] == pytest.approx(float(theirs[key]), abs=1e-9), key


def test_real_fixture_maps_match_pysodmetrics(focus_reference):
    """The tiny model's golden probability map against its own final mask."""
    from safetensors.numpy import load_file

    golden = load_file(focus_reference / "tiny_mlp_golden.safetensors")
    prob = np.clip(golden["sem_seg"][0], 0, 1)
    reference = golden["final_mask"].astype(bool)
    ours = mask_metrics(prob, reference)
    theirs = library_metrics(prob.astype(np.float64), reference, normalize=False)
    for key in METRICS:
        assert ours[key] == pytest.approx(float(theirs[key]), abs=1e-9), key
    assert 0 <= uncertainty(prob) <= 1


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError, match="shape"):
        mask_metrics(np.zeros((4, 4), np.float32), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        as_probability(np.full((2, 2), 1.5))
    with pytest.raises(ValueError, match="2-D"):
        as_probability(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="unknown"):
        uncertainty(np.zeros((2, 2)), "variance")


def test_uncertainty_extremes():
    assert uncertainty(np.full((5, 5), 0.5)) == pytest.approx(1)
    assert uncertainty(np.eye(5, dtype=bool)) == pytest.approx(0, abs=1e-4)
    assert uncertainty(np.zeros((5, 5))) == pytest.approx(0, abs=1e-4)
    assert uncertainty(np.full((5, 5), 0.5), "iou") == pytest.approx(1)
    assert uncertainty(np.eye(5, dtype=bool), "iou") == 0
    # 8-bit maps are read as p = value / 255
    assert uncertainty(np.full((5, 5), 51, np.uint8)) == pytest.approx(
        uncertainty(np.full((5, 5), 0.2))
    )


def calibrated_case(rng: np.random.Generator, h: int = 72, w: int = 96):
    """Ground truth of 1-3 ellipses and the probability map of a roughly calibrated
    model: it sees the signed boundary distance plus smooth noise of a random strength
    (0.3-12 px) and reports how sure it can be at that noise level; its temperature is
    off by up to x2 either way, so it is not perfectly calibrated."""
    yy, xx = np.mgrid[:h, :w]
    gt = np.zeros((h, w), bool)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        ry, rx = rng.uniform(0.05, 0.3) * h, rng.uniform(0.05, 0.3) * w
        gt |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    distance = ndi.distance_transform_edt(gt) - ndi.distance_transform_edt(~gt)
    strength = rng.uniform(0.3, 12.0)
    noise = ndi.gaussian_filter(rng.standard_normal((h, w)), rng.uniform(2, 8))
    noise *= strength / (noise.std() + 1e-9)
    temperature = strength * math.exp(rng.uniform(-math.log(2), math.log(2)))
    return gt, norm.cdf((distance + noise) / temperature)


def test_uncertainty_orders_images_by_how_wrong_the_proposal_is():
    rng = np.random.default_rng(0)
    entropy, expected_iou, mae, wrong, iou_error = [], [], [], [], []
    for _ in range(120):
        gt, prob = calibrated_case(rng)
        mask = prob > 0.5
        entropy.append(uncertainty(prob))
        expected_iou.append(uncertainty(prob, "iou"))
        mae.append(np.abs(prob - gt).mean())
        wrong.append((mask != gt).mean())
        iou_error.append(1 - (mask & gt).sum() / max((mask | gt).sum(), 1))
    # measured (seed 0): 0.94, 0.83 -- pixel error: the area a human repaints
    assert spearmanr(entropy, mae)[0] > 0.9
    assert spearmanr(entropy, wrong)[0] > 0.8
    # object-relative error: 0.76 for the "iou" score, where entropy reaches 0.59
    assert spearmanr(expected_iou, iou_error)[0] > 0.7


def test_ranking_by_uncertainty_puts_the_worst_proposal_first():
    """Same object, proposals of increasing blur and shift: the order is the error order."""
    gt = blob(64, 64, 32, 32, 14)
    proposals = []
    for sigma, shift in [(0.5, 0), (2, 1), (4, 3), (7, 6)]:
        shifted = np.roll(gt, shift, axis=1).astype(float)
        proposals.append(np.clip(ndi.gaussian_filter(shifted, sigma), 0, 1))
    scores = [uncertainty(p) for p in proposals]
    errors = [mask_metrics(p, gt)["mae"] for p in proposals]
    assert np.argsort(scores).tolist() == np.argsort(errors).tolist() == [0, 1, 2, 3]


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_folder_report_writes_csv_and_html(tmp_path):
    gt = blob()
    rows = []
    for i, sigma in enumerate([0.5, 3, 6]):
        prob = np.clip(ndi.gaussian_filter(gt.astype(float), sigma), 0, 1)
        rows.append(
            {
                "name": f"img<{i}>",
                "uncertainty": uncertainty(prob),
                "seconds": 0.1 * (3 - i),
                **mask_metrics(np.roll(prob, 4 * i, axis=0), gt),
            }
        )
    rows.append({"name": "no_reference", "uncertainty": 0.2, "seconds": 0.5})
    rows.append({"name": "broken", "error": "UnidentifiedImageError: cannot identify"})
    html_path = folder_report(rows, tmp_path / "report")
    assert html_path == tmp_path / "report" / "report.html"

    with open(tmp_path / "report" / "metrics.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [r["name"] for r in table] == ["img<0>", "img<1>", "img<2>", "no_reference", "broken"]
    assert float(table[0]["iou"]) == pytest.approx(rows[0]["iou"], rel=1e-5)
    assert table[3]["iou"] == ""

    parser = _Collect()
    parser.feed(html_path.read_text(encoding="utf-8"))
    text = "".join(parser.text)
    assert parser.tags.count("svg") == 2  # IoU bars and uncertainty-vs-error scatter
    assert "script" not in parser.tags
    assert "5 images, 1 of them failed (see the table)." in text
    assert "img<2>" in text  # escaped in the file, intact as text
    assert "<2>" not in html_path.read_text(encoding="utf-8")
    worst = text.index("Worst 3 by IoU")
    slowest = text.index("Slowest 4")
    assert text.index("img<2>", worst) < text.index("img<0>", worst) < slowest
    assert text.index("no_reference", slowest) < text.index("img<0>", slowest)
