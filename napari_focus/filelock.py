"""An exclusive lock held on a lock file, between processes and between threads.

The lock file is never deleted. On POSIX it is held with ``fcntl.flock`` (advisory,
released by the kernel when the holder exits or is killed, so a crash never leaves a
stale lock; not reliable on some network file systems). On Windows ``msvcrt.locking``
on the file's first byte is used instead. Each :func:`held` opens the file anew, so two
threads of one process exclude each other too; holding one lock twice in one thread
waits for itself until the timeout.
"""

from __future__ import annotations

import errno
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class LockTimeout(TimeoutError):
    """Another holder kept the lock longer than the timeout."""


@contextmanager
def held(path: Path, timeout: float) -> Iterator[None]:
    """Hold the exclusive lock of the file ``path`` (created, with its folder, if
    missing). Raises OSError if the file cannot be created, :class:`LockTimeout` if the
    lock is not free within ``timeout`` seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = _open(path)
    try:
        _acquire(handle, timeout)
        try:
            yield
        finally:
            _release(handle)
    finally:
        handle.close()


def _open(path: Path) -> Any:
    try:
        return open(path, "a+b")  # held for the whole block of held()
    except PermissionError:
        # the lock file of a colleague's umask (0644) in a folder both may write to:
        # flock needs no write access, and the lock is held as well read-only
        if sys.platform == "win32" or not path.is_file():
            raise
        return open(path, "rb")


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    _PAUSE = 0.05

    def _try_lock(handle: Any) -> bool:
        try:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _release(handle: Any) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    _PAUSE = 0.01

    def _try_lock(handle: Any) -> bool:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as error:
            if error.errno == errno.EBADF and handle.mode.strip("b") == "r":
                # NFS locks a file only through a descriptor that may write it
                raise PermissionError(
                    errno.EACCES,
                    f"{handle.name} is another user's lock file, and this file system "
                    "locks only files one may write: ask its owner to make it "
                    "group-writable (chmod g+w)",
                ) from error
            raise
        return True

    def _release(handle: Any) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _acquire(handle: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _try_lock(handle):
        if time.monotonic() > deadline:
            raise LockTimeout(f"timed out waiting for the lock {handle.name}")
        time.sleep(_PAUSE)
