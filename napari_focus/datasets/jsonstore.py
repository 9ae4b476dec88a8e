"""A lock per dataset root, and JSON files read with care and replaced atomically.

Locking uses a lock file that is never deleted. On POSIX it is held with
``fcntl.flock`` (advisory, released by the kernel when the holder exits or is killed, so
a crashed export never leaves a stale lock; not reliable on some network file systems).
On Windows ``msvcrt.locking`` on the file's first byte is used instead.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ExportError

LOCK_NAME = ".napari_focus.lock"


@contextmanager
def root_lock(folder: Path, timeout: float = 120.0) -> Iterator[None]:
    """Hold the exclusive export lock of ``folder`` (created if missing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_NAME, "a+b")  # noqa: SIM115 - held for the whole block
    except OSError as exc:
        raise ExportError(f"cannot create the lock file in {folder}: {exc}") from exc
    try:
        _acquire(handle, timeout)
        try:
            yield
        finally:
            _release(handle)
    finally:
        handle.close()


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _acquire(handle: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise ExportError(f"timed out waiting for the lock {handle.name}") from None
                time.sleep(0.05)

    def _release(handle: Any) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _acquire(handle: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ExportError(f"timed out waiting for the lock {handle.name}") from None
                time.sleep(0.01)

    def _release(handle: Any) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def read_json(path: Path) -> dict[str, Any] | None:
    """The parsed JSON object at ``path``; None if the file does not exist.

    Raises:
        ExportError: if the file is not a JSON object in UTF-8 (it is left untouched).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ExportError(f"cannot read {path}: {exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExportError(
            f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start}); JSON files must be UTF-8; not touching it"
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path} is not valid JSON ({exc}); not touching it") from exc
    except RecursionError as exc:
        raise ExportError(
            f"{path} is nested too deeply to be a COCO file; not touching it"
        ) from exc
    if not isinstance(data, dict):
        raise ExportError(f"{path} does not hold a JSON object; not touching it")
    return data
