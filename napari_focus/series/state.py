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

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..io import IMAGE_EXTENSIONS, atomic_write, read_image, write_mask
from .queue import ImageQueue, QueueItem, Status, scan_folder

STATE_NAME = ".napari_focus_queue.json"
SCHEMA = "napari-focus-queue"
VERSION = 1
WORK_DIR = "work"


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
                }
                for item in self.queue
            ],
        }

    def save(self) -> Path:
        text = json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n"
        return atomic_write(
            self.state_path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8")
        )

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
            atomic_write(
                self.autosave_path(key).with_suffix(".json"),
                lambda tmp: Path(tmp).write_text(text, encoding="utf-8"),
            )
        path = write_mask(self.autosave_path(key), mask)
        item.autosaved = True
        if item.status in (Status.PENDING, Status.PROPOSED):
            self.queue.mark(key, Status.CORRECTED)
        self.save()
        return path

    def load_autosaved(self, key: str) -> np.ndarray | None:
        """The autosaved mask of an item as a bool ``(H, W)`` array, or None."""
        path = self.autosave_path(key)
        if not path.is_file():
            return None
        data = read_image(path)
        if data.ndim == 3:
            data = data[..., 0]
        return data > 0

    def autosaved_provenance(self, key: str) -> dict[str, Any] | None:
        """What the autosaved mask of an item was made from, if recorded."""
        try:
            data = json.loads(self.autosave_path(key).with_suffix(".json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def discard_autosaved(self, key: str) -> None:
        """Delete an item's autosaved mask (e.g. once exported) and clear its flag."""
        self.autosave_path(key).unlink(missing_ok=True)
        self.autosave_path(key).with_suffix(".json").unlink(missing_ok=True)
        self.queue.item(key).autosaved = False
        self.save()

    # --- status helpers that persist ----------------------------------------------------

    def mark(self, which: int | str | None, status: Status | str) -> QueueItem:
        item = self.queue.mark(which, status)
        self.save()
        return item

    def mark_failed(self, which: int | str | None, reason: str) -> QueueItem:
        item = self.queue.mark_failed(which, reason)
        self.save()
        return item

    def record_export(self, which: int | str | None, record: dict[str, Any]) -> QueueItem:
        item = self.queue.record_export(which, record)
        self.save()
        return item


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
) -> list[QueueItem]:
    """Saved items (in saved order) that still exist, then the new ones in scan order."""
    present = {item.key: item for item in queue}
    restored: list[QueueItem] = []
    for entry in saved:
        key = entry["key"]
        if key not in present:
            continue  # the image is gone
        item = ImageQueue.item_for_key(folder, key)
        item.name = str(entry.get("name") or item.name)
        item.status = Status(entry.get("status", "pending"))
        item.created = str(entry.get("created") or item.created)
        item.updated = entry.get("updated")
        export = entry.get("export")
        item.export = export if isinstance(export, dict) else None
        item.autosaved = bool(entry.get("autosaved", False))
        if item.status is Status.FAILED:  # the file may have been fixed: try it again
            item.status = Status.PENDING
        restored.append(item)
        del present[key]
    return restored + list(present.values())


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

    The folder is scanned now: images that vanished are dropped, new ones are appended
    (pending). Saved order, statuses, export records and the current item are kept; if the
    saved current item vanished, the first not-exported item is current. The state is
    saved before returning. An output folder inside the image folder is not scanned.
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
            queue.items = _restore_items(data["items"], queue, queue.folder)
            keys = queue.keys()
            current = data.get("current")
            if current in keys:
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
