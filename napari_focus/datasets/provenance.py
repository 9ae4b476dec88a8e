"""Provenance records: one JSON line per export in ``<root>/napari_focus_provenance.jsonl``.

Each line is a JSON object with:

* ``time`` (UTC, ISO 8601), ``layout``, ``name`` (final sample name), ``status``
  (``written`` or ``replaced``), ``files`` (paths relative to the root);
* ``source_path`` and ``source_sha256``: SHA-256 of the source pixels, i.e. of the
  C-ordered bytes of the image array as given to the exporter, with ``source_shape`` and
  ``source_dtype`` (re-reading the source with :func:`napari_focus.io.read_image`
  reproduces it);
* ``task``, ``model_size``, ``weights_id``, ``weights_revision``, ``threshold``,
  ``cleanup`` (whatever settings dict the caller passes);
* ``proposal``: ``{"changed_fraction", "iou"}`` between the model's proposal and the
  exported mask (both taken ``> 0``; IoU of two empty masks is 1.0), or null when no
  proposal was given; ``extra``: any other caller-supplied keys.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ExportError

PROVENANCE_NAME = "napari_focus_provenance.jsonl"


@dataclass
class Provenance:
    """What the caller knows about where a mask came from. Every field is optional."""

    source_path: str | None = None
    task: str | None = None
    model_size: str | None = None
    weights_id: str | None = None
    weights_revision: str | None = None
    threshold: float | None = None
    cleanup: dict[str, Any] | None = None
    proposal: np.ndarray | None = None  # the model's mask before human correction
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def coerce(cls, value: Provenance | Mapping[str, Any] | None) -> Provenance:
        if value is None:
            return cls()
        if isinstance(value, Provenance):
            return value
        if not isinstance(value, Mapping):
            raise ExportError(f"provenance must be a Provenance or a mapping, got {value!r}")
        known = {f.name for f in fields(cls)} - {"extra"}
        data = {k: v for k, v in value.items() if k in known}
        extra = {k: v for k, v in value.items() if k not in known}
        extra.update(value.get("extra") or {})
        return cls(**data, extra=extra)


def pixels_sha256(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def proposal_change(proposal: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Changed-pixel fraction and IoU between a proposal and the final mask."""
    before = np.asarray(proposal) > 0
    after = np.asarray(mask) > 0
    union = int(np.count_nonzero(before | after))
    inter = int(np.count_nonzero(before & after))
    changed = int(np.count_nonzero(before != after))
    return {
        "changed_fraction": changed / after.size if after.size else 0.0,
        "iou": inter / union if union else 1.0,
    }


def check_proposal(info: Provenance, mask_shape: tuple[int, ...]) -> None:
    if info.proposal is not None and np.shape(info.proposal) != mask_shape:
        raise ExportError(
            f"proposal shape {np.shape(info.proposal)} does not match the mask {mask_shape}"
        )


def build_record(
    info: Provenance,
    *,
    layout: str,
    name: str,
    status: str,
    files: list[str],
    image: np.ndarray,
    mask: np.ndarray,
) -> dict[str, Any]:
    array = np.asarray(image)
    return {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "layout": layout,
        "name": name,
        "status": status,
        "files": files,
        "source_path": None if info.source_path is None else str(info.source_path),
        "source_sha256": pixels_sha256(array),
        "source_shape": list(array.shape),
        "source_dtype": str(array.dtype),
        "task": info.task,
        "model_size": info.model_size,
        "weights_id": info.weights_id,
        "weights_revision": info.weights_revision,
        "threshold": info.threshold,
        "cleanup": info.cleanup,
        "proposal": None if info.proposal is None else proposal_change(info.proposal, mask),
        "extra": info.extra,
    }


def append_record(root: Path, record: dict[str, Any]) -> Path:
    """Append one line with a single ``write`` (call it while holding the root lock).

    If an earlier writer was killed mid-line, a newline is written first so that the
    damage stays confined to that one unparseable line.
    """
    path = root / PROVENANCE_NAME
    line = json.dumps(record, default=_json_default, ensure_ascii=False) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and not _ends_with_newline(path, size):
            line = "\n" + line
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_records(root: Path) -> list[dict[str, Any]]:
    """All parseable provenance lines (a torn line from a crash is skipped)."""
    path = root / PROVENANCE_NAME
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _ends_with_newline(path: Path, size: int) -> bool:
    with open(path, "rb") as handle:
        handle.seek(size - 1)
        return handle.read(1) == b"\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)
