"""Persistence of a labeling series: the queue state file and the working folder.

State file ``<output>/.napari_focus_queue.json`` (UTF-8 JSON, written atomically)::

    {"schema": "napari-focus-queue", "version": 1,
     "folder": "../images",            # image folder, relative to the output folder
     "folder_absolute": "/data/images",
     "current": "sub/img_02.png",      # key of the current item
     "settings": {"recursive": false, "pattern": null, "extensions": [".png", ...]},
     "items": [{"key": "sub/img_01.png", "name": "img_01", "status": "accepted",
                "created": "...", "updated": "...", "export": {...}, "autosaved": false},
               ...]}                   # in queue order, so a reordering survives

Items also carry ``"missing"`` (the last scan did not find the image: kept with its
status, export record and autosave, passed over by navigation; an untouched pending item
is simply dropped), ``"fingerprint"``
(``{"size", "mtime_ns", "sha256"}`` of the image file, taken when the item gets a status,
an export or an autosave) and ``"autosave_of"`` (SHA-256 of the image the autosaved mask
was drawn on). A scan that finds a new file with the SHA-256 of a missing item treats it
as that item renamed (status, export record and autosave follow it); an autosave whose
image no longer has that SHA-256 is set aside (``work/<work name>.stale-<time>.png``),
never shown on other pixels. Each rewrite of the state file first keeps the previous
one as ``.napari_focus_queue.json.bak``.

Keys are POSIX paths relative to the image folder, so the output and image folders may
move together. Autosaved edits live in ``<output>/work/<work name>.png`` (0/255), the
work name being the key without its extension, ``/`` replaced by ``__``.

A state file that cannot be read (bad JSON, wrong layout, or ``version`` not an int) is,
with ``on_corrupt="backup"`` (default), renamed to ``.napari_focus_queue.json.bad-<time>``
and the series starts afresh (:attr:`SeriesState.recovered_from` names the backup, for the
UI to warn); with ``on_corrupt="raise"`` it raises :class:`SeriesStateError`. A file of a
newer ``version`` always raises: it was written by a newer napari-focus and is left alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..atomic import atomic_write_text, temp_path
from ..io import IMAGE_EXTENSIONS, read_image, write_mask
from .queue import ImageQueue, QueueItem, Status, scan_folder

STATE_NAME = ".napari_focus_queue.json"
SCHEMA = "napari-focus-queue"
BACKUP_SUFFIX = ".bak"
VERSION = 1
WORK_DIR = "work"
log = logging.getLogger(__name__)


class SeriesStateError(RuntimeError):
    """The state file cannot be used."""


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


def work_name(key: str) -> str:
    """File stem of an item's autosaved mask: key without extension, ``/`` -> ``__``."""
    path = Path(key)
    stem = path.with_suffix("").as_posix() if path.suffix else key
    return stem.replace("/", "__").replace("\\", "__")


