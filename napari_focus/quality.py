"""Quality of a proposal: metrics against a reference mask, an uncertainty score, a report.

Metrics come from PySODMetrics (``pip install pysodmetrics``, module ``py_sod_metrics``),
the implementation SOD/COD papers evaluate with; see :func:`mask_metrics` for the exact
variants. The uncertainty score needs only the probability map; see :func:`uncertainty`.
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .fs_text import CSV_ERRORS
from .io import atomic_write
from .mask_files import binary_mask

#: Keys of :func:`mask_metrics`, in report order. ``True`` = higher is better.
METRICS: dict[str, bool] = {
    "mae": False,
    "smeasure": True,
    "emeasure_mean": True,
    "emeasure_adaptive": True,
    "emeasure_max": True,
    "wfmeasure": True,
    "ber": False,
    "iou": True,
}
UNCERTAINTY_METHODS = ("entropy", "iou")
DEFAULT_UNCERTAINTY = "entropy"
_EPS = 1e-6


def require_metrics() -> None:
    """Raise ImportError, saying how to install it, when PySODMetrics is missing: called
    before work whose results need the metrics (fine-tuning, ranking against masks)."""
    import importlib.util

    if importlib.util.find_spec("py_sod_metrics") is None:
        raise ImportError(
            "quality metrics need PySODMetrics, which is not installed: "
            "pip install 'pysodmetrics>=1.6.2,<2' (napari-focus's 'metrics' extra)"
        )


def as_probability(prediction: np.ndarray) -> np.ndarray:
    """float64 ``(H, W)`` in [0, 1] from a probability (float in [0, 1]), an 8-bit map
    (0-255) or a binary mask (bool, or integers holding only 0 and 1, as a Labels layer
    does: an 8-bit map whose values never pass 1 reads as such a mask; pass it as float
    ``/ 255`` to keep it a faint map). Other integers must hold 0/1 or 0-255."""
    array = np.asarray(prediction)
    if array.ndim != 2:
        raise ValueError(f"prediction must be 2-D (H, W), got shape {array.shape}")
    if array.dtype == bool:
        return array.astype(np.float64)
    if np.issubdtype(array.dtype, np.integer):
        top = 1 if array.size and array.max() <= 1 else 255
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError("an integer prediction must hold 0/1 or 0-255 values")
        return array.astype(np.float64) / top
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)) or array.min(initial=0) < 0 or array.max(initial=0) > 1:
        raise ValueError("a float prediction must be a probability in [0, 1]")
    return array


def as_binary(reference: np.ndarray) -> np.ndarray:
    """bool mask from a reference, by the mask-file rule of :mod:`napari_focus.mask_files`
    (bool; 0/1; 8-bit ``> 128`` as the official evaluation; float ``> 0.5``; colour: any
    channel)."""
    try:
        return binary_mask(reference)
    except ValueError as error:
        raise ValueError(f"reference mask: {error}") from error


def mask_metrics(prediction: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Metrics of one proposal against its reference mask, all computed by PySODMetrics.

    Args:
        prediction: ``(H, W)`` probability (float in [0, 1]), 8-bit map (uint8 0-255) or
            binary mask (bool). Used as given: no min-max stretching (PySODMetrics'
            ``normalize=False``), so a nearly constant map is not blown up to [0, 1].
        reference: ``(H, W)`` mask; see :func:`as_binary`.

    Returns:
        ``mae``; ``smeasure`` (S_alpha, alpha=0.5); ``emeasure_mean`` (mean over the 256
        thresholds: the "mean E-measure" COD papers report), ``emeasure_adaptive``
        (threshold ``2 * mean(prediction)``, as most SOD papers) and ``emeasure_max``;
        ``wfmeasure`` (weighted F, beta^2 = 1; 0 when the reference is empty, as the
        library defines it); ``ber`` (balance error rate as a fraction, not percent) and
        ``iou`` of the mask ``prediction > 0.5``. Deviation from the library: IoU is 1
        (not 0) when both the reference and the thresholded prediction are empty.
    """
    require_metrics()
    import py_sod_metrics as sod

    pred = as_probability(prediction)
    gt = as_binary(reference)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and reference {gt.shape} differ in shape")

    mae, sm, em, wfm = sod.MAE(), sod.Smeasure(), sod.Emeasure(), sod.WeightedFmeasure()
    binary = sod.FmeasureV2(
        {
            "ber": sod.BERHandler(with_dynamic=False, with_adaptive=False, with_binary=True),
            "iou": sod.IOUHandler(with_dynamic=False, with_adaptive=False, with_binary=True),
        }
    )
    for metric in (mae, sm, em, wfm, binary):
        metric.step(pred, gt, normalize=False)
    em_results = em.get_results()["em"]
    binary_results = binary.get_results()
    iou = float(binary_results["iou"]["binary"])
    if not gt.any() and not (pred > 0.5).any():
        iou = 1.0
    return {
        "mae": float(mae.get_results()["mae"]),
        "smeasure": float(sm.get_results()["sm"]),
        "emeasure_mean": float(np.mean(em_results["curve"])),
        "emeasure_adaptive": float(em_results["adp"]),
        "emeasure_max": float(np.max(em_results["curve"])),
        "wfmeasure": float(wfm.get_results()["wfm"]),
        "ber": float(binary_results["ber"]["binary"]),
        "iou": iou,
    }


