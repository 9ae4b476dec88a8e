"""The image files of a series folder: which ones, in which order."""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..folder_walk import walk_files
from ..io import IMAGE_EXTENSIONS
from ..mask_provenance import OutputFolders, walk_leaving_out_outputs

#: the queue state file that makes a folder a series folder (its layout: .state_file)
STATE_NAME = ".napari_focus_queue.json"

#: how often (in images found) :func:`scan_folder` reports while it lists a folder
FOUND_EVERY = 1000


def _natural_key(relative: str) -> list[tuple[list[Any], str]]:
    """Folder by folder, then the file's stem before its extension: ``frame.png``,
    ``frame2.png``, ``frame10.png``, as a file manager lists them."""
    *folders, name = relative.split("/")
    stem, suffix = os.path.splitext(name)
    return [(_natural_words(part), "") for part in folders] + [(_natural_words(stem), suffix)]


def _natural_words(text: str) -> list[Any]:
    # the split alternates text and digits (\d: decimal digits, which int() reads; "²"
    # is a digit to str.isdigit() but stays text), so lists compare item type by type
    parts = re.split(r"(\d+)", text)
    return [int(part) if i % 2 else part.lower() for i, part in enumerate(parts)]


def scan_folder(
    folder: str | os.PathLike,
    *,
    recursive: bool = False,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    pattern: str | None = None,
    exclude: Iterable[str | os.PathLike] = (),
    found: Callable[[int], None] | None = None,
    mask_folders: list[Path] | None = None,
    unreadable: list[str] | None = None,
) -> list[str]:
    """Image files under ``folder`` as relative POSIX paths, in natural order (``2`` before
    ``10``). Hidden files and folders (``.name``), series folders (a queue state file in
    them: autosaves and proposals) and anything under ``exclude`` (e.g. an output folder
    inside the image folder) are left out. ``pattern`` is a glob matched
    against the relative path or the file name, ignoring case (``"*_rgb.*"``, ``"day1/*"``;
    ``*`` also matches ``/``). ``found`` is told how many images were found so far after
    each folder listed and every :data:`FOUND_EVERY` images; an exception it raises stops
    the scan (e.g. a scan nobody waits for any more). Given ``mask_folders`` (the command
    line's scans; the series keeps every image it listed before), subfolders that are
    earlier runs' outputs (:class:`~napari_focus.mask_provenance.OutputFolders`) are
    left out too, and added to it. Folders that cannot be listed are left out, and said
    in ``unreadable``."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    suffixes = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    excluded = [Path(e).resolve() for e in exclude]

    def keep(dirpath: str, dirnames: list[str]) -> list[str]:
        current = Path(dirpath)
        return [
            d for d in dirnames
            if not d.startswith(".") and (current / d).resolve() not in excluded
            and not os.path.exists(current / d / STATE_NAME)
        ]  # fmt: skip

    def walk(outputs: OutputFolders) -> list[str]:
        images: list[str] = []
        for dirpath, filenames in walk_files(root, keep if recursive else None, said):
            current = Path(dirpath)
            if outputs.leaves_out(dirpath, filenames):
                continue
            for filename in filenames:
                if filename.startswith(".") or Path(filename).suffix.lower() not in suffixes:
                    continue
                rel = (current / filename).relative_to(root).as_posix()
                if pattern and not (
                    fnmatch.fnmatchcase(rel.lower(), pattern.lower())
                    or fnmatch.fnmatchcase(filename.lower(), pattern.lower())
                ):
                    continue
                images.append(rel)
                if found is not None and len(images) % FOUND_EVERY == 0:
                    found(len(images))
            if found is not None and (not images or len(images) % FOUND_EVERY):
                found(len(images))  # the folder listed (when not just counted)
        return images

    said: list[str] = []  # a second walk (no outputs to leave out) says it again
    leave_out = recursive and mask_folders is not None
    images, outputs = walk_leaving_out_outputs(walk, root, suffixes, enabled=leave_out)
    if mask_folders is not None:
        mask_folders += outputs
    if unreadable is not None:
        unreadable += dict.fromkeys(said)
    return sorted(images, key=_natural_key)