@dataclass
class SeriesState:
    """A queue bound to its output folder. Call :meth:`save` after changes (the mutating
    helpers here do it themselves)."""

    output_folder: Path
    queue: ImageQueue
    settings: dict[str, Any] = field(default_factory=dict)
    recovered_from: Path | None = None
    #: renamed files recognised by content on opening: old key -> new key
    renamed: dict[str, str] = field(default_factory=dict)
    #: autosaves set aside because their image changed: key -> set-aside file
    stale_autosaves: dict[str, Path] = field(default_factory=dict)

    @property
    def state_path(self) -> Path:
        return self.output_folder / STATE_NAME

    @property
    def work_folder(self) -> Path:
        return self.output_folder / WORK_DIR

    # --- saving -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        folder = self.queue.folder
        relative = None
        if folder is not None:
            relative = Path(os.path.relpath(folder, self.output_folder.resolve())).as_posix()
        current = self.queue.current
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "folder": relative,
            "folder_absolute": str(folder) if folder is not None else None,
            "current": current.key if current is not None else None,
            "settings": self.settings,
            "items": [
                {
                    "key": item.key,
                    "name": item.name,
                    "status": item.status.value,
                    "created": item.created,
                    "updated": item.updated,
                    "export": item.export,
                    "autosaved": item.autosaved,
                    "missing": item.missing,
                    "fingerprint": item.fingerprint,
                    "autosave_of": item.autosave_of,
                }
                for item in self.queue
            ],
        }

    @property
    def backup_path(self) -> Path:
        return self.output_folder / (STATE_NAME + BACKUP_SUFFIX)

    def save(self) -> Path:
        """Write the state file atomically, the previous one kept as the backup.

        Raises:
            napari_focus.atomic.WriteError: the file could not be written (e.g. the disk
                is full); the previous state file is unchanged.
        """
        text = json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n"
        _keep_backup(self.state_path, self.backup_path)
        return atomic_write_text(self.state_path, text)

    def _fingerprint(self, item: QueueItem) -> None:
        if item.path is None:
            return
        with contextlib.suppress(OSError):  # gone or unreadable: keep the last one known
            item.fingerprint = file_fingerprint(item.path, item.fingerprint)

    # --- working folder -----------------------------------------------------------------

    def autosave_path(self, key: str) -> Path:
        return self.work_folder / f"{work_name(key)}.png"

    def autosave(self, key: str, mask: np.ndarray) -> Path:
        """Save an edited mask (``> 0`` = foreground) as ``work/<work name>.png`` (0/255),
        flag the item, mark it ``corrected`` if it was ``pending``/``proposed``, and save
        the state."""
        item = self.queue.item(key)
        path = write_mask(self.autosave_path(key), mask)
        self._fingerprint(item)
        item.autosave_of = item.fingerprint["sha256"] if item.fingerprint else None
        item.autosaved = True
        if item.status in (Status.PENDING, Status.PROPOSED):
            self.queue.mark(key, Status.CORRECTED)
        self.save()
        return path

    def load_autosaved(self, key: str) -> np.ndarray | None:
        """The autosaved mask of an item as a bool ``(H, W)`` array, or None. An autosave
        drawn on other pixels than the image file has now is set aside (listed in
        :attr:`stale_autosaves`) and None is returned."""
        path = self.autosave_path(key)
        if not path.is_file():
            return None
        item = self.queue.item(key)
        if item.autosave_of is not None and item.path is not None:
            self._fingerprint(item)
            if item.fingerprint is not None and item.fingerprint["sha256"] != item.autosave_of:
                aside = path.with_name(f"{path.stem}.stale-{time.strftime('%Y%m%d-%H%M%S')}.png")
                os.replace(path, aside)
                item.autosaved, item.autosave_of = False, None
                self.stale_autosaves[key] = aside
                log.warning("%s changed since its mask was autosaved; set aside as %s",
                            item.path, aside)  # fmt: skip
                self.save()
                return None
        data = read_image(path)
        if data.ndim == 3:
            data = data[..., 0]
        return data > 0

    def discard_autosaved(self, key: str) -> None:
        """Delete an item's autosaved mask (e.g. once exported) and clear its flag."""
        self.autosave_path(key).unlink(missing_ok=True)
        item = self.queue.item(key)
        item.autosaved, item.autosave_of = False, None
        self.save()

    # --- status helpers that persist ----------------------------------------------------

    def mark(self, which: int | str | None, status: Status | str) -> QueueItem:
        item = self.queue.mark(which, status)
        self._fingerprint(item)
        self.save()
        return item

    def record_export(self, which: int | str | None, record: dict[str, Any]) -> QueueItem:
        item = self.queue.record_export(which, record)
        self._fingerprint(item)
        self.save()
        return item


def _keep_backup(path: Path, backup: Path) -> None:
    """Make ``backup`` the current ``path`` (a hard link, else a copy), atomically."""
    if not path.is_file():
        return
    tmp = temp_path(backup)
    try:
        try:
            os.link(path, tmp)
        except OSError:
            tmp.write_bytes(path.read_bytes())
        os.replace(tmp, backup)
    except OSError as error:  # the new state is still written; say the backup was not
        log.warning("could not keep a backup of %s: %s", path, error)
        tmp.unlink(missing_ok=True)


class _NewerVersionError(SeriesStateError):
    pass


def _parse(data: Any, path: Path) -> dict[str, Any]:
    """Validate the JSON layout; SeriesStateError(kind) names what is wrong."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise SeriesStateError(f"{path} is not a napari-focus queue state file")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SeriesStateError(f"{path} has no valid version")
    if version > VERSION:
        raise _NewerVersionError(
            f"{path} has state version {version}; this napari-focus reads up to {VERSION}. "
            "Update napari-focus, or move the file away to start over."
        )
    items = data.get("items")
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("key"), str) for i in items
    ):
        raise SeriesStateError(f"{path} has no valid item list")
    for item in items:
        try:
            Status(item.get("status", "pending"))
        except ValueError as error:
            raise SeriesStateError(f"{path}: {error}") from None
    return data


def read_state_file(path: str | os.PathLike) -> dict[str, Any]:
    """The validated JSON of a state file; SeriesStateError if unusable."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SeriesStateError(f"cannot read {path}: {error}") from error
    return _parse(data, path)


