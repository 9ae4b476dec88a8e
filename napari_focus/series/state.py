"""Persistence of a labeling series: the queue state file and the working folder.

The state file ``<output>/.napari_focus_queue.json`` is described in :mod:`.state_file`.
A scan that finds a new file with the SHA-256 of a missing item treats it as that item
renamed (status, export record and autosave follow it); an autosave whose image no
longer has the SHA-256 it was drawn on is set aside
(``work/<work name>.stale-<time>.png``), never shown on other pixels. Each rewrite of
the state file first keeps the previous one as ``.napari_focus_queue.json.bak``.

Keys are POSIX paths relative to the image folder, so the output and image folders may
move together. Autosaved edits live in ``<output>/work/<work name>.png`` (0/255), the
work name being the key, escaped, and a digest of it (:mod:`.work_names`).

Several writers (two viewers on a shared folder, a cluster run ordering the series
while someone annotates) may save one series: each save holds the lock file
``<output>/.napari_focus_queue.lock`` and merges what the others saved meanwhile
(:mod:`.merge`), so no status or export record is lost.

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
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import WriteError, atomic_write_text, set_aside
from ..filelock import LockTimeout, held
from ..mask_files import read_mask_file
from .autosave_writer import write_autosave_files
from .item_files import read_provenance
from .merge import Synced, file_stamp, item_record, merge_saved
from .proposal_store import FOLDER as PROPOSALS
from .queue import ImageQueue, QueueItem, Status, scan_folder
from .resume import file_fingerprint
from .state_file import (
    BACKUP_SUFFIX,
    SCHEMA,
    STATE_NAME,
    VERSION,
    NewerVersionError,
    SeriesStateError,
    keep_backup,
    read_state_file,
    state_text,
)
from .work_names import migrate_legacy_names, work_name

#: the last version whose autosaves and proposals had the legacy names
LEGACY_NAMES_VERSION = 1
WORK_DIR = "work"
LOCK_NAME = ".napari_focus_queue.lock"
#: how long a save waits for another writer of the series (saves take milliseconds)
LOCK_TIMEOUT_S = 10.0
log = logging.getLogger(__name__)


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
    #: files of a version-1 series that several keys shared: file -> those keys (left
    #: where they are, attached to none)
    unattached: dict[Path, list[str]] = field(default_factory=dict)
    #: keys whose entry the last save took from another writer of the series
    merged: list[str] = field(default_factory=list)
    #: folders the scan on opening could not list (their images left out), in words
    unreadable: list[str] = field(default_factory=list)
    _synced: Synced = field(default_factory=Synced, init=False, repr=False)
    _save_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _saved_current: str | None = field(default=None, init=False, repr=False)
    #: each item's last record and its encoded line (a save encodes the changed ones)
    _lines: dict[str, tuple[dict, str]] = field(default_factory=dict, init=False, repr=False)

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
            "items": [item_record(item) for item in self.queue],
        }

    @property
    def backup_path(self) -> Path:
        return self.output_folder / (STATE_NAME + BACKUP_SUFFIX)

    @property
    def lock_path(self) -> Path:
        return self.output_folder / LOCK_NAME

    def save(self) -> Path:
        """Write the state file atomically, the previous one kept as the backup, under
        the series' lock, after taking in what other writers saved (:attr:`merged`).

        Raises:
            napari_focus.atomic.WriteError: the file could not be written (e.g. the disk
                is full, another writer holds the lock too long, or a newer napari-focus
                wrote it); the previous state file is unchanged.
        """
        with self._save_lock, self._locked():
            saved = self._saved_by_others()
            self.merged = merge_saved(self.queue, self._synced, saved) if saved else []
            data = self.to_json()
            text = state_text(data, self._lines)
            keep_backup(self.state_path, self.backup_path)
            path = atomic_write_text(self.state_path, text)
            self._synced.remember(data["items"], file_stamp(path))
            self._saved_current = data["current"]
            return path

    def position_saved(self) -> bool:
        """Whether the last save holds the current item (a reopened series shows it)."""
        current = self.queue.current
        return self._saved_current is not None and self._saved_current == (
            current.key if current is not None else None
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(held(self.lock_path, LOCK_TIMEOUT_S))
            except LockTimeout:
                raise WriteError(
                    self.state_path,
                    f"another napari-focus has held {self.lock_path} for over "
                    f"{LOCK_TIMEOUT_S:.0f} s; try again",
                ) from None
            except OSError as error:  # e.g. a series folder one may read but not write
                raise WriteError(self.lock_path, error) from error
            yield

    def _saved_by_others(self) -> list[dict[str, Any]] | None:
        """The items of the state file when another writer replaced it since this one
        last read or wrote it (None otherwise, or when it is unreadable: overwritten)."""
        stamp = file_stamp(self.state_path)
        if stamp is None or stamp == self._synced.stamp:
            return None
        try:
            return read_state_file(self.state_path)["items"]
        except NewerVersionError as error:
            raise WriteError(self.state_path, f"{error}; not overwriting it") from None
        except SeriesStateError as error:
            log.warning("overwriting an unreadable series state: %s", error)
            return None

    def _fingerprint(self, item: QueueItem) -> None:
        if item.path is None:
            return
        with contextlib.suppress(OSError):  # gone or unreadable: keep the last one known
            item.fingerprint = file_fingerprint(item.path, item.fingerprint)

    def take_fingerprint(self, key: str, fingerprint: dict[str, Any]) -> None:
        """Keep a fingerprint of ``key``'s file computed where the file was read (a worker
        thread): marking, autosaving and exporting then only compare its size and time."""
        try:
            item = self.queue.item(key)
        except KeyError:
            return
        if item.path is not None:
            item.fingerprint = fingerprint

    # --- working folder -----------------------------------------------------------------

    def autosave_path(self, key: str) -> Path:
        return self.work_folder / f"{work_name(key)}.png"

    def autosave(
        self, key: str, mask: np.ndarray, provenance: dict[str, Any] | None = None
    ) -> Path:
        """Save an edited mask (``> 0`` = foreground) as ``work/<work name>.png`` (0/255)
        and, when given, where it came from (task, model, refinement) as
        ``work/<work name>.json``, then :meth:`record_autosave`. OSError (e.g. a full
        disk) leaves the previous autosave in place. (The widget writes the files in a
        worker: :mod:`.autosave_writer`.)"""
        path = write_autosave_files(self.autosave_path(key), mask, provenance)
        self.record_autosave(key)
        return path

    def record_autosave(self, key: str) -> None:
        """The autosave of ``key`` is written: flag the item (with the SHA-256 of the
        image it was drawn on), mark it ``corrected`` if it was ``pending``/``proposed``,
        and save the state."""
        item = self.queue.item(key)
        self._fingerprint(item)
        item.autosave_of = item.fingerprint["sha256"] if item.fingerprint else None
        item.autosaved = True
        if item.status in (Status.PENDING, Status.PROPOSED):
            self.queue.mark(key, Status.CORRECTED)
        self.save()

    def load_autosaved(self, key: str, read_ahead: np.ndarray | None = None) -> np.ndarray | None:
        """The autosaved mask of an item as a bool ``(H, W)`` array, or None. An autosave
        drawn on other pixels than the image file has now is set aside (listed in
        :attr:`stale_autosaves`) and None is returned. ``read_ahead``: the file's mask,
        read by a worker (it is then not read again here)."""
        path = self.autosave_path(key)
        if not path.is_file():
            return None
        item = self.queue.item(key)
        if item.autosave_of is not None and item.path is not None:
            self._fingerprint(item)
            if item.fingerprint is not None and item.fingerprint["sha256"] != item.autosave_of:
                aside = set_aside(
                    path, path.with_name(f"{path.stem}.stale-{time.strftime('%Y%m%d-%H%M%S')}.png")
                )
                item.autosaved, item.autosave_of = False, None
                self.stale_autosaves[key] = aside
                log.warning("%s changed since its mask was autosaved; set aside as %s",
                            item.path, aside)  # fmt: skip
                self.save()
                return None
        return read_ahead if read_ahead is not None else read_mask_file(path)

    def autosaved_provenance(self, key: str) -> dict[str, Any] | None:
        """What the autosaved mask of an item was made from, if recorded."""
        return read_provenance(self.autosave_path(key).with_suffix(".json"))

    def discard_autosaved(self, key: str) -> None:
        """Delete an item's autosaved mask (e.g. once exported) and clear its flag."""
        self._remove_autosave_files(key)
        item = self.queue.item(key)
        item.autosaved, item.autosave_of = False, None
        self.save()

    def _remove_autosave_files(self, key: str) -> None:
        self.autosave_path(key).unlink(missing_ok=True)
        self.autosave_path(key).with_suffix(".json").unlink(missing_ok=True)

    def move_legacy_files(self, keys: list[str]) -> None:
        """Give the autosaves and stored proposals of a version-1 series their new
        names (see :mod:`.work_names`); files several keys shared go to
        :attr:`unattached`."""
        folders = [(self.work_folder, (".png", ".json"))]
        with contextlib.suppress(OSError):
            folders += [
                (entry, (".npz",))
                for entry in (self.output_folder / PROPOSALS).iterdir()
                if entry.is_dir()
            ]
        with self._locked():
            self.unattached.update(migrate_legacy_names(folders, keys))

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

    def exported_mask_path(self, key: str, file: str = "mask") -> Path | None:
        """Where the item's last export wrote its mask (what was accepted), or its
        ``file="image"``; None when it was never exported."""
        record = self.queue.item(key).export or {}
        path = record.get(file)
        if not path:
            return None
        return Path(path) if Path(path).is_absolute() else self.output_folder / path

    def record_taken_out(self, key: str) -> QueueItem:
        """A rejected item whose exported sample was taken out of its split: no export
        record any more (nothing of it is trained on)."""
        item = self.queue.mark(key, Status.REJECTED)
        item.export = None
        self.save()
        return item

    def exported_mask(self, key: str) -> np.ndarray | None:
        """The mask the item's last export wrote, as a bool ``(H, W)`` array; None when it
        was never exported or that file is gone or unreadable."""
        path = self.exported_mask_path(key)
        if path is None:
            return None
        try:
            return read_mask_file(path)
        except (OSError, ValueError):
            return None

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


__all__ = [
    "STATE_NAME",
    "VERSION",
    "SeriesState",
    "SeriesStateError",
    "file_fingerprint",
    "read_state_file",
    "scan_folder",
    "work_name",
]
