"""Provenance records: one JSON line per export in ``<root>/napari_focus_provenance.jsonl``.

Each line is a JSON object with:

* ``time`` (UTC, ISO 8601), ``layout``, ``name`` (final sample name), ``status``
  (``written`` or ``replaced``), ``files`` (paths relative to the root);
* ``source_path`` and ``source_sha256``: SHA-256 of the source pixels, i.e. of the
  C-ordered bytes of the image array as given to the exporter, with ``source_shape`` and
  ``source_dtype`` (re-reading the source with :func:`napari_focus.io.read_image`
  reproduces it); ``image_file``: how the exported image file was made (copied from
  the source file, copied without its EXIF/XMP metadata, or encoded as PNG or as JPEG
  at quality 95: a lossy second encoding of a JPEG source, e.g. one whose EXIF
  orientation had to be applied to its pixels);
* ``task``, ``model_size``, ``weights_id``, ``weights_revision``, ``threshold``,
  ``cleanup`` (whatever settings dict the caller passes);
* ``proposal``: ``{"changed_fraction", "iou"}`` between the model's proposal and the
  exported mask (both taken ``> 0``; IoU of two empty masks is 1.0), or null when no
  proposal was given; ``extra``: any other caller-supplied keys.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..fs_text import json_text
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
        extra = {k: v for k, v in value.items() if k not in known and k != "extra"}
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
    image_file: str | None = None,
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
        "image_file": image_file,
        "task": info.task,
        "model_size": info.model_size,
        "weights_id": info.weights_id,
        "weights_revision": info.weights_revision,
        "threshold": info.threshold,
        "cleanup": info.cleanup,
        "proposal": None if info.proposal is None else proposal_change(info.proposal, mask),
        "extra": info.extra,
    }


def record_line(record: dict[str, Any]) -> str:
    """The record as its line of the log (a transaction's journal carries it)."""
    return json_text(record, default=_json_default) + "\n"


def holds_line(root: Path, line: str) -> bool:
    """Whether the log already holds ``line`` (a killed export may have appended it
    before it could delete its journal)."""
    path = root / PROVENANCE_NAME
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return False
    return line.rstrip("\n") in text.split("\n")


def append_line(root: Path, line: str) -> Path:
    """Append one line (call it while holding the root lock): the whole line is written
    and flushed, or the file is cut back to its previous length and an ``OSError`` is
    raised, so a full disk never leaves a torn line that was reported as written.

    If an earlier writer was killed mid-line, a newline is written first so that the
    damage stays confined to that one unparseable line.
    """
    path = root / PROVENANCE_NAME
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        if size and not _ends_with_newline(path, size):
            line = "\n" + line
        data = memoryview(line.encode("utf-8"))
        try:
            while data:
                written = os.write(fd, data)
                if written <= 0:  # pragma: no cover - os.write raises rather than return 0
                    raise OSError(errno.ENOSPC, "short write", str(path))
                data = data[written:]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):  # else the reader skips the torn line
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
    return path


@dataclass
class ProvenanceLog:
    """The parseable records of a provenance file and the 1-based numbers of the lines
    that could not be parsed (a torn last line after a crash, or damage)."""

    records: list[dict[str, Any]]
    skipped_lines: list[int]


def read_log(root: Path) -> ProvenanceLog:
    """All records, and which lines were skipped."""
    path = root / PROVENANCE_NAME
    log = ProvenanceLog([], [])
    if not path.exists():
        return log
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            record = None
        if isinstance(record, dict):
            log.records.append(record)
        else:
            log.skipped_lines.append(number)
    return log


def last_records(root: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """``(layout, case-folded name)`` -> the last record of that sample that did
    something (written, replaced, renamed or ``removed``; ``skipped`` ones left out)."""
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for record in read_log(root).records:
        if record.get("status") != "skipped":
            where = (str(record.get("layout")), str(record.get("name", "")).casefold())
            last[where] = record
    return last


def read_records(root: Path) -> list[dict[str, Any]]:
    """All parseable provenance lines; unparseable ones (a torn line from a crash) are
    skipped and reported with a ``UserWarning`` naming the file and line numbers."""
    log = read_log(root)
    if log.skipped_lines:
        warnings.warn(
            f"{root / PROVENANCE_NAME}: skipped {len(log.skipped_lines)} unreadable line(s) "
            f"(line {', '.join(map(str, log.skipped_lines[:10]))}), e.g. a record torn by a "
            "crash",
            stacklevel=2,
        )
    return log.records


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
