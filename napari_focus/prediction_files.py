"""Which files a prediction writes for each image it reads (:mod:`~napari_focus.input_files`).

One rule for ``napari-focus predict`` on this machine and on a Ray cluster: an input
``<stem>.<ext>`` gets the mask ``<stem>.png|.tif`` and, when asked, the probability map
``<stem>_probability.png|.tif`` in the output folder. Every output path is claimed by
one input only (a second input whose mask or probability map would land on a claimed
path is a clash, reported for that input and never written), and no output may be an
input image (:class:`OutputReplacesInput`, refused before any work).

Names are compared as a case-insensitive, normalization-insensitive file system
(macOS, Windows, SMB shares, exFAT drives) compares them: ``A.png`` and ``a.jpg`` claim
one mask, and a file already in the folder whose name differs from an output's only in
case (``A.png`` there, ``a.png`` planned) is that output's file there, so it is a clash
too, on every system alike.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse
from urllib.request import url2pathname

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
PROBABILITY_SUFFIX = "_probability"


def is_uri(source: str) -> bool:
    """``scheme://...``; a Windows drive letter (``C:\\``) is not a URI."""
    return bool(_URI.match(source))


def source_name(source: str) -> str:
    """File name of a source (local path or URI)."""
    return PurePosixPath(source.split("://", 1)[-1]).name if is_uri(source) else Path(source).name


def _local_path(source: str) -> Path | None:
    """The file a source names on this machine: a path or a ``file://`` URI."""
    if not is_uri(source):
        return Path(source)
    parsed = urlparse(source)
    if parsed.scheme.lower() != "file":
        return None
    return Path(url2pathname(parsed.path))


@dataclass(frozen=True)
class PlannedOutputs:
    """One input (a local path or a URI) and the files written for it."""

    source: str
    name: str
    mask: Path
    probability: Path | None

    def paths(self) -> list[Path]:
        return [self.mask] if self.probability is None else [self.mask, self.probability]

    def kind_of(self, path: Path) -> str:
        return "mask" if path == self.mask else "probability map"


@dataclass(frozen=True)
class OutputPlan:
    """Inputs to predict, inputs whose outputs all exist (skipped unless overwriting),
    and inputs that cannot be written, each with the reason."""

    todo: list[PlannedOutputs]
    existing: list[PlannedOutputs]
    clashes: list[tuple[PlannedOutputs, str]]


class OutputReplacesInput(ValueError):
    """An output file of the run would be one of its input images.

    ``what`` says which, e.g. ``"the mask of photo.png would replace the input image
    /data/photo.png"`` (``and N more`` when several); ``collisions`` lists every
    ``(source, kind, input path)``. The caller names its own option for the folder."""

    def __init__(self, collisions: list[tuple[str, str, Path]]) -> None:
        source, kind, image = collisions[0]
        what = f"the {kind} of {source_name(source)} would replace the input image {image}"
        if len(collisions) > 1:
            what += f" (and {len(collisions) - 1} more outputs would replace input images)"
        super().__init__(f"{what}; choose another output folder")
        self.what = what
        self.collisions = collisions

    def __reduce__(self) -> tuple:  # survives pickling (Ray workers, training processes)
        return (type(self), (self.collisions,))


def output_paths(
    source: str, folder: Path, *, image_format: str = "png", probability: bool = False
) -> PlannedOutputs:
    """Where the outputs of one input go in ``folder``."""
    suffix = ".tif" if image_format == "tif" else ".png"
    stem = PurePosixPath(source_name(source)).stem
    return PlannedOutputs(
        source=source,
        name=stem,
        mask=folder / f"{stem}{suffix}",
        probability=folder / f"{stem}{PROBABILITY_SUFFIX}{suffix}" if probability else None,
    )


class _Inputs:
    """The input images as paths and, asked only when an output exists, as files
    (device and inode: the same file under another name, a symlink or a hard link)."""

    def __init__(self, sources: Sequence[str]) -> None:
        local = (_local_path(s) for s in sources)
        self.paths = {os.path.abspath(p): p for p in local if p is not None}
        self._files: dict[tuple[int, int], Path] | None = None

    def matching(self, output: Path, stat: os.stat_result | None) -> Path | None:
        found = self.paths.get(os.path.abspath(output))
        if found is not None or stat is None:
            return found
        if self._files is None:
            self._files = {}
            for path in self.paths.values():
                try:
                    info = os.stat(path)
                except OSError:
                    continue
                self._files.setdefault((info.st_dev, info.st_ino), path)
        return self._files.get((stat.st_dev, stat.st_ino))


def same_file_key(name: str) -> str:
    """The key under which a case-insensitive, normalization-insensitive file system
    (macOS, Windows) files ``name``: two names with one key are one file there."""
    return unicodedata.normalize("NFC", name).casefold()


def _key(path: Path, folder: Path) -> str:
    """:func:`same_file_key` of an output's path below the output folder."""
    return same_file_key(path.relative_to(folder).as_posix())


