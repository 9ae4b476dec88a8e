"""Which images a distributed run reads and which files it writes for each.

Inputs are local files, folders, glob patterns (as for ``napari-focus predict``), text
files listing such entries one a line (``.txt``/``.lst``/``.list``), and object-store
URIs (``s3://bucket/prefix/``, ``gs://...``, ``file:///...``) that pyarrow's filesystems
can open: a URI of a folder stands for its images. With ``recursive``, folders (local or
URIs) also give the images of their subfolders, whose outputs go into the same subfolders
of the output folder, as ``napari-focus predict --recursive`` does.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from .. import prediction_files
from ..input_files import (
    find_inputs,
    is_list_file,
    one_name_each,
    read_list_file,
    unmatched_reason,
)
from ..prediction_files import is_uri, source_name

__all__ = [
    "FoundSources",
    "Job",
    "Plan",
    "find_sources",
    "is_uri",
    "list_sources",
    "plan_outputs",
    "read_source",
    "source_name",
]


def _expand_uri(uri: str, recursive: bool, exclude: Sequence[Path] = ()) -> list[tuple[str, str]]:
    """``(image URI, its subfolder below the folder ``uri``)`` of each image ``uri``
    names: itself when it is a file, else the images of the folder (with ``recursive``,
    those of its subfolders too; hidden files and folders left out, as for local ones,
    and for ``file://`` the folders ``exclude`` (resolved) and series folders)."""
    from pyarrow import fs

    from ..io import IMAGE_EXTENSIONS

    filesystem, path = fs.FileSystem.from_uri(uri)
    scheme = uri.split("://", 1)[0]
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.File:
        return [(uri, "")]
    if info.type != fs.FileType.Directory:
        return []
    top = PurePosixPath(path)
    found = filesystem.get_file_info(fs.FileSelector(path, recursive=recursive))
    left_out = _left_out_below(top, found, exclude) if scheme == "file" else set()
    images = []
    for entry in found:
        relative = PurePosixPath(entry.path).relative_to(top)
        if (
            entry.type == fs.FileType.File
            and relative.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") or part == ".." for part in relative.parts)
            and not any(folder in left_out for folder in relative.parents)
        ):
            subfolder = relative.parent.as_posix()
            images.append((f"{scheme}://{entry.path}", "" if subfolder == "." else subfolder))
    return sorted(images)


def _left_out_below(top: PurePosixPath, entries: Sequence, exclude: Sequence[Path]) -> set:
    """The folders (relative to ``top``) of a local listing that hold no input images:
    the ``exclude`` folders and the widget's series folders."""
    from pyarrow import fs

    from ..series.state_file import STATE_NAME

    left_out = set()
    for entry in entries:
        relative = PurePosixPath(entry.path).relative_to(top)
        if relative.name == STATE_NAME and relative.parent != PurePosixPath("."):
            left_out.add(relative.parent)
        elif entry.type == fs.FileType.Directory and Path(entry.path).resolve() in exclude:
            left_out.add(relative)
    return left_out


@dataclass
class FoundSources:
    """The image sources of a run (absolute local paths or URIs, deduplicated, in
    order), the subfolder of the output folder each one's outputs go to (POSIX, ``""``:
    the output folder itself), why each input that matched nothing did (a sentence
    naming it, as the local engine says it), and the subfolders left
    out as earlier runs' outputs (:attr:`~napari_focus.input_files.FoundInputs.mask_folders`)."""

    sources: list[str]
    subfolders: dict[str, str]
    unmatched: list[str]
    mask_folders: list[Path] = field(default_factory=list)
    #: (name left out, name taken) for a file found under two names (a link beside it)
    other_names: list[tuple[Path, Path]] = field(default_factory=list)
    #: local folders that could not be listed, each in words
    unreadable: list[str] = field(default_factory=list)


def find_sources(
    inputs: Iterable[str],
    *,
    recursive: bool = False,
    exclude: Sequence[str | os.PathLike] = (),
    _lists: set[Path] | None = None,
) -> FoundSources:
    """Expand ``inputs``; with ``recursive``, folders give their subfolders' images too
    (the local folders ``exclude``, such as the output folder, and the widget's series
    folders left out, also below a ``file://`` URI)."""
    found = FoundSources([], {}, [])
    lists = set() if _lists is None else _lists  # a list naming itself is read once
    for item in inputs:
        item = str(item)
        if is_uri(item):
            try:
                images = _expand_uri(item, recursive, [Path(p).resolve() for p in exclude])
            except ImportError:
                found.unmatched.append(
                    f"{item!r}: URIs need pyarrow: pip install 'ray[data]>=2.60,<3' "
                    "(napari-focus's 'ray' extra)"
                )
                continue
            except (OSError, ValueError) as error:  # unknown scheme, no credentials, ...
                found.unmatched.append(f"{item!r}: {error}")
                continue
        elif is_list_file(item):
            if Path(item).resolve() in lists:
                continue
            lists.add(Path(item).resolve())
            try:
                entries = read_list_file(Path(item))
            except (OSError, UnicodeDecodeError) as error:
                found.unmatched.append(f"cannot read the list file {item!r}: {error}")
                continue
            listed = find_sources(entries, recursive=recursive, exclude=exclude, _lists=lists)
            found.unmatched.extend(f"{reason} (listed in {item})" for reason in listed.unmatched)
            found.mask_folders += listed.mask_folders
            found.other_names += listed.other_names
            found.unreadable = list(dict.fromkeys([*found.unreadable, *listed.unreadable]))
            _add(found, [(source, listed.subfolders[source]) for source in listed.sources])
            continue
        else:
            local = find_inputs([item], recursive=recursive, exclude=[Path(p) for p in exclude])
            images = [(str(p), local.subfolders[p]) for p in local.images]
            found.mask_folders += local.mask_folders
            found.other_names += local.other_names
            found.unreadable = list(dict.fromkeys([*found.unreadable, *local.unreadable]))
            if not images and local.unreadable:
                continue  # the folder (or all below it) could not be read: said so
        if not images:
            found.unmatched.append(unmatched_reason(item))
        _add(found, images)
    if _lists is None:  # across the inputs too, each local file once, as find_inputs takes it
        _one_name_each(found)
    return found


def _one_name_each(found: FoundSources) -> None:
    kept, others = one_name_each(Path(s) for s in found.sources if not is_uri(s))
    taken = {str(path) for path in kept}
    for left, _ in others:
        found.subfolders.pop(str(left), None)
    found.sources = [s for s in found.sources if is_uri(s) or s in taken]
    found.other_names += [pair for pair in others if pair not in found.other_names]


def _add(found: FoundSources, images: Iterable[tuple[str, str]]) -> None:
    for source, subfolder in images:
        if source not in found.subfolders:  # the first input naming an image places it
            found.sources.append(source)
            found.subfolders[source] = subfolder


def list_sources(inputs: Iterable[str]) -> tuple[list[str], list[str]]:
    """Expand ``inputs`` (not recursive) into image sources (absolute local paths or URIs,
    deduplicated, in order) and why the inputs that matched nothing did."""
    found = find_sources(inputs)
    return found.sources, found.unmatched


def read_source(source: str) -> np.ndarray:
    """Read one image with :func:`napari_focus.io.read_image`; a URI is fetched first into
    a temporary file of the same extension."""
    from ..io import read_image

    if not is_uri(source):
        return read_image(source)
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(source)
    with filesystem.open_input_stream(path) as stream:
        data = stream.read()
    with tempfile.TemporaryDirectory(prefix="napari_focus_") as folder:
        local = Path(folder) / source_name(source)
        local.write_bytes(data)
        return read_image(local)


@dataclass(frozen=True)
class Job:
    """One input and where its outputs go (``probability`` empty when not wanted)."""

    source: str
    name: str
    mask: str
    probability: str

    def outputs(self) -> list[str]:
        return [p for p in (self.mask, self.probability) if p]

    def as_dict(self) -> dict[str, str]:
        return {
            "source": self.source,
            "name": self.name,
            "mask": self.mask,
            "probability": self.probability,
        }


@dataclass(frozen=True)
class Plan:
    """Inputs to predict, inputs whose outputs exist, inputs that cannot be written."""

    todo: list[Job]
    existing: list[Job]
    clashes: list[tuple[Job, str]]


def plan_outputs(
    sources: Sequence[str],
    out: str | os.PathLike,
    *,
    image_format: str = "png",
    probability: bool = False,
    overwrite: bool = False,
    subfolders: Mapping[str, str] | None = None,
) -> Plan:
    """The outputs of ``sources`` in ``out`` (or in its subfolder ``subfolders[source]``),
    by the rule of ``napari-focus predict``
    (:func:`napari_focus.prediction_files.plan_outputs`): an input whose mask or
    probability map would land on another input's output is a clash, never written.

    Raises:
        OutputReplacesInput: an output would be one of the input images.
    """
    plan = prediction_files.plan_outputs(
        sources, out, image_format=image_format, probability=probability,
        overwrite=overwrite, subfolders=subfolders,
    )  # fmt: skip
    return Plan(
        todo=[_job(entry) for entry in plan.todo],
        existing=[_job(entry) for entry in plan.existing],
        clashes=[(_job(entry), reason) for entry, reason in plan.clashes],
    )


def _job(entry: prediction_files.PlannedOutputs) -> Job:
    return Job(
        source=entry.source,
        name=entry.name,
        mask=str(entry.mask),
        probability=str(entry.probability) if entry.probability is not None else "",
    )
