"""A lock per dataset root, and JSON files read with care and replaced atomically.

The root lock is a :mod:`napari_focus.filelock` lock file in the root, never deleted
(released by the kernel when the holder exits or is killed, so a crashed export never
leaves a stale lock).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from ..filelock import LockTimeout, held
from .errors import ExportError, ExportWriteError

LOCK_NAME = ".napari_focus.lock"


@contextmanager
def root_lock(folder: Path, timeout: float = 120.0) -> Iterator[None]:
    """Hold the exclusive export lock of ``folder`` (created if missing)."""
    with ExitStack() as stack:
        try:
            stack.enter_context(held(folder / LOCK_NAME, timeout))
        except LockTimeout as exc:
            raise ExportError(str(exc)) from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ExportWriteError(
                f"cannot create or open the lock file in {folder}: {reason}", reason
            ) from exc
        yield


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
