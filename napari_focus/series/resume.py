"""Matching a saved series to a fresh scan: kept, missing, renamed and new items."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .queue import ImageQueue, QueueItem, Status
from .work_names import move_new

if TYPE_CHECKING:
    from .state import SeriesState


def file_fingerprint(path: Path, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"size", "mtime_ns", "sha256"}`` of a file; ``known`` is reused when its size
    and modification time still match (the file is then not read again)."""
    stat = path.stat()
    if known and known.get("size") == stat.st_size and known.get("mtime_ns") == stat.st_mtime_ns:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}


def restore_items(
    saved: list[dict[str, Any]], queue: ImageQueue, folder: Path | None
) -> tuple[list[QueueItem], list[QueueItem]]:
    """Saved items in saved order (those the scan did not find flagged ``missing``), and
    the items the scan found that the state did not know, in scan order."""
    present = {item.key: item for item in queue}
    restored: list[QueueItem] = []
    seen: set[str] = set()
    for entry in saved:
        key = entry["key"]
        if key in seen:
            continue  # a duplicated entry in a hand-edited file
        seen.add(key)
        found = present.pop(key, None)
        item = found or ImageQueue.item_for_key(folder, key)
        if found is None:  # a scanned file is named by this scan (cat.png beside cat.jpg)
            item.name = str(entry.get("name") or item.name)
        item.created = str(entry.get("created") or item.created)
        apply_entry(item, entry)
        item.missing = found is None
        if item.status is Status.FAILED:  # the file may have been fixed: try it again,
            item.status = item.failed_from or Status.PENDING  # with the decision it had
            item.failure = item.failed_from = None
        if item.missing and not has_decisions(item):
            continue  # an untouched pending item: nothing to keep
        restored.append(item)
    return restored, list(present.values())


def apply_entry(item: QueueItem, entry: dict[str, Any]) -> None:
    """Give ``item`` the status, export record and autosave of a state file entry
    (validated by the state file's parser)."""
    item.status = Status(entry.get("status", "pending"))
    item.updated = entry.get("updated")
    export = entry.get("export")
    item.export = export if isinstance(export, dict) else None
    item.autosaved = bool(entry.get("autosaved", False))
    failure = entry.get("failure")
    item.failure = failure if isinstance(failure, str) else None
    item.failed_from = _decision(entry.get("failed_from"))
    fingerprint = entry.get("fingerprint")
    item.fingerprint = fingerprint if _valid_fingerprint(fingerprint) else None
    autosave_of = entry.get("autosave_of")
    item.autosave_of = autosave_of if isinstance(autosave_of, str) else None


def _decision(value: Any) -> Status | None:
    try:
        status = Status(value)
    except ValueError:
        return None
    return status if status not in (Status.PENDING, Status.FAILED) else None


def has_decisions(item: QueueItem) -> bool:
    """Whether anything was decided or saved for ``item`` (it is not just listed)."""
    return (
        item.status is not Status.PENDING
        or item.export is not None
        or item.autosaved
        or item.updated is not None
    )


def _valid_fingerprint(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("size"), int)
        and isinstance(value.get("mtime_ns"), int)
        and isinstance(value.get("sha256"), str)
    )


def match_renames(state: SeriesState, restored: list[QueueItem], new: list[QueueItem]) -> None:
    """A new file with the content of a missing item is that item, renamed: the item
    takes the new key (status, export record and autosave follow; the autosaved mask
    file is renamed too) and the new file is no longer listed separately."""
    by_size: dict[int, list[QueueItem]] = {}
    for item in restored:
        if item.missing and item.fingerprint is not None:
            by_size.setdefault(item.fingerprint["size"], []).append(item)
    if not by_size:
        return
    for candidate in list(new):
        if candidate.path is None:
            continue
        try:
            if candidate.path.stat().st_size not in by_size:
                continue  # only files of a matching size are read
            fingerprint = file_fingerprint(candidate.path)
        except OSError:
            continue
        same = by_size[fingerprint["size"]]
        old = next((i for i in same if i.fingerprint["sha256"] == fingerprint["sha256"]), None)
        if old is None:
            continue
        same.remove(old)
        before = state.autosave_path(old.key)
        old_key = old.key
        old.key, old.name, old.path = candidate.key, candidate.name, candidate.path
        old.missing, old.fingerprint = False, fingerprint
        after = state.autosave_path(old.key)
        for suffix in (".png", ".json"):  # the mask and its provenance
            source, target = before.with_suffix(suffix), after.with_suffix(suffix)
            if source.is_file():
                move_new(source, target)  # never over a file that is there already
        new.remove(candidate)
        state.renamed[old_key] = old.key


def detach_shared(state: SeriesState, items: list[QueueItem]) -> None:
    """Items whose autosave was a file several keys shared have none now."""
    owners = {key for keys in state.unattached.values() for key in keys}
    for item in items:
        if item.key in owners and item.autosaved and not state.autosave_path(item.key).is_file():
            item.autosaved, item.autosave_of = False, None
