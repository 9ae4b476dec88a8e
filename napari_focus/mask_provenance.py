"""Which model made a predicted mask, recorded in the file, so that a later run into the
same output folder can tell its own masks from those of another task or other weights.

``predict`` (both engines) writes the record as a PNG text chunk or a TIFF image
description: ``{"made_by": "napari-focus", "task": "sod", "weights": "focus_large_sod.pth"}``.
``weights`` is the official checkpoint's file name or the name of the ``--weights`` file
(a name, not a path: a moved checkpoint is still the same weights). Masks without a
record (saved from napari, drawn by hand, from other tools) are never judged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECORD_KEY = "napari-focus"


@dataclass(frozen=True)
class MadeBy:
    """The task and the weights (file name) that predicted a mask."""

    task: str
    weights: str

    @classmethod
    def of_run(cls, task: str, size: str | None, weights: str | os.PathLike | None) -> MadeBy:
        """What a run of ``--task``, ``--size`` and ``--weights`` records: the task the
        weights file says it was trained for when it says one (its masks show that task,
        whatever ``--task`` asked; the run warns), else ``task``."""
        if not weights:
            from .presets import hub_location

            return cls(task=task, weights=hub_location(task, size or "large")[1])
        from .checkpoint_identity import recorded_task

        found = recorded_task(weights) if Path(weights).is_file() else None
        return cls(task=found[0] if found else task, weights=Path(weights).name)

    def text(self) -> str:
        record = {"made_by": "napari-focus", "task": self.task, "weights": self.weights}
        return json.dumps(record, ensure_ascii=True)  # TIFF descriptions are ASCII

    @classmethod
    def parse(cls, text: str | bytes | None) -> MadeBy | None:
        if isinstance(text, bytes):
            text = text.decode("ascii", "replace")
        try:
            record = json.loads(text) if text else None
        except ValueError:
            return None
        if not isinstance(record, dict) or record.get("made_by") != "napari-focus":
            return None
        task, weights = record.get("task"), record.get("weights")
        if not isinstance(task, str) or not isinstance(weights, str):
            return None
        return cls(task=task, weights=weights)

    def describe(self) -> str:
        return f"task {self.task} ({self.weights})"


#: existing masks, each with the record of the model that made it
Found = list[tuple[Path, MadeBy]]


CUT = "is not a readable image (damaged or cut)"


def _all_focus_masks(folder: str, filenames: Iterable[str], suffixes: set[str]) -> bool:
    """Whether a folder holds images and every one is a mask napari-focus wrote. Masks
    are PNG or TIFF, so another format there costs no read; a folder of photos costs
    one (its first image), a folder of masks one for each, several at a time (a network
    share answers each open slowly)."""
    names = sorted(n for n in filenames if not n.startswith(".") and
                   Path(n).suffix.lower() in suffixes)  # fmt: skip
    if not names or any(Path(n).suffix.lower() not in (".png", ".tif", ".tiff") for n in names):
        return False
    if read_made_by(Path(folder, names[0])) is None:
        return False
    with ThreadPoolExecutor(max_workers=8) as pool:
        records = pool.map(read_made_by, [Path(folder, n) for n in names[1:]])
        return all(record is not None for record in records)


class OutputFolders:
    """Tells, folder by folder of a walk below ``root``, which subfolders are earlier
    runs' outputs: every image in them a mask napari-focus wrote (a mask corrected
    and saved without its record, or a photo among them, keeps the folder in). Their
    subfolders go with them. A ``root`` that is such a folder itself was asked for as
    it is: nothing below it is left out (see also :func:`walk_leaving_out_outputs`).
    ``found``: the topmost folders left out. ``enabled=False`` leaves nothing out."""

    def __init__(
        self, root: str | os.PathLike, image_suffixes: Iterable[str], enabled: bool = True
    ) -> None:
        self.found: list[Path] = []
        self._root = os.fspath(root)
        self._suffixes = {suffix.lower() for suffix in image_suffixes}
        self._on = enabled

    def leaves_out(self, dirpath: str, filenames: Iterable[str]) -> bool:
        if not self._on:
            return False
        if dirpath == self._root:
            self._on = not _all_focus_masks(dirpath, filenames, self._suffixes)
            return False
        path = Path(dirpath)
        if any(folder in path.parents for folder in self.found):
            return True
        if _all_focus_masks(dirpath, filenames, self._suffixes):
            self.found.append(path)
            return True
        return False


def walk_leaving_out_outputs(
    walk: Callable[[OutputFolders], list[Any]], root: str | os.PathLike,
    image_suffixes: Iterable[str], enabled: bool,
) -> tuple[list[Any], list[Path]]:  # fmt: skip
    """``walk(outputs)``'s images and the folders it left out. A ``root`` whose images
    all lie in left-out folders (the output tree of a ``--recursive`` run, its masks in
    subfolders only) was asked for as it is: walked again, leaving nothing out."""
    outputs = OutputFolders(root, image_suffixes, enabled)
    images = walk(outputs)
    if enabled and not images and outputs.found:
        return walk(OutputFolders(root, image_suffixes, enabled=False)), []
    return images, outputs.found


def mask_folders_note(folders: list[Path]) -> str:
    """What a command says of the folders :class:`OutputFolders` left out."""
    if len(folders) == 1:
        return (f"left out {folders[0]} and its subfolders: its images are masks "
                "napari-focus wrote (an earlier run's output)")  # fmt: skip
    others = f"{len(folders) - 1} more folder" + ("s" if len(folders) > 2 else "")
    return (f"left out {folders[0]}, {others} and their subfolders: their images are "
            "masks napari-focus wrote (earlier runs' outputs)")  # fmt: skip


def read_made_by(path: str | os.PathLike) -> MadeBy | None:
    """The record of a mask file, or None (no record, or the file cannot be read)."""
    return _look(Path(path), whole=False)[0]


def _look(path: Path, whole: bool = True) -> tuple[MadeBy | None, str]:
    """The record of a mask file and, for a file that is there but no readable image,
    what is wrong with it ('' otherwise: read, missing, or too large to open here);
    ``whole``: also a file cut after its header (a PNG read to its end)."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False)]
                cut = bool(ends) and max(ends) > path.stat().st_size  # pixels past the end
                return MadeBy.parse(page.description), CUT if cut else ""
        from PIL import Image

        with Image.open(path) as image:  # reads the chunks before the pixels only
            record = MadeBy.parse(image.info.get(RECORD_KEY))
            if whole and image.format == "PNG":
                image.verify()  # every chunk to the end (checksums, no decoding): not cut
            return record, ""
    except FileNotFoundError:
        return None, ""
    except Exception as error:  # a damaged, cut or huge file (PIL and tifffile raise many
        return None, _problem(path, error)  # kinds): no record, as for a mask drawn by hand


