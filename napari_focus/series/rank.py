"""Ranking a folder by proposal uncertainty, and the ``napari-focus rank`` command.

CSV columns (UTF-8, header line; empty cell = not available): ``rank`` (1 = most
doubtful), ``name``, ``path`` (relative to the folder, POSIX), ``uncertainty``,
``seconds`` (prediction time), ``width``, ``height``, then with a ground-truth folder the
:data:`napari_focus.quality.METRICS` (``reference`` names the mask used), and ``error``
for images that failed (ranked last).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import WriteError, check_writable_file, check_writable_folder
from ..fs_text import CSV_ERRORS
from ..io import IMAGE_EXTENSIONS, check_single_image, describe_read_error, read_image
from ..mask_files import read_mask_file
from ..mask_provenance import mask_folders_note
from ..quality import (
    DEFAULT_UNCERTAINTY,
    REPORT_TITLE,
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
    called as ``progress(done, total, name)`` after each image.
    """
    if method not in UNCERTAINTY_METHODS:
        raise ValueError(f"unknown uncertainty method {method!r}")
    root = Path(folder)
    # earlier runs' outputs left out, as run_rank's scan said
    keys = scan_folder(root, recursive=recursive, extensions=extensions, pattern=pattern,
                       mask_folders=[])  # fmt: skip
    if gt_folder is not None and Path(gt_folder).resolve() == root.resolve():
        keys = _without_masks(root, keys)
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
                        said = describe_read_error(error)
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
            path = root / key
            dangling = isinstance(error, FileNotFoundError) and path.is_symlink()
            row.error = (
                f"{Path(key).name} is a link to {os.readlink(path)!r}, which does not exist"
                if dangling else describe_read_error(error)
            )  # fmt: skip
        rows.append(row)
        if progress is not None:
            progress(done, len(keys), key)
    rows.sort(key=lambda r: (r.error is not None, -r.uncertainty if r.error is None else 0))
    for rank, row in enumerate(rows, start=1):
        row.rank = rank
    return rows


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


# --- command line -------------------------------------------------------------------------


