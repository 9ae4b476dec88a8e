"""``napari-focus export``: a folder of images plus a folder of masks into a split.

Images and masks are paired by file stem: a mask ``<stem>.png|.bmp|.tif|.tiff`` or one
that follows the layout's naming (``<stem>_gt.png`` for casia-train). Masks named
``<stem>_probability.*`` (written by ``napari-focus predict --probability``) are ignored.
Exit status: 0 when every image was exported or skipped by policy, 1 when any sample
failed or any file had no partner, 2 when nothing could be started.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ..atomic import WriteError, check_writable_folder
from ..cli_arguments import path_argument
from ..cli_common import EXIT_FAILED_IMAGES as EXIT_FAILED
from ..cli_common import EXIT_SETUP_ERROR
from ..input_files import images_in_subfolders
from ..mask_files import read_mask_file
from ..mask_provenance import read_made_by
from .errors import ExportError, SampleExistsError, UnusableNameError
from .export import ON_EXISTS, dataset_dir, export_sample
from .layouts import LAYOUTS, get_layout, layout_for_task
from .names import fitting_name
from .pairing import has_images, pair_files

__all__ = ["add_export_parser", "pair_files", "run_export"]


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``export`` sub-command to an ``argparse`` sub-parsers object."""
    from ..presets import TASKS

    parser = subparsers.add_parser(
        "export",
        help="export images + corrected masks into a FOCUS training dataset",
        description="Export images and their masks into a FOCUS training-dataset layout.",
    )
    parser.add_argument("images_dir", metavar="IMAGES_DIR", type=path_argument,
                        help="folder of images")  # fmt: skip
    parser.add_argument(
        "masks_dir",
        metavar="MASKS_DIR",
        type=path_argument,
        help="folder of masks: foreground is > 128 in 8-bit masks (as the official "
        "evaluation reads ground truth), 1 in 0/1 masks, any colour channel in colour masks",
    )
    parser.add_argument(
        "--root",
        required=True,
        metavar="DATASETS",
        help="the FOCUS datasets/ folder (DETECTRON2_DATASETS)",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        type=str.lower,
        metavar="LAYOUT",
        help=f"training split to add to: {', '.join(LAYOUTS)} (default: the --task's "
        "training split)",
    )
    parser.add_argument(
        "--task",
        choices=TASKS,
        type=str.lower,
        help="sod = salient objects, cod = camouflaged objects, sd = shadows, dbd = defocus "
        "blur, fd = forgeries; picks the default --layout and is recorded in provenance",
    )
    parser.add_argument(
        "--on-exists",
        choices=ON_EXISTS,
        default="error",
        dest="on_exists",
        help="when a sample of that name exists: error (default, report it), skip, "
        "rename (append _1, _2, ...) or replace",
    )
    parser.add_argument(
        "--recursive",
        action="store_true",
        help="also the images in subfolders of IMAGES_DIR, each paired with a mask in the "
        "same subfolder of MASKS_DIR (as predict --recursive writes them), else in MASKS_DIR",
    )
    parser.add_argument("--quiet", action="store_true",
                        help="only the summary, then the pairs that failed or had no "
                        "partner: no line per pair")  # fmt: skip
    parser.set_defaults(func=run_export)
    return parser


def _read_pair(image_path: Path, mask_path: Path) -> tuple[Any, Any]:
    """The image and its mask, both in the image's upright (EXIF) frame; a mask that
    cannot be read or has another size says so, naming the mask file."""
    from ..io import file_orientation, read_image

    image = read_image(image_path)
    try:
        mask = read_mask_file(mask_path)
    except (OSError, ValueError) as error:
        text = str(error)
        for named in (f"{mask_path}: ", f"{mask_path.name}: "):  # said once, here
            text = text.removeprefix(named)
        raise ValueError(f"its mask {mask_path}: {text}") from error
    height, width = image.shape[:2]
    if mask.shape == (height, width):
        return image, mask
    mask_height, mask_width = mask.shape
    message = (
        f"its mask {mask_path} is {mask_width}x{mask_height} pixels, the image "
        f"{width}x{height}"
    )
    turned = False
    if mask.shape == (width, height) and image_path.suffix.lower() not in (".tif", ".tiff"):
        from PIL import Image

        with Image.open(image_path) as stored:
            turned = file_orientation(stored) >= 5
    if turned:
        message += (
            ": the image is shown turned by its EXIF orientation and the mask is in its "
            "stored, unturned frame. Make the mask on the upright image (napari-focus "
            "predict and annotate read images upright)"
        )
    else:
        message += ": a mask has the size of its image; check that the right files pair up"
    raise ValueError(message)


