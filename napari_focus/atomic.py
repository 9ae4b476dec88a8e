"""Atomic file writes shared by every writer of the package.

A file is written under a temporary name in its own folder, flushed to disk (``fsync``)
and renamed over the final name, so a reader sees the old file or the new one, never
half of one. Temporary files are created with ``O_CREAT | O_EXCL`` and mode ``0o666``,
so the kernel applies the user's umask (and any default ACL) exactly as for a file
created by ``open(path, "w")``: 0644 under umask 022, 0600 under 077. A file replaced
keeps its permission bits, as ``open(path, "w")`` keeps them (a shared split's index
stays readable by the group when a colleague with umask 077 exports into it).

Temporary names start with :data:`TEMP_PREFIX` and carry the writer's host and
process id::

    .napari_focus-tmp-<host id>-<pid>-<random>-<final name>

so a clean-up only ever matches names this package made (never a user's
``.cat.original.jpg``), and can tell the files of a live process from those a killed
one left behind (:func:`remove_stale_temps`, :func:`remove_own_temps`). A process id
only means something on its own host: in a folder on shared storage (NFS) the temporary
files of other machines are left to their writers until they are :data:`STALE_AFTER_S`
old. Names of older versions (``.napari_focus-tmp-<pid>-<random>-...``, no host) are
still recognised and treated as another host's.
"""

from __future__ import annotations

import base64
import errno
import functools
import hashlib
import os
import re
import secrets
import socket
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TEMP_PREFIX = ".napari_focus-tmp-"
# the host id is 8 letters/digits of base32 (a-z, 2-7); names of older versions have none
_TEMP_NAME = re.compile(
    r"^\.napari_focus-tmp-(?:(?P<host>[a-z2-7]{8})-)?(?P<pid>\d+)-[0-9a-f]{8}-(?P<final>.+)$",
    re.DOTALL,
)
_MAX_NAME_BYTES = 240
# the longest head temp_path writes (a 10-digit pid), so that the final name kept in a
# temporary name does not depend on which process wrote it
_MAX_HEAD_BYTES = len(TEMP_PREFIX) + len("hosthost-") + 10 + len("-0123abcd-")
#: temp files older than this are stale even if their process id is alive (reused pid)
STALE_AFTER_S = 24 * 3600.0

_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENAMETOOLONG: "the file name is too long",
}


class WriteError(OSError):
    """A file could not be written; ``str(error)`` is a complete message for the user
    (which file, and why in plain words). The previous file, if any, is unchanged.

    Attributes: ``path`` (the file that was to be written), ``errno``, ``reason`` (the
    plain-words cause, e.g. ``"the disk is full"``).
    """

    def __init__(self, path: str | os.PathLike, cause: OSError | str) -> None:
        code = cause.errno if isinstance(cause, OSError) else None
        reason = (
            _REASONS.get(code or -1) or (cause.strerror if isinstance(cause, OSError) else None)
        ) or str(cause)
        super().__init__(code, f"could not write {os.fspath(path)}: {reason}")
        self.path = Path(path)
        self.reason = reason

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self) -> tuple:  # survives pickling (worker processes)
        return _rebuild_write_error, (os.fspath(self.path), self.errno, self.reason)


def _rebuild_write_error(path: str, code: int | None, reason: str) -> WriteError:
    return WriteError(path, OSError(code, reason) if code is not None else reason)


@functools.cache
def host_id() -> str:
    """8 characters (a-z, 2-7) naming this machine in temporary names: a hash of the
    host name and, where the system has one, the boot id. Two nodes of a cluster, or
    two containers with their own host names, get different ids."""
    seed = socket.gethostname()
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            seed += "/" + handle.read().strip()
    except OSError:
        pass
    digest = hashlib.sha256(seed.encode("utf-8", "surrogateescape")).digest()
    return base64.b32encode(digest).decode("ascii")[:8].lower()


@dataclass(frozen=True)
class TempName:
    """What a temporary name says: the writer's host id (``None`` in names of older
    versions), its process id, and the (possibly shortened) final file name."""

    host: str | None
    pid: int
    final: str

    @property
    def ours(self) -> bool:
        """Written on this host (so ``pid`` is a process id of this machine)."""
        return self.host == host_id()


def parse_temp_name(name: str) -> TempName | None:
    """The parts of one of this package's temporary names; ``None`` for any other name."""
    match = _TEMP_NAME.match(name)
    if match is None:
        return None
    return TempName(match.group("host"), int(match.group("pid")), match.group("final"))


def temp_final_name(name: str) -> str:
    """The final name as a temporary name of ``name`` carries it: the name itself, or
    shortened (keeping the extension) when it would make the temporary name too long."""
    room = _MAX_NAME_BYTES - _MAX_HEAD_BYTES
    if len(os.fsencode(name)) <= room:  # a name's bytes, UTF-8 or not
        return name
    suffix = Path(name).suffix
    suffix = suffix if len(suffix) < 16 else ""  # keep the extension, which writers read
    stem = os.fsencode(name[: len(name) - len(suffix)])[: room - len(os.fsencode(suffix))]
    return stem.decode("utf-8", "ignore") + suffix


def _temp_head() -> str:
    return f"{TEMP_PREFIX}{host_id()}-{os.getpid()}-{secrets.token_hex(4)}-"


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``path`` (same folder, same extension)."""
    path = Path(path)
    return path.with_name(_temp_head() + temp_final_name(path.name))


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of this package's temporary names."""
    return _TEMP_NAME.match(name) is not None


