"""Which images a distributed run reads and which files it writes for each.

Inputs are local files, folders, glob patterns (as for ``napari-focus predict``), text
files listing such entries one a line (``.txt``/``.lst``/``.list``), and object-store
URIs (``s3://bucket/prefix/``, ``gs://...``, ``file:///...``) that pyarrow's filesystems
can open: a URI of a folder stands for its images (not recursive).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .. import prediction_files
from ..input_files import collect_inputs, is_list_file, read_list_file
from ..prediction_files import is_uri, source_name

__all__ = [
    "Job",
    "Plan",
    "is_uri",
    "list_sources",
    "plan_outputs",
    "read_source",
    "source_name",
]


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


def list_sources(inputs: Iterable[str]) -> tuple[list[str], list[str]]:
    """Expand ``inputs`` into image sources (absolute local paths or URIs, deduplicated,
    in order) and the inputs that matched nothing."""
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
        elif is_list_file(item):
            found, missing = list_sources(read_list_file(Path(item)))
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
    """The outputs of ``sources`` in ``out``, by the rule of ``napari-focus predict``
    (:func:`napari_focus.prediction_files.plan_outputs`): an input whose mask or
    probability map would land on another input's output is a clash, never written.

    Raises:
        OutputReplacesInput: an output would be one of the input images.
    """
    plan = prediction_files.plan_outputs(
        sources, out, image_format=image_format, probability=probability, overwrite=overwrite
    )
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