def uncertainty(probability: np.ndarray, method: str = DEFAULT_UNCERTAINTY) -> float:
    """How doubtful a proposal is, from its probability map alone; higher = more doubtful.

    ``entropy`` (default): mean binary entropy in bits, in [0, 1]. Without a reference
    the best estimate of the proposal's pixel error is the model's own doubt; entropy is
    a smooth, threshold-free measure of it: unlike the share of pixels in 0.3-0.7 it has
    no cut-offs to tune and still counts 0.2/0.8 pixels. It tracks the number of wrong
    pixels, i.e. how much the human must repaint: on the synthetic set of
    tests/test_quality.py (a model calibrated within x2) Spearman 0.94-0.96 with MAE and
    0.82-0.85 with the share of wrong mask pixels (the 0.3-0.7 share scores the same).

    ``iou``: the proposal's expected 1 - IoU if each pixel were foreground with its
    probability: ``1 - sum(p[m]) / (|m| + sum(p[~m]))`` for ``m = p > 0.5``. It is
    relative to the object size, so it ranks a doubtful small object first (Spearman
    0.73-0.76 with 1 - IoU on the same set, where entropy reaches 0.46-0.65).

    No score computed from probabilities can see confidently wrong pixels; the ranking
    assumes the model is roughly calibrated.
    """
    p = as_probability(probability)
    if p.size == 0:
        return 0.0
    if method == "entropy":
        q = np.clip(p, _EPS, 1 - _EPS)
        return float(np.mean(-(q * np.log2(q) + (1 - q) * np.log2(1 - q))))
    if method == "iou":
        mask = p > 0.5
        union = mask.sum() + p[~mask].sum()
        return float(1 - p[mask].sum() / union) if union > _EPS else 0.0
    raise ValueError(f"unknown uncertainty method {method!r}; use one of {UNCERTAINTY_METHODS}")


# --- folder report ------------------------------------------------------------------------

_FIRST_COLUMNS = ("rank", "name", "path", "uncertainty", "seconds", "width", "height")


def _row_dict(row: Any) -> dict[str, Any]:
    if isinstance(row, Mapping):
        return dict(row)
    if hasattr(row, "as_dict"):
        return dict(row.as_dict())
    raise TypeError(f"a report row must be a mapping or have as_dict(), got {type(row)!r}")


def report_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """CSV columns: the known ones first (those present), then the others as they come."""
    present: dict[str, None] = {}
    for row in rows:
        present.update(dict.fromkeys(row))
    known = [c for c in (*_FIRST_COLUMNS, *METRICS) if c in present]
    return known + [c for c in present if c not in known]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_csv(
    rows: Sequence[Any], path: str | os.PathLike, columns: Sequence[str] | None = None
) -> Path:
    """Rows (mappings or objects with ``as_dict()``) as a UTF-8 CSV with a header line;
    missing values and NaN are empty cells. Written atomically. ``columns``: these, in
    this order (default: :func:`report_columns`)."""
    dicts = [_row_dict(r) for r in rows]
    columns = list(columns) if columns is not None else report_columns(dicts)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in dicts:
        writer.writerow({c: _cell(row.get(c)) for c in columns})
    text = buffer.getvalue()
    data = text.encode("utf-8", CSV_ERRORS)  # a name's undecodable bytes, as they are
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _svg_bars(labels: Sequence[str], values: Sequence[float], title: str) -> str:
    """Horizontal bars of ``values`` in [0, 1], one per label."""
    bar, gap, left, width = 14, 4, 160, 300
    height = 30 + len(values) * (bar + gap)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 60}" '
        f'height="{height}" role="img"><title>{html.escape(title)}</title>',
        f'<text x="4" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 26 + i * (bar + gap)
        length = max(0.0, min(1.0, value)) * width
        parts.append(
            f'<text x="{left - 6}" y="{y + bar - 3}" font-size="11" text-anchor="end">'
            f"{html.escape(label[:28])}</text>"
            f'<rect x="{left}" y="{y}" width="{length:.1f}" height="{bar}" fill="#4a7ab8"/>'
            f'<text x="{left + length + 4:.1f}" y="{y + bar - 3}" font-size="11">'
            f"{value:.3f}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _svg_scatter(points: Sequence[tuple[float, float]], x_label: str, y_label: str) -> str:
    size, pad = 320, 40
    xs = [p[0] for p in points]
    x_max = max(max(xs, default=0.0), _EPS)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 2 * pad}" '
        f'height="{size + 2 * pad}" role="img"><title>{html.escape(y_label)} vs '
        f"{html.escape(x_label)}</title>",
        f'<rect x="{pad}" y="{pad}" width="{size}" height="{size}" fill="none" stroke="#888"/>',
        f'<text x="{pad + size / 2}" y="{size + pad + 28}" font-size="12" '
        f'text-anchor="middle">{html.escape(x_label)} (0 - {x_max:.3g})</text>',
        f'<text x="12" y="{pad + size / 2}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 12 {pad + size / 2})">{html.escape(y_label)} (0 - 1)</text>',
    ]
    for x, y in points:
        cx = pad + x / x_max * size
        cy = pad + (1 - max(0.0, min(1.0, y))) * size
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="#c0504d"/>')
    parts.append("</svg>")
    return "".join(parts)


