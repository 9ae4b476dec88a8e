"""The ``napari-focus rank`` command: :func:`.rank.rank_folder` over a folder, written as
CSV (and with ``--report`` as an HTML page)."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from ..atomic import WriteError, check_writable_file, check_writable_folder
from ..fs_text import CSV_ERRORS
from ..input_files import images_in_subfolders
from ..mask_provenance import mask_folders_note
from ..quality import DEFAULT_UNCERTAINTY, REPORT_TITLE, UNCERTAINTY_METHODS
from .rank import (
    images_to_rank,
    rank_folder,
    several_references,
    shared_reference_groups,
    write_ranking_csv,
)


def add_rank_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``rank`` to an argparse subparsers object (``func=run_rank``)."""
    rank = subparsers.add_parser(
        "rank",
        help="rank a folder's images by proposal uncertainty (CSV)",
        description="Predict every image of FOLDER and write them, most doubtful first, "
        "as CSV; with --gt also quality metrics against ground-truth masks.",
    )
    from ..cli_arguments import add_model_arguments, path_argument

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


def _say_several_references(folder: Path, keys: list[str], gt: str) -> None:
    """The images that several --gt masks are named after, and which one counts."""
    from ..cli_common import plural

    several = several_references(folder, keys, gt)
    if not several:
        return
    shown = "; ".join(
        f"{key}: {', '.join(mask.name for mask in masks)}" for key, masks in several[:3]
    )
    more = f"; and {len(several) - 3} more" if len(several) > 3 else ""
    print(f"napari-focus: note: --gt: several masks in {gt} are named after "
          f"{plural(len(several), 'image')} ({shown}{more}); each is scored against the "
          "first of them (<stem>.png before <stem>_gt.png before <stem>_mask.png): move the "
          "others out of --gt to choose another", file=sys.stderr)  # fmt: skip


def run_rank(args: argparse.Namespace) -> int:
    from ..cli_common import (
        EXIT_FAILED_IMAGES,
        EXIT_SETUP_ERROR,
        load_predictor_or_say_why,
        plural,
    )
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
        print(f"napari-focus: --out: {error}; choose another --out", file=sys.stderr)
        return EXIT_SETUP_ERROR
    if not replaceable_ranking(out):
        print(f"napari-focus: --out: {out} exists and is not a ranking CSV; choose another "
              "--out or move the file away", file=sys.stderr)  # fmt: skip
        return EXIT_SETUP_ERROR
    if args.report:
        try:
            if Path(args.report).exists() and not Path(args.report).is_dir():
                raise WriteError(args.report, "it is a file, not a folder")
            check_writable_folder(args.report)
        except WriteError as error:
            print(f"napari-focus: --report: {error}; choose another --report folder",
                  file=sys.stderr)  # fmt: skip
            return EXIT_SETUP_ERROR
        foreign = _foreign_report_file(Path(args.report))
        if foreign is not None:
            print(f"napari-focus: --report: {foreign} exists and is not of an earlier "
                  "report; choose another --report folder or move the file away",
                  file=sys.stderr)  # fmt: skip
            return EXIT_SETUP_ERROR
    mask_folders: list[Path] = []
    other_names: list[tuple[str, str]] = []
    unreadable: list[str] = []
    keys = images_to_rank(folder, recursive=args.recursive, pattern=args.pattern,
                          mask_folders=mask_folders, other_names=other_names,
                          gt_folder=args.gt, unreadable=unreadable)  # fmt: skip
    for text in unreadable:
        print(f"napari-focus: {text}", file=sys.stderr)
    if mask_folders and not args.quiet:
        print(f"napari-focus: note: {mask_folders_note(mask_folders)}", file=sys.stderr)
    leave_out = [Path(args.gt)] if args.gt else []
    if not args.recursive and not args.quiet and images_in_subfolders(folder, leave_out):
        print(f"napari-focus: note: images in subfolders of {folder} are not ranked; add "
              "--recursive to include them", file=sys.stderr)  # fmt: skip
    if other_names and not args.quiet:
        from ..cli_common import other_names_note

        said = other_names_note(other_names, "ranked once, under its own name")
        print(f"napari-focus: {said}", file=sys.stderr)
    if not keys:
        below = " or its subfolders" if args.recursive else ""
        match = f" match --pattern {args.pattern!r}" if args.pattern else ""
        print(f"napari-focus: no images in {folder}{below}{match}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    if args.gt:
        _say_shared_references(folder, keys, args.gt)
        if not args.quiet:
            _say_several_references(folder, keys, args.gt)
    predictor = load_predictor_or_say_why(args)
    if predictor is None:
        return EXIT_SETUP_ERROR

    from ..cli_common import Terminated, interrupted_exit, progress_bar, sigterm_as_interrupt

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
                keys=keys,
            )
    except KeyboardInterrupt as stop:  # a ranking of some images would read as the whole
        bar.close()
        kept = f"{out} is unchanged" if out.exists() else f"{out} was not written"
        print(f"napari-focus: interrupted after {ranked[0]} of {len(keys)} images; "
              f"nothing was written ({kept})", file=sys.stderr)  # fmt: skip
        return interrupted_exit(isinstance(stop, Terminated))
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
    not_read = f", {plural(len(unreadable), 'folder')} not read" if unreadable else ""
    print(
        f"napari-focus: ranked {plural(len(rows) - len(failed), 'image')}, {len(failed)} failed"
        f"{not_read} -> {out}",
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
    return EXIT_FAILED_IMAGES if failed or unreadable else 0