def create_temp(path: str | os.PathLike) -> Path:
    """Create an empty temporary file beside ``path`` (mode 0o666 less the umask)."""
    path = Path(path)
    while True:
        tmp = temp_path(path)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        os.close(fd)
        return tmp


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a written file to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (renames) to disk, where the platform allows it."""
    if sys.platform == "win32":  # pragma: no cover
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. a folder we may write but not read
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse it on folders
        pass
    finally:
        os.close(fd)


def write_temp(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a new temporary file beside ``path`` and flush it; the
    caller renames it into place (:func:`commit`) or deletes it.

    Raises:
        WriteError: the file could not be written (nothing is left behind).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = create_temp(path)
        created = os.stat(tmp).st_mode & 0o7777
    except OSError as exc:
        raise WriteError(path, exc) from exc
    try:  # a file replaced keeps its permissions, as ``open(path, "w")`` keeps them
        existing = os.stat(path)
        mode = existing.st_mode & 0o777 if stat.S_ISREG(existing.st_mode) else created
    except OSError:
        mode = created
    try:
        write(os.fspath(tmp))
        fsync_path(tmp)  # before the mode: a replaced file's may not let its owner read
        if os.stat(tmp).st_mode & 0o7777 != mode:  # replacing, or a writer's own file
            os.chmod(tmp, mode)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError(path, exc) from exc
        raise
    return tmp


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename a flushed temporary file over ``path`` and flush the folder."""
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def commit_new(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give a flushed temporary file the name ``path`` unless that name exists.

    Raises:
        FileExistsError: ``path`` exists (it is unchanged; ``tmp`` is left to the caller).
    """
    try:
        os.link(tmp, path)  # one step that fails on an existing name
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then rename
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "exists", os.fspath(path)) from None
        os.replace(tmp, path)
    else:
        os.unlink(tmp)
    fsync_dir(Path(path).parent)


def set_aside(path: str | os.PathLike, aside: str | os.PathLike) -> Path:
    """Move ``path`` to the name ``aside`` (``aside-2``, ``aside-3``, ... when taken),
    never replacing a file set aside before; returns the name it got."""
    path, aside = Path(path), Path(aside)
    extension = aside.suffix if aside.suffix[1:].isalpha() else ""  # .png, not .bad-2026...
    stem = aside.name.removesuffix(extension) if extension else aside.name
    for n in range(1, 1000):
        target = aside if n == 1 else aside.with_name(f"{stem}-{n}{extension}")
        try:
            commit_new(path, target)  # a link, then the old name goes
        except FileExistsError:
            continue
        return target
    raise FileExistsError(errno.EEXIST, "no free name to set the file aside", os.fspath(aside))


def atomic_write(
    path: str | os.PathLike, write: Callable[[str], None], *, replace: bool = True
) -> Path:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, flush it and rename
    it into place, so readers never see a half-written file. The file gets the mode a
    plain ``open(path, "w")`` would give it (the umask applies to a new file; a file
    replaced keeps its permission bits). With ``replace=False``
    an existing ``path``, even one that appeared while writing, is never replaced.

    Raises:
        WriteError: with the previous ``path`` (if any) untouched and no temp file left.
        FileExistsError: ``replace`` is False and ``path`` exists (no temp file left).
    """
    path = Path(path)
    tmp = write_temp(path, write)
    try:
        (commit if replace else commit_new)(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, FileExistsError) and not replace:
            raise
        raise WriteError(path, exc) from exc
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)

    return atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (someone else's), or cannot tell: keep its files
    return True


def temp_files(folder: str | os.PathLike) -> list[Path]:
    """This package's temporary files directly inside ``folder``."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    return [e for e in entries if is_temp_name(e.name) and e.is_file()]


def remove_stale_temps(folder: str | os.PathLike, *, everything: bool = False) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder``: this host's
    whose process is gone, and any older than :data:`STALE_AFTER_S` (another host's
    process cannot be asked whether it is alive); with ``everything``, all of them (only
    safe under a lock every writer of the folder holds). Returns the paths removed. Only
    names made by :func:`temp_path` are ever touched."""
    removed = []
    now = time.time()
    for entry in temp_files(folder):
        temp = parse_temp_name(entry.name)
        assert temp is not None
        if not everything:
            if temp.ours and temp.pid == os.getpid():
                continue  # this process may be writing it right now
            try:
                young = now - entry.stat().st_mtime < STALE_AFTER_S
            except OSError:
                continue
            if young and (not temp.ours or _alive(temp.pid)):
                continue
        try:
            entry.unlink()
            removed.append(entry)
        except FileNotFoundError:
            pass
    return removed


def remove_own_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete this process's temporary files in ``folder`` (e.g. from a signal handler
    after an interrupted run). Returns the paths removed."""
    removed = []
    for entry in temp_files(folder):
        temp = parse_temp_name(entry.name)
        if temp is not None and temp.ours and temp.pid == os.getpid():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def check_writable_folder(folder: str | os.PathLike) -> Path:
    """Check, before any work, that files can be created in ``folder`` (which may not
    exist yet: then that it can be created). Nothing is left behind.

    Raises:
        WriteError: naming the folder and why (a file in the way, permission denied,
            read-only file system, ...); the caller says what to do, in its own words.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise WriteError(folder, f"{existing} is a file, not a folder")
    probe = existing / f"{_temp_head()}probe"
    try:
        if existing == folder:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            os.close(fd)
            probe.unlink()
        else:
            probe.mkdir()
            probe.rmdir()
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.EINVAL, errno.ENOSYS):  # /proc, /sys and the like
            reason = f"{existing} does not take new files or folders"
            raise WriteError(folder, reason) from exc
        raise WriteError(folder, exc) from exc
    return folder


def check_writable_file(path: str | os.PathLike) -> Path:
    """Check, before any work, that ``path`` can be written atomically: it is not a
    folder and its folder accepts new files (see :func:`check_writable_folder`)."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(path, "it is a folder, not a file")
    check_writable_folder(path.parent if str(path.parent) else Path("."))
    return path