def _problem(path: Path, error: Exception) -> str:
    from PIL import Image

    if isinstance(error, Image.DecompressionBombError):
        return ""  # an image, only larger than PIL opens by default
    if isinstance(error, OSError) and error.strerror:
        return f"cannot be read ({error.strerror})"
    try:
        empty = path.stat().st_size == 0
    except OSError:
        empty = False
    return "is empty (0 bytes)" if empty else CUT


class MasksOfAnotherTask(ValueError):
    """Masks to be skipped (their files exist) were predicted for another task: the run
    would leave them as if they were its own. ``found``: ``(path, record)`` of each."""

    def __init__(self, found: Found, run: MadeBy) -> None:
        self.found, self.run = found, run
        super().__init__(
            f"the output folder holds masks of another task: {first_and_count(found)}; "
            f"this run is {run.describe()}: choose another output folder, or overwrite them"
        )

    def __reduce__(self) -> tuple:
        return (type(self), (self.found, self.run))


@dataclass(frozen=True)
class ExistingMasks:
    """What the masks a run would keep are: ``other_weights``, those of other weights of
    the run's task (kept, and said); ``unreadable``, files at a mask's name that are no
    readable image (an empty or cut file), with what is wrong, not to be counted done."""

    other_weights: Found = field(default_factory=list)
    unreadable: dict[Path, str] = field(default_factory=dict)


def check_existing_masks(masks: Iterable[str | os.PathLike], run: MadeBy) -> ExistingMasks:
    """Existing ``masks`` (to be skipped) against this ``run``: raises
    :class:`MasksOfAnotherTask` for masks of another task; see :class:`ExistingMasks`."""
    other_task: Found = []
    found = ExistingMasks()
    paths = [Path(mask) for mask in masks]
    with ThreadPoolExecutor(8) as pool:  # a file each; on a network drive, a round trip
        looked = list(pool.map(_look, paths))
    for path, (record, problem) in zip(paths, looked, strict=True):
        if problem:
            found.unreadable[path] = problem
        if record is None or record == run:
            continue
        (other_task if record.task != run.task else found.other_weights).append((path, record))
    if other_task:
        raise MasksOfAnotherTask(other_task, run)
    return found


def first_and_count(found: Found) -> str:
    """``a.png, made for task sod (focus_large_sod.pth)`` (and N more)."""
    path, record = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"{path.name}, made for {record.describe()}{more}"


def damaged_outputs(
    outputs_of: Iterable[tuple[str, Iterable[str | os.PathLike]]],
    unreadable: Mapping[Path, str],
) -> dict[str, str]:
    """Inputs (``(source, its output paths)``) with an output file that is there but is
    no readable image (``unreadable``: path -> what is wrong), each with why it is not
    done (both engines): the file is not replaced (it may be someone's), the user
    removes it."""
    damaged = {}
    for source, outputs in outputs_of:
        for path in map(Path, outputs):
            if path in unreadable:
                damaged[source] = (
                    f"{path.name} in --out {unreadable[path]}: delete it, then run again to "
                    "predict this image"
                )
    return damaged