def add_rank_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``rank`` to an argparse subparsers object (``func=run_rank``)."""
    rank = subparsers.add_parser(
        "rank",
        help="rank a folder's images by proposal uncertainty (CSV)",
        description="Predict every image of FOLDER and write them, most doubtful first, "
        "as CSV; with --gt also quality metrics against ground-truth masks.",
    )
    from ..cli_common import add_model_arguments, path_argument

    rank.add_argument("folder", type=path_argument, help="folder of images")
    add_model_arguments(rank)
    rank.add_argument("--gt", metavar="MASK_FOLDER", type=path_argument,
                      help="ground-truth masks, matched by stem")  # fmt: skip
    rank.add_argument("--out", metavar="CSV", type=path_argument,
                      help="CSV path (default: ./focus_<task>_rank.csv)")  # fmt: skip
    rank.add_argument("--report", metavar="DIR", type=path_argument,
                      help="also write metrics.csv and report.html")  # fmt: skip
    rank.add_argument("--recursive", action="store_true", help="include sub-folders")
    rank.add_argument(
        "--pattern", metavar="GLOB", help="glob on file name or relative path, e.g. '*_rgb.*'"
    )
    rank.add_argument(
        "--method",
        choices=UNCERTAINTY_METHODS,
        default=DEFAULT_UNCERTAINTY,
        help="uncertainty score: entropy (pixel error) or iou (object-relative error)",
    )
    rank.add_argument("--quiet", action="store_true", help="no progress bar")
    rank.set_defaults(func=run_rank)
    return rank


def replaceable_ranking(path: Path) -> bool:
    """Whether writing a ranking to ``path`` loses nothing: no file there, or a ranking
    CSV (a header with ``rank`` and ``path``, as a rerun of this command leaves)."""
    if not path.exists():
        return True
    try:
        with path.open(encoding="utf-8-sig", errors=CSV_ERRORS, newline="") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return {"rank", "path"} <= set(header)


def _foreign_report_file(folder: Path) -> Path | None:
    """The file of ``folder`` a report would replace that an earlier report did not
    write (``metrics.csv`` that is no ranking, ``report.html`` of another title)."""
    metrics, page = folder / "metrics.csv", folder / "report.html"
    if not replaceable_ranking(metrics):
        return metrics
    if page.exists():
        try:
            with page.open(encoding="utf-8") as handle:
                head = handle.read(512)
        except (OSError, UnicodeDecodeError):
            return page
        if REPORT_TITLE not in head:
            return page
    return None


def _say_shared_references(folder: Path, keys: list[str], gt: str) -> None:
    """Before the model loads: the images that would share one --gt mask (not scored)."""
    for mask, claimants in shared_reference_groups(folder, keys, gt):
        print(f"napari-focus: --gt: {mask} would be the ground truth of "
              f"{', '.join(claimants)}; these fail, unscored: each image needs a mask of its "
              "own stem (rename them), and images in subfolders their masks in the same "
              f"subfolders of --gt {gt}", file=sys.stderr)  # fmt: skip


def run_rank(args: argparse.Namespace) -> int:
    from ..cli_common import EXIT_FAILED_IMAGES, EXIT_SETUP_ERROR, load_predictor_or_say_why
    from ..quality import folder_report, require_metrics

    folder = Path(args.folder)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is a file"
        print(f"napari-focus: FOLDER {folder} {what}; rank takes a folder of images (for "
              "single files, use predict)", file=sys.stderr)  # fmt: skip
        return EXIT_SETUP_ERROR
    if args.gt and not Path(args.gt).is_dir():
        print(f"napari-focus: --gt {args.gt} is not a folder; give the folder of "
              "ground-truth masks (<stem>.png, <stem>_gt.png, ...)", file=sys.stderr)  # fmt: skip
        return EXIT_SETUP_ERROR
    if args.gt:
        try:
            require_metrics()
        except ImportError as error:
            print(f"napari-focus: --gt: {error}", file=sys.stderr)
            return EXIT_SETUP_ERROR
    out = Path(args.out or f"focus_{args.task}_rank.csv")
    try:  # before any prediction: a typo in --out must not cost the whole run
        check_writable_file(out)
    except WriteError as error:
        print(f"napari-focus: --out: {error}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    if not replaceable_ranking(out):
        print(f"napari-focus: --out: {out} exists and is not a ranking CSV; choose another "
              "--out or move the file away", file=sys.stderr)  # fmt: skip
        return EXIT_SETUP_ERROR
    if args.report:
        try:
            if Path(args.report).exists() and not Path(args.report).is_dir():
                raise WriteError(args.report, "it is a file; --report takes a folder")
            check_writable_folder(args.report)
        except WriteError as error:
            print(f"napari-focus: --report: {error}", file=sys.stderr)
            return EXIT_SETUP_ERROR
        foreign = _foreign_report_file(Path(args.report))
        if foreign is not None:
            print(f"napari-focus: --report: {foreign} exists and is not of an earlier "
                  "report; choose another --report folder or move the file away",
                  file=sys.stderr)  # fmt: skip
            return EXIT_SETUP_ERROR
    mask_folders: list[Path] = []
    keys = scan_folder(folder, recursive=args.recursive, pattern=args.pattern,
                       mask_folders=mask_folders)  # fmt: skip
    if mask_folders and not args.quiet:
        print(f"napari-focus: note: {mask_folders_note(mask_folders)}", file=sys.stderr)
    if not keys:
        below = " or its subfolders" if args.recursive else ""
        match = f" match --pattern {args.pattern!r}" if args.pattern else ""
        print(f"napari-focus: no images in {folder}{below}{match}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    if args.gt:
        _say_shared_references(folder, keys, args.gt)
    predictor = load_predictor_or_say_why(args)
    if predictor is None:
        return EXIT_SETUP_ERROR

    from ..cli_common import EXIT_INTERRUPTED, Terminated, progress_bar, sigterm_as_interrupt

    bar = progress_bar(len(keys), "rank", "image", quiet=args.quiet, prefix="napari-focus")
    ranked = [0]

    def advance(done: int, _total: int, _name: str) -> None:
        ranked[0] = done
        bar.update(1)

    try:
        with sigterm_as_interrupt():
            rows = rank_folder(
                folder,
                predictor,
                recursive=args.recursive,
                pattern=args.pattern,
                gt_folder=args.gt,
                tta=args.tta,
                method=args.method,
                progress=advance,
            )
    except KeyboardInterrupt as stop:  # a ranking of some images would read as the whole
        bar.close()
        kept = f"{out} is unchanged" if out.exists() else f"{out} was not written"
        print(f"napari-focus rank: interrupted after {ranked[0]} of {len(keys)} images; "
              f"nothing was written ({kept})", file=sys.stderr)  # fmt: skip
        return 128 + int(signal.SIGTERM) if isinstance(stop, Terminated) else EXIT_INTERRUPTED
    finally:
        bar.close()
    try:
        write_ranking_csv(rows, out)
        if args.report:
            folder_report(rows, args.report)
    except OSError as error:
        print(f"napari-focus: {error}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    failed = [r for r in rows if r.error is not None]
    print(
        f"napari-focus: ranked {len(rows) - len(failed)} images, {len(failed)} failed -> {out}",
        file=sys.stderr,
    )
    unscored = sum(1 for r in rows if r.error is None and not r.metrics)
    if args.gt and unscored:
        every = unscored == len(rows) - len(failed)
        who = "no image has" if every else f"{unscored} of the images have no"
        print(f"napari-focus: note: {who} ground-truth mask in --gt {args.gt} (<stem>.png, "
              "<stem>_gt.png or <stem>_mask.png; .png, .bmp or .tif): "
              f"{'the ranking has no metrics' if every else 'no metrics for them'}",
              file=sys.stderr)  # fmt: skip
    for row in failed:
        print(f"  failed: {row.path}: {row.error}", file=sys.stderr)
    return EXIT_FAILED_IMAGES if failed else 0
