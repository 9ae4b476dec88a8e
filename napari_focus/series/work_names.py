"""Names of an item's files in the series folder, and the move of files named the old way.

An item's autosaved mask (``work/<work name>.png``, ``.json``) and stored proposals
(``proposals/<model>/<work name>.npz``) are named by :func:`work_name`: the key with
``%``, ``/``, ``\\`` and the characters Windows forbids written as ``%XX``, then ``~``
and 12 hex digits of the key's SHA-256 (``sub/cat.png`` -> ``sub%2Fcat.png~5b1c...``).
Escaping keeps distinct keys apart (``cat.png``/``cat.jpg``, ``a/b.png``/``a__b.png``);
the digest keeps them apart on case-insensitive file systems and when a long key is
shortened.

Series of state version 1 named them by :func:`legacy_work_name` (key without its
extension, ``/`` -> ``__``), which gave different keys one file. Opening such a series
moves each old file to its new name when exactly one key of the series had that old
name; a file several keys shared is left where it is, attached to none of them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

_ESCAPED = frozenset('%/\\<>:"|?*')
#: bytes of the readable part kept (file names are limited to 255 bytes)
_READABLE_BYTES = 160


def work_name(key: str) -> str:
    """File stem of an item's files in the series folder; distinct keys never share one."""
    readable = "".join(f"%{ord(c):02X}" if c in _ESCAPED or ord(c) < 32 else c for c in key)
    raw = readable.encode("utf-8", "surrogateescape")
    if len(raw) > _READABLE_BYTES:
        readable = raw[:_READABLE_BYTES].decode("utf-8", "ignore")
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"{readable}~{digest}"


def legacy_work_name(key: str) -> str:
    """The file stem series of state version 1 used: key without extension, ``/`` ->
    ``__`` (not one-to-one: ``cat.png`` and ``cat.jpg`` both gave ``cat``)."""
    path = Path(key)
    stem = path.with_suffix("").as_posix() if path.suffix else key
    return stem.replace("/", "__").replace("\\", "__")


def migrate_legacy_names(
    folders: Iterable[tuple[Path, tuple[str, ...]]], keys: Iterable[str]
) -> dict[Path, list[str]]:
    """Rename ``<legacy name><suffix>`` to ``<work name><suffix>`` in each ``(folder,
    suffixes)`` for the ``keys`` of a series, when exactly one key has that legacy name
    and nothing has the new name yet. Nothing is deleted or overwritten. Returns the old
    files left where they are, with the keys that had their name."""
    by_legacy: dict[str, list[str]] = {}
    for key in dict.fromkeys(keys):
        by_legacy.setdefault(legacy_work_name(key), []).append(key)
    shared: dict[Path, list[str]] = {}
    for folder, suffixes in folders:
        try:
            names = set(os.listdir(folder))
        except OSError:
            continue  # no such folder: nothing to move
        for legacy, owners in by_legacy.items():
            for suffix in suffixes:
                if legacy + suffix not in names:
                    continue
                source = folder / (legacy + suffix)
                if len(owners) > 1:
                    shared[source] = owners
                    log.warning("%s belonged to one of %s; left where it is", source, owners)
                    continue
                if not move_new(source, folder / (work_name(owners[0]) + suffix)):
                    shared[source] = owners
    return shared


def move_new(source: Path, target: Path) -> bool:
    """Rename ``source`` to ``target`` in one step unless ``target`` exists."""
    try:
        os.link(source, target)  # fails if the target exists: never overwrites
    except FileExistsError:
        if os.path.samefile(source, target):  # a move cut short after the link
            os.unlink(source)
            return True
        log.warning("%s not moved: %s exists already", source, target)
        return False
    except OSError:  # a file system without hard links
        if target.exists():
            return False
        os.rename(source, target)
        return True
    os.unlink(source)
    return True