def _html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def summarize(rows: Sequence[Any]) -> dict[str, float]:
    """Mean of each metric (and of ``uncertainty``/``seconds``) over the rows that have it."""
    dicts = [_row_dict(r) for r in rows]
    summary: dict[str, float] = {}
    for key in ("uncertainty", "seconds", *METRICS):
        values = [v for r in dicts if (v := _number(r.get(key))) is not None]
        if values:
            summary[key] = float(np.mean(values))
    return summary


#: how :func:`folder_report`'s page starts (a rerun may replace a page that has it)
REPORT_TITLE = "<title>napari-focus quality report</title>"


def folder_report(rows: Sequence[Any], out_dir: str | os.PathLike, *, top: int = 10) -> Path:
    """Write ``metrics.csv`` and a self-contained ``report.html`` (inline SVG, no scripts)
    into ``out_dir``; returns the HTML path.

    ``rows`` are mappings (or objects with ``as_dict()``, such as ranking rows) with a
    ``name`` and any of ``uncertainty``, ``seconds`` and the :data:`METRICS` keys. The
    report has the mean metrics, the ``top`` worst images by IoU, the ``top`` slowest by
    ``seconds``, an IoU bar chart (worst first), uncertainty against 1 - IoU, and every
    row.
    """
    out = Path(out_dir)
    dicts = [_row_dict(r) for r in rows]
    write_csv(dicts, out / "metrics.csv")
    columns = report_columns(dicts)
    summary = summarize(dicts)

    failed = sum(1 for r in dicts if r.get("error"))
    counted = f"{len(dicts)} images"
    if failed:
        counted += f", {failed} of them failed (see the table)"
    sections = ["<h1>napari-focus quality report</h1>", f"<p>{html.escape(counted)}.</p>"]
    if summary:
        sections.append("<h2>Means</h2>" + _html_table([summary], list(summary)))
    with_iou = [r for r in dicts if _number(r.get("iou")) is not None]
    if with_iou:
        worst = sorted(with_iou, key=lambda r: _number(r["iou"]))[:top]
        sections.append(f"<h2>Worst {len(worst)} by IoU</h2>" + _html_table(worst, columns))
        sections.append(
            _svg_bars([str(r.get("name", "")) for r in worst], [r["iou"] for r in worst], "IoU")
        )
        points = [
            (u, 1 - _number(r["iou"]))
            for r in with_iou
            if (u := _number(r.get("uncertainty"))) is not None
        ]
        if points:
            sections.append(_svg_scatter(points, "uncertainty", "1 - IoU"))
    timed = [r for r in dicts if _number(r.get("seconds")) is not None]
    if timed:
        slow = sorted(timed, key=lambda r: -_number(r["seconds"]))[:top]
        sections.append(f"<h2>Slowest {len(slow)}</h2>" + _html_table(slow, columns))
    sections.append("<h2>All images</h2>" + _html_table(dicts, columns))
    document = (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f"{REPORT_TITLE}<style>"
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px;text-align:right}"
        "</style></head><body>" + "\n".join(sections) + "</body></html>\n"
    )
    return atomic_write(
        out / "report.html",
        lambda tmp: Path(tmp).write_text(document, encoding="utf-8", errors=CSV_ERRORS)
    )