def _restore_items(
    saved: list[dict[str, Any]], queue: ImageQueue, folder: Path | None
) -> tuple[list[QueueItem], list[QueueItem]]:
    """Saved items in saved order (those the scan did not find flagged ``missing``), and
    the items the scan found that the state did not know, in scan order."""
    present = {item.key: item for item in queue}
    restored: list[QueueItem] = []
    for entry in saved:
        key = entry["key"]
        if any(item.key == key for item in restored):
            continue  # a duplicated entry in a hand-edited file
        found = present.pop(key, None)
        item = found or ImageQueue.item_for_key(folder, key)
        item.name = str(entry.get("name") or item.name)
        item.status = Status(entry.get("status", "pending"))
        item.created = str(entry.get("created") or item.created)
        item.updated = entry.get("updated")
        export = entry.get("export")
        item.export = export if isinstance(export, dict) else None
        item.autosaved = bool(entry.get("autosaved", False))
        fingerprint = entry.get("fingerprint")
        item.fingerprint = fingerprint if _valid_fingerprint(fingerprint) else None
        autosave_of = entry.get("autosave_of")
        item.autosave_of = autosave_of if isinstance(autosave_of, str) else None
        item.missing = found is None
        if item.missing and not _worth_keeping(item):
            continue  # an untouched pending item: nothing to keep
        restored.append(item)
    return restored, list(present.values())


def _worth_keeping(item: QueueItem) -> bool:
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


def _match_renames(state: SeriesState, restored: list[QueueItem], new: list[QueueItem]) -> None:
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
        if before.is_file():
            after = state.autosave_path(old.key)
            if not after.exists():
                os.replace(before, after)
        new.remove(candidate)
        state.renamed[old_key] = old.key


def load_or_create(
    output_folder: str | os.PathLike,
    folder: str | os.PathLike | None = None,
    *,
    names: Iterable[str] | None = None,
    recursive: bool = False,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    pattern: str | None = None,
    on_corrupt: Literal["backup", "raise"] = "backup",
) -> SeriesState:
    """Open the series of ``folder`` (or of layer ``names``) whose state lives in
    ``output_folder``, resuming where it stopped, or start it.

    The folder is scanned now: images the scan does not find are kept, flagged
    ``missing``, unless they were untouched (pending, never exported or autosaved), so
    nothing is forgotten when a drive is not mounted yet or another pattern is used; a new file with the content of a missing one takes over its record (a
    rename, listed in :attr:`SeriesState.renamed`), other new ones are appended
    (pending). Saved order, statuses, export records and the current item are kept; if
    the saved current item is missing, the first present not-exported item is current.
    The state is saved before returning (the previous file kept as the backup). An
    output folder inside the image folder is not scanned.
    """
    if (folder is None) == (names is None):
        raise ValueError("give either an image folder or layer names")
    output = Path(output_folder)
    exts = [e.lower() for e in extensions]
    if folder is not None:
        queue = ImageQueue.from_folder(
            folder, recursive=recursive, extensions=exts, pattern=pattern, exclude=[output]
        )
    else:
        queue = ImageQueue.from_names(names or ())
    settings = {"recursive": recursive, "pattern": pattern, "extensions": exts}
    state = SeriesState(output, queue, settings)

    path = state.state_path
    if path.exists():
        try:
            data = read_state_file(path)
        except _NewerVersionError:
            raise
        except SeriesStateError:
            if on_corrupt == "raise":
                raise
            backup = path.with_name(f"{STATE_NAME}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(path, backup)
            state.recovered_from = backup
        else:
            restored, new = _restore_items(data["items"], queue, queue.folder)
            _match_renames(state, restored, new)
            queue.items = restored + new
            current = state.renamed.get(data.get("current"), data.get("current"))
            keys = queue.keys()
            if current in keys and not queue[keys.index(current)].missing:
                queue.jump(keys.index(current))
            elif keys:
                queue.jump(queue.first_open())
    output.mkdir(parents=True, exist_ok=True)
    state.save()
    return state


__all__ = [
    "STATE_NAME",
    "VERSION",
    "SeriesState",
    "SeriesStateError",
    "load_or_create",
    "read_state_file",
    "scan_folder",
    "work_name",
]
