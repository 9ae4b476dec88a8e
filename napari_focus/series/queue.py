"""The image queue of a labeling series: items, statuses, navigation, ordering.

Each item has a stable ``key``: the POSIX path relative to the image folder for a folder
queue (``"sub/img_01.png"``), the layer name for a queue of open layers. Keys are what
the state file, the prefetch cache and scores refer to.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from .scan import scan_folder


class Status(StrEnum):
    """Where an item stands. ``pending``: no proposal yet; ``proposed``: a proposal (or a
    loaded mask) is shown; ``corrected``: the human edited it; ``accepted``: exported;
    ``rejected``: not usable; ``skipped``: left for later; ``failed``: the file cannot be
    read or is not a single 2-D image (:attr:`QueueItem.failure` says why); navigation
    passes over it."""

    PENDING = "pending"
    PROPOSED = "proposed"
    CORRECTED = "corrected"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    SKIPPED = "skipped"
    FAILED = "failed"


def now_iso() -> str:
    """Current UTC time, ISO 8601 with seconds (the timestamps of items)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class QueueItem:
    """One image of the series.

    key: stable id (relative POSIX path, or layer name).
    name: display name (file stem, or layer name).
    path: absolute image path; None for a layer.
    status: :class:`Status`.
    created / updated: ISO 8601 UTC times of creation and of the last status change.
    export: JSON-able record of the last export (see :func:`export_record`); None if never.
    autosaved: an edited mask was saved to the working folder and not yet exported.
    failure: why the item is ``failed`` (None otherwise).
    failed_from: the status a ``failed`` item had before its file could not be read (a
        drive gone for a moment must not undo a decision); it comes back on reopening.
    missing: the last scan did not find the image (moved, renamed, a drive not mounted,
        another pattern); the item keeps its status, export record and autosave, and
        navigation passes over it until a scan finds it again.
    fingerprint: ``{"size", "mtime_ns", "sha256"}`` of the image file when it was last
        hashed (for matching a renamed file, and for noticing changed pixels); or None.
    autosave_of: SHA-256 of the image file the autosaved mask was drawn on, or None.
    """

    key: str
    name: str
    path: Path | None = None
    status: Status = Status.PENDING
    created: str = field(default_factory=now_iso)
    updated: str | None = None
    export: dict[str, Any] | None = None
    autosaved: bool = False
    failure: str | None = None
    failed_from: Status | None = None
    missing: bool = False
    fingerprint: dict[str, Any] | None = None
    autosave_of: str | None = None

    @property
    def exported(self) -> bool:
        return self.export is not None or self.status is Status.ACCEPTED