class _Listings:
    """The entries of each output folder by :func:`same_file_key`, each listed once
    (none for a folder that does not exist)."""

    def __init__(self) -> None:
        self._folders: dict[Path, dict[str, list[str]]] = {}

    def names_in(self, folder: Path) -> dict[str, list[str]]:
        if folder not in self._folders:
            names: dict[str, list[str]] = {}
            try:
                entries = os.listdir(folder)
            except OSError:
                entries = []
            for name in sorted(entries):
                names.setdefault(same_file_key(name), []).append(name)
            self._folders[folder] = names
        return self._folders[folder]


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def plan_outputs(
    sources: Sequence[str],
    out: str | os.PathLike,
    *,
    image_format: str = "png",
    probability: bool = False,
    overwrite: bool = False,
    subfolders: Mapping[str, str] | None = None,
) -> OutputPlan:
    """Plan the outputs of ``sources`` (local paths or URIs) in the folder ``out``, or
    in its subfolder ``subfolders[source]`` (POSIX, relative) where one is given.

    Raises:
        OutputReplacesInput: a mask or probability map would be an input image (the
            same path, or the same file through a link), whatever ``overwrite`` says.
    """
    folder = Path(out).resolve()
    inputs = _Inputs(sources)
    below = subfolders or {}
    planned = [
        output_paths(s, folder / below.get(s, ""), image_format=image_format,
                     probability=probability)
        for s in sources
    ]  # fmt: skip
    stats = {path: _stat(path) for entry in planned for path in entry.paths()}
    collisions = [
        (entry.source, entry.kind_of(path), image)
        for entry in planned
        for path in entry.paths()
        if (image := inputs.matching(path, stats[path])) is not None
    ]
    if collisions:
        raise OutputReplacesInput(collisions)

    todo: list[PlannedOutputs] = []
    existing: list[PlannedOutputs] = []
    clashes: list[tuple[PlannedOutputs, str]] = []
    claimed: dict[str, tuple[Path, PlannedOutputs]] = {}
    present = _Listings()
    for entry in planned:
        reason = _clash(entry, claimed, present, folder) or _not_a_file(entry, stats)
        if reason is not None:
            clashes.append((entry, reason))
            continue
        claimed.update((_key(path, folder), (path, entry)) for path in entry.paths())
        if not overwrite and all(stats[path] is not None for path in entry.paths()):
            existing.append(entry)
        else:
            todo.append(entry)
    return OutputPlan(todo=todo, existing=existing, clashes=clashes)


def _not_a_file(
    entry: PlannedOutputs, stats: Mapping[Path, os.stat_result | None]
) -> str | None:
    """Why an output path of ``entry`` cannot take a file: a folder (or another non-file)
    is there, which would otherwise count as an existing output and be skipped."""
    for path in entry.paths():
        info = stats[path]
        if info is not None and not stat.S_ISREG(info.st_mode):
            what = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            return (
                f"its {entry.kind_of(path)} {path.name} cannot be written: {path} is {what}; "
                "move it away or choose another --out"
            )
    return None


def _folder_of(source: str) -> str:
    return source.rsplit("/", 1)[0] if is_uri(source) else os.path.dirname(source)


def _one_file_note(name: str, other: str) -> str:
    """Why two different names with one :func:`same_file_key` are one file."""
    if unicodedata.normalize("NFC", name) == unicodedata.normalize("NFC", other):
        how = "only in how their accents are encoded (Unicode normalization)"
    else:
        how = "only in case"
    return f"names that differ {how} are one file on macOS and Windows"


def _clash(
    entry: PlannedOutputs,
    claimed: Mapping[str, tuple[Path, PlannedOutputs]],
    present: _Listings,
    folder: Path,
) -> str | None:
    """Why ``entry`` may not write its outputs, or None: one lands on an output another
    input claimed, or on a file in the folder whose name differs only in case."""
    for path in entry.paths():
        key = _key(path, folder)
        if key in claimed:
            other_path, owner = claimed[key]
            kind, other_kind = entry.kind_of(path), owner.kind_of(other_path)
            mine, theirs = (p.relative_to(folder).as_posix() for p in (path, other_path))
            case = "" if mine == theirs else f" ({_one_file_note(mine, theirs)})"
            if kind == other_kind:
                apart = _folder_of(entry.source) != _folder_of(owner.source)
                each = ", or give each folder its own --out" if apart else ""
                return f"same output name as {owner.source}{case}; rename one{each}"
            return (
                f"its {kind} {path.name} would be the {other_kind} of {owner.source}{case}; "
                "rename one"
            )
        there = present.names_in(path.parent).get(same_file_key(path.name), [path.name])
        if path.name not in there:
            return (
                f"its {entry.kind_of(path)} {path.name} would replace {there[0]}, already "
                f"in {path.parent} ({_one_file_note(path.name, there[0])}); rename the "
                f"image, move {there[0]} away or choose another --out"
            )
    return None