def _how_to_go_on(policy: str, left: list[tuple[Path, Path]]) -> str:
    """What exports the pairs an interrupted export left, and only them."""
    if policy == "replace":
        return "the same command goes on: the samples replaced are replaced again"
    if policy != "rename" or not left:
        return "the same command with --on-exists skip goes on"
    return (  # a rerun would add the samples written again, under new names
        f"from {left[0][0].name} on, in name order: export those images from a folder "
        "of their own, since the same command would write the others again as new samples"
    )


def _export_pairs(
    args: argparse.Namespace, layout: str, pairs: list[tuple[Path, Path]],
    counts: dict[str, int], failures: list[str], request: Any,
) -> list[tuple[Path, Any]]:  # fmt: skip
    """Export each pair, counting what happened into ``counts`` and ``failures``, until
    ``request`` (a :class:`~napari_focus.cli_common.StopRequest`) asks to stop. Returns
    the masks predicted for another task than the split's, with their records."""
    task = args.task or get_layout(layout).task  # the layout implies its task
    other_task: list[tuple[Path, Any]] = []
    for image_path, mask_path in pairs:
        if request.signum is not None:
            break
        made_by = read_made_by(mask_path)  # a mask predict wrote, corrected or not
        if made_by is not None and task is not None and made_by.task != task:
            other_task.append((mask_path, made_by))
        try:
            result = export_sample(
                args.root,
                layout,
                fitting_name(image_path.stem, get_layout(layout)),
                *_read_pair(image_path, mask_path),
                on_exists=args.on_exists,
                provenance={
                    "source_path": str(image_path.resolve()),
                    "task": task,
                    "weights_id": made_by.weights if made_by is not None else None,
                    "mask_path": str(mask_path.resolve()),
                    "tool": "napari-focus export",
                },
            )
        except (ExportError, OSError, ValueError, MemoryError) as exc:
            words = exc.cli_message() if isinstance(exc, SampleExistsError) else str(exc)
            if isinstance(exc, UnusableNameError):  # the sample is named after the file
                words = f"{exc.reason}; rename the image file"
        except Exception as exc:  # one bad pair (e.g. an undecodable file) must not stop
            words = str(exc).strip() or type(exc).__name__  # a bare exception: its kind
        else:
            words = None
        if words is not None:
            failures.append(f"{image_path}: {words}")
            if not args.quiet:
                print(f"failed: {image_path.name}: {words}", file=sys.stderr)
            continue
        for message in result.recovered:
            print(f"  recovered: {message}", file=sys.stderr)
        counts[result.status] += 1
        if not args.quiet:
            print(f"{result.status}: {image_path.name} -> {result.name} ({layout})")
    return other_task


