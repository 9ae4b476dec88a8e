"""The series state file: its layout, validation and backup (used by :mod:`.state`).

State file ``<output>/.napari_focus_queue.json`` (UTF-8 JSON, one item a line, written
atomically)::

    {"schema": "napari-focus-queue", "version": 2,
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
an export or an autosave), ``"autosave_of"`` (SHA-256 of the image the autosaved mask
was drawn on) and, on a ``failed`` item, ``"failed_from"`` (the status it had before its
file could not be read, given back when the series is opened again).

Version 2 differs from version 1 only in the work names; a version-1 series is opened
and its files moved to the new names (:func:`.work_names.migrate_legacy_names`), then
saved as version 2, which napari-focus releases reading only version 1 refuse to open
(they would not find the moved files, nor take the lock).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes, fsync_dir, temp_path
from ..fs_text import is_utf8
from .queue import Status
from .scan import STATE_NAME as STATE_NAME  # re-exported: the file this module describes

SCHEMA = "napari-focus-queue"
BACKUP_SUFFIX = ".bak"
VERSION = 2
log = logging.getLogger(__name__)


class SeriesStateError(RuntimeError):
    """The state file cannot be used."""


def state_text(data: dict[str, Any], lines: dict[str, tuple[dict, str]] | None = None) -> str:
    """The state file's text: one item a line (readable, and a diff or grep shows one
    image's line), written by the C encoder (an indented dump goes through the slower
    Python one: 0.11 s instead of 0.04 s for 20,000 items, on the GUI thread). ``lines``
    (key -> (item record, its line), kept between saves of one series) spares encoding
    the items unchanged since: a save of 50,000 items encodes the few that changed."""
    text = _state_text(data, ensure_ascii=False, lines=lines)
    # a file name's undecodable bytes (Linux) cannot be UTF-8: escaped, as JSON allows
    return text if is_utf8(text) else _state_text(data, ensure_ascii=True)


def _state_text(
    data: dict[str, Any], ensure_ascii: bool, lines: dict[str, tuple[dict, str]] | None = None
) -> str:
    encode = json.JSONEncoder(ensure_ascii=ensure_ascii).encode
    head = encode({key: value for key, value in data.items() if key != "items"})
    if lines is None:
        items = ",\n".join(map(encode, data["items"]))
    else:
        encoded = []
        for record in data["items"]:
            known = lines.get(record["key"])
            if known is None or known[0] != record:
                known = lines[record["key"]] = (record, encode(record))
            encoded.append(known[1])
        items = ",\n".join(encoded)
    return f'{head[:-1]}, "items": [\n{items}\n]}}\n'


def keep_backup(path: Path, backup: Path) -> None:
    """Make ``backup`` the current ``path`` (a hard link, else a copy), atomically."""
    if not path.is_file():
        return
    tmp = temp_path(backup)
    try:
        try:
            os.link(path, tmp)
        except OSError:  # no hard links there: a flushed copy
            atomic_write_bytes(backup, path.read_bytes())
        else:
            os.replace(tmp, backup)
            fsync_dir(backup.parent)
    except OSError as error:  # the new state is still written; say the backup was not
        log.warning("could not keep a backup of %s: %s", path, error)
        tmp.unlink(missing_ok=True)


class NewerVersionError(SeriesStateError):
    pass


def _parse(data: Any, path: Path) -> dict[str, Any]:
    """Validate the JSON layout; SeriesStateError(kind) names what is wrong."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise SeriesStateError(f"{path} is not a napari-focus queue state file")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SeriesStateError(f"{path} has no valid version")
    if version > VERSION:
        raise NewerVersionError(
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
