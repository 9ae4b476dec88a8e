"""Validation of a model under training, and the training report (CSV + HTML).

Each held-out sample is segmented with the official test pipeline
(:meth:`napari_focus.FocusPredictor.predict`) and scored against its corrected mask with
:func:`napari_focus.quality.mask_metrics` (PySODMetrics), plus the *edit effort*: the
fraction of pixels a person would still have to change to turn the proposal (the
official final mask) into the corrected mask, and ``mask_iou``, the IoU of that
proposal (PySODMetrics' ``iou`` thresholds the probability at 0.5 instead).
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from .data import FOREGROUND, IGNORE, Sample

#: reported per evaluation, in order; True = higher is better
VALIDATION_METRICS: dict[str, bool] = {
    "mask_iou": True,
    "iou": True,
    "smeasure": True,
    "emeasure_mean": True,
    "wfmeasure": True,
    "mae": False,
    "ber": False,
    "edit_effort": False,
}


def score_samples(
    predictor: Any, samples: Sequence[Sample], check: Callable[[], None] | None = None
) -> dict[str, float]:
    """Mean of every :data:`VALIDATION_METRICS` entry over ``samples``; ``check`` is
    called before each sample (it raises to stop)."""
    from ..quality import mask_metrics

    rows = []
    for sample in samples:
        if check is not None:
            check()
        image, classes = sample.load()
        reference = classes == FOREGROUND
        valid = classes != IGNORE
        try:
            prediction = predictor.predict(image)
        except ValueError as error:  # an image the model refuses (too elongated)
            raise sample.unusable(error) from error
        metrics = mask_metrics(prediction.probability, reference)
        proposal = prediction.mask.astype(bool)
        changed = (proposal != reference) & valid
        metrics["edit_effort"] = float(changed.sum() / max(int(valid.sum()), 1))
        union = int(((proposal | reference) & valid).sum())
        inter = int((proposal & reference & valid).sum())
        metrics["mask_iou"] = inter / union if union else 1.0
        rows.append(metrics)
    return {key: float(np.mean([row[key] for row in rows])) for key in VALIDATION_METRICS}


def better(metric: str, new: float, old: float | None) -> bool:
    if old is None or math.isnan(old):
        return not math.isnan(new)
    return new > old if VALIDATION_METRICS.get(metric, True) else new < old


REPORT_COLUMNS = ("step", "kind", "loss", "lr", *VALIDATION_METRICS)
REPORT_NAME = "training_report.html"  # beside the training log, in the work folder


def write_report(folder: Path, history: Sequence[Mapping[str, Any]], title: str) -> Path:
    """``training_log.csv`` (one row per logged step and per evaluation) and
    ``training_report.html`` (loss and validation curves as inline SVG, the table)."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REPORT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _fmt(row.get(k)) for k in REPORT_COLUMNS})
    atomic_write_text(folder / "training_log.csv", buffer.getvalue())

    losses = [(r["step"], r["loss"]) for r in history if r.get("kind") == "train"]
    evals = [r for r in history if r.get("kind") == "eval"]
    charts = [_svg_chart("training loss", losses)]
    for metric in ("mask_iou", "smeasure", "edit_effort"):
        charts.append(_svg_chart(f"validation {metric}", [(r["step"], r[metric]) for r in evals]))
    table = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(k)))}</td>" for k in REPORT_COLUMNS)
        + "</tr>"
        for r in evals
    )
    head = "".join(f"<th>{k}</th>" for k in REPORT_COLUMNS)
    page = (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<h1>{html.escape(title)}</h1>{''.join(charts)}"
        f"<h2>Evaluations</h2><table border=1 cellpadding=3><tr>{head}</tr>{table}</table>"
    )
    path = folder / REPORT_NAME
    atomic_write_text(path, page)
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _svg_chart(title: str, points: Sequence[tuple[float, float]]) -> str:
    points = [(float(x), float(y)) for x, y in points if y is not None and math.isfinite(y)]
    width, height, pad = 420, 180, 30
    if not points:
        return f"<h2>{html.escape(title)}</h2><p>no data</p>"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    coords = " ".join(
        f"{pad + (x - x0) / (x1 - x0) * (width - 2 * pad):.1f},"
        f"{height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad):.1f}"
        for x, y in points
    )
    return (
        f"<h2>{html.escape(title)}</h2><svg width='{width}' height='{height}' "
        f"xmlns='http://www.w3.org/2000/svg'><rect width='100%' height='100%' fill='white' "
        f"stroke='#999'/><polyline fill='none' stroke='#1f77b4' stroke-width='2' "
        f"points='{coords}'/><text x='4' y='14' font-size='11'>{y1:.4g}</text>"
        f"<text x='4' y='{height - 4}' font-size='11'>{y0:.4g}</text>"
        f"<text x='{width - 60}' y='{height - 4}' font-size='11'>step {x1:.0f}</text></svg>"
    )
