"""Several writers of one series: what each saved since the other last read it survives.

Every save of a :class:`~napari_focus.series.state.SeriesState` happens under the
series' lock file and re-reads the state file when another writer replaced it since this
one last read or wrote it. The merge is per item, three ways, against the entries as
this writer last synced them: an item the other writer changed and this one did not
takes the other's status, export record and autosave; an item only this writer changed
keeps its own; an item both changed keeps the later save's (this one), but never loses
an export record (the exported files exist). Items only the other writer knows (files
it found) are added; the other writer's order is taken when this one did not reorder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .queue import ImageQueue, QueueItem
from .resume import apply_entry, has_decisions

#: what a user or a run decided about an item (not facts of its file, like a fingerprint)
DECISIONS = (
    "status", "updated", "export", "autosaved", "autosave_of", "failure", "failed_from",
)  # fmt: skip


def item_record(item: QueueItem) -> dict[str, Any]:
    """The state file entry of an item."""
    return {
        "key": item.key,
        "name": item.name,
        "status": item.status.value,
        "created": item.created,
        "updated": item.updated,
        "export": dict(item.export) if item.export is not None else None,
        "autosaved": item.autosaved,
        "failure": item.failure,
        "failed_from": item.failed_from.value if item.failed_from is not None else None,
        "missing": item.missing,
        "fingerprint": dict(item.fingerprint) if item.fingerprint is not None else None,
        "autosave_of": item.autosave_of,
    }


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is replaced: inode, size, modification time."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


@dataclass
class Synced:
    """The state file as this writer last read or wrote it."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    stamp: tuple[int, int, int] | None = None

    def remember(self, records: list[dict[str, Any]], stamp: tuple[int, int, int] | None) -> None:
        self.records = {}
        for record in records:
            self.records.setdefault(record["key"], record)
        self.order = list(self.records)
        self.stamp = stamp


def _decisions(record: dict[str, Any] | None) -> tuple[Any, ...] | None:
    return None if record is None else tuple(record.get(name) for name in DECISIONS)


def merge_saved(queue: ImageQueue, synced: Synced, saved: list[dict[str, Any]]) -> list[str]:
    """Bring into ``queue`` what another writer ``saved`` (the state file's validated
    items) since ``synced``; returns the keys whose entry came from the other writer."""
    mine = {item.key: item for item in queue}
    theirs: dict[str, dict[str, Any]] = {}
    for record in saved:
        theirs.setdefault(record["key"], record)
    taken: list[str] = []
    for key, record in theirs.items():
        base = synced.records.get(key)
        item = mine.get(key)
        if item is None:
            if base is None:  # a file the other writer found: add it
                item = ImageQueue.item_for_key(queue.folder, key)
                item.name = str(record.get("name") or item.name)
                item.created = str(record.get("created") or item.created)
                apply_entry(item, record)
                item.missing = bool(record.get("missing", False))
                queue.items.append(item)
                mine[key] = item
                taken.append(key)
            continue  # else this writer dropped or renamed it
        if base is not None and _decisions(record) == _decisions(base):
            continue  # the other writer did not change it
        own = item_record(item)
        if _decisions(own) == _decisions(record):
            continue  # the same decision on both sides
        # an item found by both writers since this one last synced has no base
        changed = has_decisions(item) if base is None else _decisions(own) != _decisions(base)
        if changed:
            if item.export is None and isinstance(record.get("export"), dict):
                item.export = dict(record["export"])  # its files exist: keep naming them
            continue
        apply_entry(item, record)
        taken.append(key)
    if queue.keys()[: len(synced.order)] == synced.order:  # this writer did not reorder
        _take_order(queue, [key for key in theirs if key in mine])
    return taken


def _take_order(queue: ImageQueue, order: list[str]) -> None:
    """Put the items in ``order`` (those it does not name after them, as they were);
    the current item stays current."""
    rank = {key: i for i, key in enumerate(order)}
    current = queue.current
    positions = {id(item): i for i, item in enumerate(queue.items)}
    queue.items.sort(key=lambda item: (rank.get(item.key, len(rank)), positions[id(item)]))
    if current is not None:
        queue.jump(next(i for i, item in enumerate(queue.items) if item is current))
