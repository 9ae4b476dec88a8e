"""Ranking a folder by proposal uncertainty (the ``napari-focus rank`` command: rank_cli).

CSV columns (UTF-8, header line; empty cell = not available): ``rank`` (1 = most
doubtful), ``name``, ``path`` (relative to the folder, POSIX), ``uncertainty``,
``seconds`` (prediction time), ``width``, ``height``, then with a ground-truth folder the
:data:`napari_focus.quality.METRICS` (``reference`` names the mask used), and ``error``
for images that failed (ranked last).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..input_files import one_name_each
from ..io import IMAGE_EXTENSIONS, check_single_image, failure_text, read_image
from ..mask_files import read_mask_file
from ..quality import (
    DEFAULT_UNCERTAINTY,
    UNCERTAINTY_METHODS,
    mask_metrics,
    uncertainty,
)
from ..quality import write_csv as _write_csv
from .queue import scan_folder
from .references import MaskFolder

Progress = Callable[[int, int, str], None]


@dataclass
class RankRow:
    """One image of a ranking; see the module docstring for the CSV columns."""

    path: str
    name: str
    uncertainty: float = math.nan
    seconds: float = math.nan
    width: int | None = None
    height: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    reference: str | None = None
    error: str | None = None
    rank: int = 0

    def as_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "rank": self.rank,
            "name": self.name,
            "path": self.path,
            "uncertainty": self.uncertainty,
            "seconds": self.seconds,
            "width": self.width,
            "height": self.height,
            **self.metrics,
        }
        if self.reference is not None:
            row["reference"] = self.reference
        if self.error is not None:
            row["error"] = self.error
        return row


def rank_folder(
    folder: str | os.PathLike,
    predictor: Any,
    *,
    recursive: bool = False,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    pattern: str | None = None,
    gt_folder: str | os.PathLike | None = None,
    tta: bool = False,
    method: str = DEFAULT_UNCERTAINTY,
    progress: Progress | None = None,
    keys: Sequence[str] | None = None,
) -> list[RankRow]:
    """Predict every image of ``folder`` and rank by :func:`~napari_focus.quality.
    uncertainty` (``method``), most doubtful first (``rank`` 1); failures come last with
    ``error`` set.

    ``predictor`` needs ``predict(image, tta=...) -> Prediction``. With ``gt_folder``,
    each image with a mask there (see :func:`.references.reference_mask_path`) also gets
    :func:`~napari_focus.quality.mask_metrics` of its mask (the binary mask ``predict``
    writes, which the official FOCUS evaluation scores); when it is
    ``folder`` itself, the mask files are not ranked as images. Images that would pair
    with one mask (``a.png`` and ``a.jpg``; ``sub/a.png`` beside ``a.png`` without a
    ``sub/`` of masks) fail with the reason (:func:`shared_references`), unscored. ``progress`` is
    called as ``progress(done, total, name)`` after each image. ``keys``: the images
    :func:`images_to_rank` listed for these arguments already (a caller that counted
    them), not listed again.
    """
    if method not in UNCERTAINTY_METHODS:
        raise ValueError(f"unknown uncertainty method {method!r}")
    root = Path(folder)
    if keys is None:
        keys = images_to_rank(root, recursive=recursive, extensions=extensions,
                              pattern=pattern, gt_folder=gt_folder)  # fmt: skip
    keys = list(keys)
    masks = MaskFolder(gt_folder) if gt_folder is not None else None
    shared = shared_references(root, keys, gt_folder) if gt_folder is not None else {}
    rows: list[RankRow] = []
    for done, key in enumerate(keys, start=1):
        row = RankRow(path=key, name=Path(key).stem)
        try:
            if key in shared:  # scored against another image's ground truth: refused
                raise SharedReferenceError(shared[key])
            image = check_single_image(read_image(root / key), Path(key).name)
            row.height, row.width = int(image.shape[0]), int(image.shape[1])
            start = time.perf_counter()
            prediction = predictor.predict(image, tta=tta)
            row.seconds = time.perf_counter() - start
            row.uncertainty = uncertainty(prediction.probability, method)
            if masks is not None:
                mask_path = masks.find(root / key, relative=key)
                if mask_path is not None:
                    try:
                        reference = read_mask_file(mask_path)
                    except (OSError, ValueError) as error:  # the mask's fault, said so
                        said = failure_text(error)
                        raise ValueError(f"its ground truth {mask_path}: {said}") from error
                    if reference.shape != prediction.mask.shape:
                        (h, w), (mh, mw) = prediction.mask.shape, reference.shape
                        raise ValueError(
                            f"its ground truth {mask_path} is {mw}x{mh} pixels, the image "
                            f"{w}x{h}: give the mask drawn on this image"
                        )
                    row.metrics = mask_metrics(prediction.mask.astype(np.float32), reference)
                    row.reference = str(mask_path)
        except SharedReferenceError as error:
            row.error = str(error)
        except Exception as error:  # one bad image must not stop the ranking
            row.error = failure_text(error)
        rows.append(row)
        if progress is not None:
            progress(done, len(keys), key)
    rows.sort(key=lambda r: (r.error is not None, -r.uncertainty if r.error is None else 0))
    for rank, row in enumerate(rows, start=1):
        row.rank = rank
    return rows


def images_to_rank(
    root: Path,
    *,
    recursive: bool = False,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    pattern: str | None = None,
    mask_folders: list[Path] | None = None,
    other_names: list[tuple[str, str]] | None = None,
    gt_folder: str | os.PathLike | None = None,
    unreadable: list[str] | None = None,
) -> list[str]:
    """The images :func:`rank_folder` ranks: :func:`.scan.scan_folder`'s, each file once
    (:func:`~napari_focus.input_files.one_name_each`, as predict takes them), and not the
    masks of a ``gt_folder`` that is ``root`` itself; the names left out go to
    ``other_names`` as (name left out, name kept), earlier runs' outputs left out to
    ``mask_folders``, the folders that could not be listed to ``unreadable``."""
    keys = scan_folder(root, recursive=recursive, extensions=extensions, pattern=pattern,
                       mask_folders=[] if mask_folders is None else mask_folders,
                       unreadable=unreadable)  # fmt: skip
    key_of = {root / key: key for key in keys}
    kept, others = one_name_each(key_of)
    if other_names is not None:
        other_names += [(key_of[left], key_of[taken]) for left, taken in others]
    images = [key_of[path] for path in kept]
    if gt_folder is not None and Path(gt_folder).resolve() == root.resolve():
        images = _without_masks(root, images)
    return images


class SharedReferenceError(ValueError):
    """Several images pair with one ground-truth mask (same stem, or a subfolder image
    whose mask is looked for in the top folder); none of them is scored against it."""


def shared_references(
    root: Path, keys: list[str], gt_folder: str | os.PathLike
) -> dict[str, str]:
    """For each image of ``keys`` whose ground-truth mask another image also pairs with,
    why it is not scored against it (in words naming the mask and the other images)."""
    reasons = {}
    for mask, claimants in shared_reference_groups(root, keys, gt_folder):
        for key in claimants:
            others = ", ".join(k for k in claimants if k != key)
            reasons[key] = (
                f"its ground truth {mask} is also that of {others}; rename one, or put the "
                "masks of images in subfolders into the same subfolders of the ground-truth folder"
            )
    return reasons


def shared_reference_groups(
    root: Path, keys: list[str], gt_folder: str | os.PathLike
) -> list[tuple[Path, list[str]]]:
    """(mask, the images that would all pair with it) for every ground-truth mask of
    ``gt_folder`` that several images of ``keys`` pair with."""
    masks = MaskFolder(gt_folder)
    claims: dict[Path, tuple[Path, list[str]]] = {}
    for key in keys:
        found = masks.named_after(root / key, relative=key)  # a.png and a.jpg: both
        if found is not None:
            claims.setdefault(found.resolve(), (found, []))[1].append(key)
    return [(mask, keys) for mask, keys in claims.values() if len(keys) > 1]


def several_references(
    root: Path, keys: list[str], gt_folder: str | os.PathLike
) -> list[tuple[str, list[Path]]]:
    """(image, its candidate masks) for every image of ``keys`` that several ground-truth
    masks of ``gt_folder`` are named after (``a.png`` and ``a_gt.png``); the first is the
    one it is scored against."""
    masks = MaskFolder(gt_folder)
    found = ((key, masks.all_named_after(root / key, relative=key)) for key in keys)
    return [(key, candidates) for key, candidates in found if len(candidates) > 1]


def _without_masks(root: Path, keys: list[str]) -> list[str]:
    """Drop the files that are another listed image's mask (masks beside their images)."""
    beside = MaskFolder(root)
    masks = {
        found.resolve()
        for key in keys
        if (found := beside.find(root / key, relative=key)) is not None
    }
    return [key for key in keys if (root / key).resolve() not in masks]


def write_ranking_csv(rows: Iterable[RankRow], path: str | os.PathLike) -> Path:
    """Write the ranking as CSV (atomically); see the module docstring for columns."""
    return _write_csv(list(rows), path)
