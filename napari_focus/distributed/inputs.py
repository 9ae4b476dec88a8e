"""Which images a distributed run reads and which files it writes for each.

Inputs are local files, folders, glob patterns (as for ``napari-focus predict``), text
files listing such entries one a line (``.txt``/``.lst``/``.list``), and object-store
URIs (``s3://bucket/prefix/``, ``gs://...``, ``file:///...``) that pyarrow's filesystems
can open: a URI of a folder stands for its images (not recursive).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

LIST_SUFFIXES = (".txt", ".lst", ".list")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(source: str) -> bool:
    """``scheme://...``; a Windows drive letter (``C:\\``) is not a URI."""
    return bool(_URI.match(source))


def _expand_uri(uri: str) -> list[str]:
    from pyarrow import fs

    from ..io import IMAGE_EXTENSIONS

    filesystem, path = fs.FileSystem.from_uri(uri)
    scheme = uri.split("://", 1)[0]
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.File:
        return [uri]
    if info.type != fs.FileType.Directory:
        return []
    found = filesystem.get_file_info(fs.FileSelector(path, recursive=False))
    names = sorted(
        f.path
        for f in found
        if f.type == fs.FileType.File and PurePosixPath(f.path).suffix.lower() in IMAGE_EXTENSIONS
    )
    return [f"{scheme}://{name}" for name in names]


def _read_list(path: Path) -> list[str]:
    """Entries of a list file; relative ones are relative to the list's folder."""
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if not is_uri(entry) and not Path(entry).is_absolute():
            entry = str(path.parent / entry)
        entries.append(entry)
    return entries


def list_sources(inputs: Iterable[str]) -> tuple[list[str], list[str]]:
    """Expand ``inputs`` into image sources (absolute local paths or URIs, deduplicated,
    in order) and the inputs that matched nothing."""
    from ..cli_predict import collect_inputs

    sources: list[str] = []
    unmatched: list[str] = []
    for item in inputs:
        item = str(item)
        if is_uri(item):
            try:
                found = _expand_uri(item)
            except ImportError:
                unmatched.append(f"{item} (URIs need pyarrow: pip install 'napari-focus[ray]')")
                continue
            except (OSError, ValueError) as error:  # unknown scheme, no credentials, ...
                unmatched.append(f"{item} ({error})")
                continue
        elif Path(item).is_file() and Path(item).suffix.lower() in LIST_SUFFIXES:
            found, missing = list_sources(_read_list(Path(item)))
            unmatched.extend(f"{entry} (listed in {item})" for entry in missing)
            sources.extend(found)
            continue
        else:
            paths, _ = collect_inputs([item])
            found = [str(p) for p in paths]
        if not found:
            unmatched.append(item)
        sources.extend(found)
    return list(dict.fromkeys(sources)), unmatched


def source_name(source: str) -> str:
    """File name of a source (local path or URI)."""
    return PurePosixPath(source.split("://", 1)[-1]).name if is_uri(source) else Path(source).name


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
) -> Plan:
    """Output names as ``napari-focus predict`` writes them: ``<stem>.png|.tif`` and
    ``<stem>_probability.png|.tif`` in ``out``. A second input with the same stem is a
    clash (never written over the first)."""
    suffix = ".tif" if image_format == "tif" else ".png"
    folder = Path(out).resolve()
    todo: list[Job] = []
    existing: list[Job] = []
    clashes: list[tuple[Job, str]] = []
    claimed: dict[str, str] = {}
    for source in sources:
        stem = PurePosixPath(source_name(source)).stem
        mask = str(folder / f"{stem}{suffix}")
        job = Job(
            source=source,
            name=stem,
            mask=mask,
            probability=str(folder / f"{stem}_probability{suffix}") if probability else "",
        )
        if mask in claimed:
            clashes.append((job, f"same output name as {claimed[mask]}; rename one"))
            continue
        claimed[mask] = source
        if not overwrite and all(os.path.exists(p) for p in job.outputs()):
            existing.append(job)
        else:
            todo.append(job)
    return Plan(todo=todo, existing=existing, clashes=clashes)