def run_export(args: argparse.Namespace) -> int:
    try:
        layout = args.layout or (layout_for_task(args.task) if args.task else None)
    except ValueError as exc:
        print(f"napari-focus: {exc}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    if layout is None:
        print("napari-focus: give --layout (the training split to add to) or --task (its "
              "default split)", file=sys.stderr)  # fmt: skip
        return EXIT_SETUP_ERROR
    split_task = get_layout(layout).task if layout in LAYOUTS else None
    if args.task and split_task and args.task != split_task:
        print(f"napari-focus: --task {args.task} does not fit --layout {layout}, a "
              f"{split_task} split (the task is recorded with each sample); leave --task "
              f"out, or give the {args.task} split's layout ({layout_for_task(args.task)})",
              file=sys.stderr)  # fmt: skip
        return EXIT_SETUP_ERROR
    images_dir, masks_dir = Path(args.images_dir), Path(args.masks_dir)
    for label, folder in (("IMAGES_DIR", images_dir), ("MASKS_DIR", masks_dir)):
        if not folder.is_dir():
            what = "does not exist" if not folder.exists() else "is a file"
            print(f"napari-focus: {label} {folder} {what}; export takes a folder of images "
                  "and a folder of their masks", file=sys.stderr)  # fmt: skip
            return EXIT_SETUP_ERROR

    if not str(args.root).strip():
        print("napari-focus: --root is empty; give the FOCUS datasets/ folder to export "
              "into (e.g. --root datasets)", file=sys.stderr)  # fmt: skip
        return EXIT_SETUP_ERROR
    if args.recursive and Path(args.root).resolve() == images_dir.resolve():
        print("napari-focus: --root is IMAGES_DIR: with --recursive the samples exported "
              "into it would be read as images; choose another --root",
              file=sys.stderr)  # fmt: skip
        return EXIT_SETUP_ERROR
    try:
        check_writable_folder(args.root)
    except WriteError as exc:
        print(f"napari-focus: --root: {exc}; choose another --root", file=sys.stderr)
        return EXIT_SETUP_ERROR
    overlap = _written_into(Path(args.root), layout, images_dir, masks_dir)
    if overlap:
        print(f"napari-focus: --root {args.root}: {overlap}; choose a --root apart from "
              "IMAGES_DIR and MASKS_DIR", file=sys.stderr)  # fmt: skip
        return EXIT_SETUP_ERROR

    if not args.recursive and images_in_subfolders(images_dir, (masks_dir, Path(args.root))):
        print(f"napari-focus: note: images in subfolders of {images_dir} are not included; "
              "add --recursive to include them (each paired with a mask in the same "
              "subfolder of MASKS_DIR, else in MASKS_DIR)", file=sys.stderr)  # fmt: skip
    pairs, problems = pair_files(images_dir, masks_dir, layout, recursive=args.recursive,
                                 leave_out=(Path(args.root),))  # fmt: skip
    if not pairs and not has_images(images_dir, masks_dir, recursive=args.recursive,
                                    leave_out=(Path(args.root),)):  # fmt: skip
        from ..io import IMAGE_EXTENSIONS

        where = " or its subfolders" if args.recursive else " (add --recursive for subfolders)"
        print(f"napari-focus: no image file ({' '.join(IMAGE_EXTENSIONS)}) in IMAGES_DIR "
              f"{images_dir}{where}; nothing was exported", file=sys.stderr)  # fmt: skip
        return EXIT_SETUP_ERROR
    for message in [] if args.quiet else problems:
        print(f"  unpaired: {message}", file=sys.stderr)
    counts = {"written": 0, "renamed": 0, "replaced": 0, "skipped": 0}
    failures: list[str] = []
    from ..cli_common import Terminated, first_signal_asks_to_stop, interrupted_exit

    interrupted: int | None = None  # the signal that stopped the export
    with first_signal_asks_to_stop(  # Ctrl-C ends after the sample being written
        lambda _signum: "napari-focus: stopping after the sample under way (Ctrl-C again "
        "to stop at once)"
    ) as request:
        other_task: list[tuple[Path, Any]] = []
        try:
            other_task = _export_pairs(args, layout, pairs, counts, failures, request)
        except KeyboardInterrupt as stop:  # a second Ctrl-C; the samples written stay
            interrupted = int(signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)
    if interrupted is None:
        interrupted = request.signum
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    left = len(pairs) - sum(counts.values()) - len(failures)
    stopped = interrupted is not None
    rest = f", {left} not done ({_how_to_go_on(args.on_exists, pairs[len(pairs) - left :])})"
    print(
        f"napari-focus: {'interrupted: ' if stopped else ''}{summary}, "
        f"{len(failures)} failed, {len(problems)} unpaired{rest if stopped else ''} "
        f"-> {args.root} ({layout})",
        file=sys.stderr,
    )
    if other_task:
        mask, made_by = other_task[0]
        more = f" and {len(other_task) - 1} more" if len(other_task) > 1 else ""
        were = "were" if more else "was"
        print(f"napari-focus: note: {mask}{more} {were} predicted for task {made_by.task} "
              f"({made_by.weights}), and the {layout} split is for "
              f"{args.task or get_layout(layout).task}: check MASKS_DIR (they are "
              "exported as given)", file=sys.stderr)  # fmt: skip
    if args.quiet:  # said as they happened otherwise
        for message in failures:
            print(f"  failed: {message}", file=sys.stderr)
        for message in problems:
            print(f"  unpaired: {message}", file=sys.stderr)
    if interrupted is not None:
        return interrupted_exit(interrupted == signal.SIGTERM)
    return EXIT_FAILED if failures or problems else 0


def _written_into(root: Path, layout: str, images_dir: Path, masks_dir: Path) -> str | None:
    """Which source folder the layout would write its copies into (they could replace
    the files exported from, or be read back as sources), or None."""
    spec = get_layout(layout)
    base = dataset_dir(root, spec)
    targets = {"images": base / spec.image_dir, "masks": base / spec.mask_dir}
    if spec.semantic_dir is not None:
        targets["semantic masks"] = base / spec.semantic_dir
    for label, source in (("IMAGES_DIR", images_dir), ("MASKS_DIR", masks_dir)):
        for kind, target in targets.items():
            if target.is_dir() and os.path.samefile(target, source):
                return f"the {layout} layout writes its {kind} into {target}, which is {label}"
    return None
