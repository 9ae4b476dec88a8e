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
and the series resumes from the previous state file ``.napari_focus_queue.json.bak`` when
that one is readable (:attr:`SeriesState.restored_backup`), else starts afresh
(:attr:`SeriesState.recovered_from` names the set-aside file, for the UI to warn); with
``on_corrupt="raise"`` it raises :class:`SeriesStateError`. A file of a newer ``version``
always raises: it was written by a newer napari-focus and is left alone.
"""

from __future__ import annotations

import contextlib
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
from ..io import IMAGE_EXTENSIONS, write_mask
from ..mask_files import read_mask_file
from .queue import ImageQueue, QueueItem, Status, scan_folder
from .resume import file_fingerprint, match_renames, restore_items

STATE_NAME = ".napari_focus_queue.json"
SCHEMA = "napari-focus-queue"
BACKUP_SUFFIX = ".bak"
VERSION = 1
WORK_DIR = "work"
log = logging.getLogger(__name__)


class SeriesStateError(RuntimeError):
    """The state file cannot be used."""


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
    #: the backup the series was resumed from when the state file was unreadable
    restored_backup: Path | None = None
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
                    "failure": item.failure,
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

    def autosave(
        self, key: str, mask: np.ndarray, provenance: dict[str, Any] | None = None
    ) -> Path:
        """Save an edited mask (``> 0`` = foreground) as ``work/<work name>.png`` (0/255)
        and, when given, where it came from (task, model, refinement) as
        ``work/<work name>.json``; flag the item, mark it ``corrected`` if it was
        ``pending``/``proposed``, and save the state. OSError (e.g. a full disk) leaves
        the previous autosave in place."""
        item = self.queue.item(key)
        if provenance is not None:
            text = json.dumps(provenance, ensure_ascii=False, default=str)
            atomic_write_text(self.autosave_path(key).with_suffix(".json"), text)
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
        return read_mask_file(path)

    def autosaved_provenance(self, key: str) -> dict[str, Any] | None:
        """What the autosaved mask of an item was made from, if recorded."""
        try:
            data = json.loads(self.autosave_path(key).with_suffix(".json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def discard_autosaved(self, key: str) -> None:
        """Delete an item's autosaved mask (e.g. once exported) and clear its flag."""
        self._remove_autosave_files(key)
        item = self.queue.item(key)
        item.autosaved, item.autosave_of = False, None
        self.save()

    def _remove_autosave_files(self, key: str) -> None:
        self.autosave_path(key).unlink(missing_ok=True)
        self.autosave_path(key).with_suffix(".json").unlink(missing_ok=True)

    # --- status helpers that persist ----------------------------------------------------

    def mark(self, which: int | str | None, status: Status | str) -> QueueItem:
        item = self.queue.mark(which, status)
        self._fingerprint(item)
        self.save()
        return item

    def mark_failed(self, which: int | str | None, reason: str) -> QueueItem:
        item = self.queue.mark_failed(which, reason)
        self.save()
        return item

    def record_export(self, which: int | str | None, record: dict[str, Any]) -> QueueItem:
        item = self.queue.record_export(which, record)
        self._fingerprint(item)
        self.save()
        return item

    def record_accept(self, key: str, record: dict[str, Any]) -> QueueItem:
        """An accepted, exported item in one save: its export record, status ACCEPTED,
        and no autosaved mask any more (the files go once the state says so)."""
        item = self.queue.record_export(key, record)
        self.queue.mark(key, Status.ACCEPTED)
        self._fingerprint(item)
        item.autosaved, item.autosave_of = False, None
        self.save()
        self._remove_autosave_files(key)
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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise SeriesStateError(f"cannot read {path}: {error}") from error
    return _parse(data, path)


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
    nothing is forgotten when a drive is not mounted yet or another pattern is used; a
    new file with the content of a missing one takes over its record (a rename, listed
    in :attr:`SeriesState.renamed`); other new ones are appended (pending). Saved
    order, statuses, export records and the current item are kept; if the saved
    current item is missing, the first present not-exported item is current.
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
    data = None
    if path.exists():
        try:
            data = read_state_file(path)
        except _NewerVersionError:
            raise
        except SeriesStateError:
            if on_corrupt == "raise":
                raise
            bad = path.with_name(f"{STATE_NAME}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(path, bad)
            state.recovered_from = bad
            with contextlib.suppress(SeriesStateError):  # the previous state, if usable
                data = read_state_file(state.backup_path)
                state.restored_backup = state.backup_path
    if data is not None:
        restored, new = restore_items(data["items"], queue, queue.folder)
        match_renames(state, restored, new)
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
    "file_fingerprint",
    "load_or_create",
    "read_state_file",
    "scan_folder",
    "work_name",
]