class ImageQueue:
    """An ordered list of :class:`QueueItem` with a current position.

    Navigation with :meth:`next`/:meth:`previous` passes over exported items unless
    ``skip_exported`` is False (attribute, or per call); :meth:`jump` goes anywhere.
    """

    def __init__(
        self,
        items: Iterable[QueueItem] = (),
        *,
        folder: str | os.PathLike | None = None,
        skip_exported: bool = True,
    ) -> None:
        self.items: list[QueueItem] = list(items)
        keys = [item.key for item in self.items]
        if len(set(keys)) != len(keys):
            raise ValueError("queue items must have distinct keys")
        self.folder = Path(folder) if folder is not None else None
        self.skip_exported = skip_exported
        self._index = 0

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, **scan_options: Any) -> ImageQueue:
        """Queue of the images in ``folder``; ``scan_options`` (``recursive``,
        ``extensions``, ``pattern``, ``exclude``, ``found``) as :func:`scan_folder`'s."""
        root = Path(folder).resolve()
        keys = scan_folder(root, **scan_options)
        items = [cls.item_for_key(root, k) for k in keys]
        stems = Counter(_folder_and_stem(k) for k in keys)
        for item in items:  # a.png and a.jpg: named with their extension to tell apart
            if stems[_folder_and_stem(item.key)] > 1:
                item.name = Path(item.key).name
        return cls(items, folder=root)

    @classmethod
    def from_names(cls, names: Iterable[str]) -> ImageQueue:
        """Queue of napari layers by name (duplicates dropped, order kept)."""
        unique = dict.fromkeys(str(n) for n in names)
        return cls(QueueItem(key=n, name=n) for n in unique)

    @staticmethod
    def item_for_key(folder: Path | None, key: str) -> QueueItem:
        if folder is None:
            return QueueItem(key=key, name=key)
        return QueueItem(key=key, name=Path(key).stem, path=folder / key)

    # --- access -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[QueueItem]:
        return iter(self.items)

    def __getitem__(self, index: int) -> QueueItem:
        return self.items[index]

    def keys(self) -> list[str]:
        return [item.key for item in self.items]

    def index_of(self, key: str) -> int:
        for i, item in enumerate(self.items):
            if item.key == key:
                return i
        raise KeyError(key)

    def item(self, key: str) -> QueueItem:
        return self.items[self.index_of(key)]

    @property
    def index(self) -> int:
        """Position of the current item (0 for an empty queue)."""
        return self._index

    @property
    def current(self) -> QueueItem | None:
        return self.items[self._index] if self.items else None

    def position_text(self) -> str:
        """``"3 / 10"`` (1-based), or ``"0 / 0"``."""
        return f"{self._index + 1 if self.items else 0} / {len(self.items)}"

    def counts(self) -> dict[Status, int]:
        """Number of items in each status (every status present, 0 included)."""
        counts = dict.fromkeys(Status, 0)
        for item in self.items:
            counts[item.status] += 1
        return counts

    # --- navigation ---------------------------------------------------------------------

    def _visitable(self, include_exported: bool | None) -> Callable[[QueueItem], bool]:
        include = not self.skip_exported if include_exported is None else include_exported
        return lambda item: (
            not item.missing and item.status is not Status.FAILED and (include or not item.exported)
        )

    def _step(self, step: int, include_exported: bool | None) -> QueueItem | None:
        visitable = self._visitable(include_exported)
        i = self._index + step
        while 0 <= i < len(self.items):
            if visitable(self.items[i]):
                self._index = i
                return self.items[i]
            i += step
        return None

    def next(self, *, include_exported: bool | None = None) -> QueueItem | None:
        """Move to the next visitable item and return it; at the end return None and stay."""
        return self._step(1, include_exported)

    def previous(self, *, include_exported: bool | None = None) -> QueueItem | None:
        """Move to the previous visitable item and return it; at the start None, stay."""
        return self._step(-1, include_exported)

    def upcoming(
        self, count: int, *, start: int | None = None, include_exported: bool | None = None
    ) -> list[int]:
        """Indices of the next ``count`` visitable items after ``start`` (default: the
        current index), i.e. what :meth:`next` would reach, without moving."""
        visitable = self._visitable(include_exported)
        found: list[int] = []
        first = (self._index if start is None else start) + 1
        for i in range(first, len(self.items)):
            if len(found) >= count:
                break
            if visitable(self.items[i]):
                found.append(i)
        return found

    def preceding(
        self, count: int, *, start: int | None = None, include_exported: bool | None = None
    ) -> list[int]:
        """Indices of the ``count`` visitable items before ``start`` (default: the current
        index), nearest first, i.e. what :meth:`previous` would reach, without moving."""
        visitable = self._visitable(include_exported)
        first = (self._index if start is None else start) - 1
        found = [i for i in range(first, -1, -1) if visitable(self.items[i])]
        return found[:count]

    def jump(self, index: int) -> QueueItem:
        """Make item ``index`` current (negative counts from the end); IndexError if out
        of range."""
        if not -len(self.items) <= index < len(self.items):
            raise IndexError(f"queue index {index} out of range (0..{len(self.items) - 1})")
        self._index = index % len(self.items)
        return self.items[self._index]

    def first_open(self) -> int:
        """Index of the first present item not exported (else the first present item;
        0 if there is none)."""
        for i, item in enumerate(self.items):
            if not item.exported and not item.missing:
                return i
        return next((i for i, item in enumerate(self.items) if not item.missing), 0)

    # --- status -------------------------------------------------------------------------

    def _resolve(self, which: int | str | None) -> int:
        if which is None:
            if not self.items:
                raise IndexError("the queue is empty")
            return self._index
        if isinstance(which, str):
            return self.index_of(which)
        if not -len(self.items) <= which < len(self.items):
            raise IndexError(f"queue index {which} out of range")
        return which % len(self.items)

    def mark(self, which: int | str | None, status: Status | str) -> QueueItem:
        """Set the status of an item (index, key, or None for the current one) and stamp
        ``updated``. Any status may follow any other; ``export`` is kept (an exported
        item that is later rejected still names its exported files)."""
        item = self.items[self._resolve(which)]
        item.status = Status(status)
        item.updated = now_iso()
        if item.status is not Status.FAILED:
            item.failure = item.failed_from = None
        return item

    def mark_failed(self, which: int | str | None, reason: str) -> QueueItem:
        """Mark an item ``failed`` (unreadable, or not a single 2-D image) with why; the
        status it had is kept in ``failed_from``."""
        item = self.items[self._resolve(which)]
        before = item.failed_from if item.status is Status.FAILED else item.status
        item = self.mark(which, Status.FAILED)
        item.failure = reason
        item.failed_from = before if before is not Status.PENDING else None
        return item

    def record_export(self, which: int | str | None, record: Mapping[str, Any]) -> QueueItem:
        """Mark an item ``accepted`` with its export record (JSON-able mapping)."""
        item = self.mark(which, Status.ACCEPTED)
        item.export = dict(record)
        return item

    # --- ordering -----------------------------------------------------------------------

    def order_by(
        self, scores: Mapping[str, float] | Sequence[float], *, descending: bool = True
    ) -> None:
        """Reorder the items by score (a mapping key -> score, or one score per item in
        the current order). Ties and items without a score (or a NaN one) keep their
        relative order; unscored items go last. The current item stays current."""
        if isinstance(scores, Mapping):
            by_key = dict(scores)
        else:
            if len(scores) != len(self.items):
                raise ValueError(f"{len(scores)} scores for {len(self.items)} items")
            by_key = {item.key: s for item, s in zip(self.items, scores, strict=True)}
        current = self.current

        def sort_key(pair: tuple[int, QueueItem]) -> tuple[int, float, int]:
            position, item = pair
            score = by_key.get(item.key)
            if score is None or score != score:
                return (1, 0.0, position)
            return (0, -float(score) if descending else float(score), position)

        self.items = [item for _, item in sorted(enumerate(self.items), key=sort_key)]
        if current is not None:
            self._index = self.items.index(current)

    def reorder(self, keys: Sequence[str]) -> None:
        """Put the items in the order of ``keys`` (a permutation of :meth:`keys`)."""
        if sorted(keys) != sorted(self.keys()):
            raise ValueError("reorder needs every key of the queue exactly once")
        self.order_by({k: -i for i, k in enumerate(keys)})


def export_record(result: Any, *, relative_to: str | os.PathLike | None = None) -> dict:
    """JSON-able record of a :class:`napari_focus.datasets.ExportResult` for
    :meth:`ImageQueue.record_export`: layout, name, status, image and mask paths (relative
    to ``relative_to`` when inside it, else absolute) and the time."""

    def where(path: Path | None) -> str | None:
        if path is None:
            return None
        if relative_to is not None:
            try:
                return Path(path).resolve().relative_to(Path(relative_to).resolve()).as_posix()
            except ValueError:
                pass
        return str(Path(path).resolve())

    return {
        "layout": result.layout,
        "name": result.name,
        "status": result.status,
        "image": where(result.image),
        "mask": where(result.mask),
        "at": now_iso(),
    }


def _folder_and_stem(key: str) -> tuple[str, str]:
    """What makes two keys one stem: the folder and the stem, regardless of case."""
    path = Path(key)
    return path.parent.as_posix(), path.stem.casefold()
