"""Walking an image folder's tree: linked subfolders are followed (a collection put
together from links, as ``ls`` and a file browser show it), each real folder once and
under its own path where the tree has it, so a link back up the tree never loops and a
link to a folder of the tree adds nothing."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path


def walk_files(
    root: str | os.PathLike,
    subfolders: Callable[[str, list[str]], list[str]] | None,
    unreadable: list[str] | None = None,
) -> Iterator[tuple[str, list[str]]]:
    """``(folder, file names)`` of ``root`` and, when ``subfolders`` is given, of the
    subfolders it keeps of each folder (``subfolders(folder, names)``); ``None``:
    ``root`` alone. The folders the tree holds come first, then the linked ones. A
    folder that cannot be listed (no permission) is left out, and said in
    ``unreadable`` (:func:`unreadable_folder_text`)."""
    seen: set[object] = set()
    tops: list[str] = [os.fspath(root)]
    said: set[str] = set()  # the folders said unreadable, resolved

    def say(error: OSError) -> None:
        # a link to a folder that cannot be read is that folder: said once, by its path
        folder = error.filename or "a folder"
        if unreadable is not None and os.path.realpath(folder) not in said:
            said.add(os.path.realpath(folder))
            unreadable.append(unreadable_folder_text(folder, error))

    while tops:
        for dirpath, dirnames, filenames in os.walk(tops.pop(0), onerror=say):  # links: not entered
            try:
                status = os.stat(dirpath)
            except OSError:
                continue
            # the folder itself, however a link spells it (a case-insensitive disk too);
            # a file system without inode numbers (FAT) by its resolved path
            real: object = (status.st_dev, status.st_ino)
            if not status.st_ino:
                real = os.path.realpath(dirpath)
            if real in seen:  # a link to a folder walked already (or to an ancestor)
                dirnames[:] = []
                continue
            seen.add(real)
            kept = [] if subfolders is None else subfolders(dirpath, dirnames)
            linked = [name for name in kept if os.path.islink(os.path.join(dirpath, name))]
            tops += [os.path.join(dirpath, name) for name in linked]
            dirnames[:] = [name for name in kept if name not in linked]
            yield dirpath, filenames


def is_file_or_broken_link(path: Path) -> bool:
    """A file (or a link to one), or a link whose target is missing: an image that is not
    there yet (a git-annex or DataLad tree before ``get``) fails with that reason rather
    than being left out without a word."""
    if os.path.isfile(path):  # False where a folder may be listed but not entered
        return True
    try:
        os.stat(path)
    except FileNotFoundError:
        return path.is_symlink()  # its target is missing
    except PermissionError:  # in a folder one may list but not enter: reading it says so
        return True
    except OSError:
        return False  # a loop of links (ELOOP): no file behind it, as before
    return False


def unreadable_folder_text(folder: str | os.PathLike, error: OSError) -> str:
    """A folder of images that cannot be listed, in words, with what to do."""
    reason = (error.strerror or type(error).__name__).lower()
    return (
        f"{os.fspath(folder)} cannot be read ({reason}): the images in it are left out; "
        "make it readable for you to include them"
    )
