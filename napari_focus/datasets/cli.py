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
import sys
from pathlib import Path
from typing import Any

from ..atomic import WriteError, check_writable_folder
from ..cli_common import EXIT_FAILED_IMAGES as EXIT_FAILED
from ..cli_common import EXIT_SETUP_ERROR
from ..mask_files import MASK_EXTENSIONS, MASK_SUFFIXES, read_mask_file
from ..prediction_files import PROBABILITY_SUFFIX, same_file_key
from .errors import ExportError, SampleExistsError
from .export import ON_EXISTS, export_sample
from .layouts import LAYOUTS, get_layout, layout_for_task


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``export`` sub-command to an ``argparse`` sub-parsers object."""
    from ..presets import TASKS

    parser = subparsers.add_parser(
        "export",
        help="export images + corrected masks into a FOCUS training dataset",
        description="Export images and their masks into a FOCUS training-dataset layout.",
    )
    parser.add_argument("images_dir", metavar="IMAGES_DIR", help="folder of images")
    parser.add_argument(
        "masks_dir",
        metavar="MASKS_DIR",
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


def pair_files(
    images_dir: Path, masks_dir: Path, layout: str, *, recursive: bool = False
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, mask) pairs and one message per image or mask that could not be paired.

    With ``recursive`` the images of subfolders are paired too, each with a mask in the
    same subfolder of ``masks_dir`` (as ``predict --recursive`` writes them), else in
    ``masks_dir`` itself (as a glob pattern's masks go flat), the rule of ``rank --gt``
    and the series."""
    convention = get_layout(layout).mask_suffix.rsplit(".", 1)[0]  # "" or e.g. "_gt"
    images = _files_below(images_dir, recursive, _is_image, leave_out=(masks_dir,))
    masks: dict[str, dict[str, list[Path]]] = {}  # subfolder -> stem -> mask files
    for p in _files_below(masks_dir, recursive, _is_mask, leave_out=(images_dir,)):
        below = p.parent.relative_to(masks_dir).as_posix()
        masks.setdefault(below, {}).setdefault(p.stem, []).append(p)

    pairs: list[tuple[Path, Path]] = []
    problems: list[str] = []
    used: set[Path] = set()
    samples: dict[str, Path] = {}
    # the layout's own naming, then the names the series and rank --gt accept
    suffixes = list(dict.fromkeys([convention, *MASK_SUFFIXES]))
    for image in images:
        names = [image.stem + suffix for suffix in suffixes]
        below = image.parent.relative_to(images_dir).as_posix()
        found = []
        for folder in dict.fromkeys([below, "."]):
            found = _masks_named(masks.get(folder, {}), names)
            if found:
                break
        used.update(found)  # the mask of an image refused below is not an orphan
        sample_key, sample = _sample_key(image.stem, layout)
        if sample_key in samples:
            other = samples[sample_key]
            apart = "" if other.parent == image.parent else " (a split is one folder of samples)"
            if other.stem == image.stem:
                problems.append(f"{image}: same stem as {other}{apart}; rename one")
            else:
                problems.append(
                    f"{image}: its sample name {sample!r} is also that of {other} (sample "
                    "names are made safe and compared regardless of case, as macOS and "
                    "Windows compare file names); rename one"
                )
        elif not found:
            where = masks_dir if below == "." else f"{masks_dir / below} or {masks_dir}"
            problems.append(f"{image}: no mask in {where}")
        elif len(found) > 1:
            problems.append(f"{image}: several masks match: {', '.join(m.name for m in found)}")
        else:
            samples[sample_key] = image
            pairs.append((image, found[0]))
    for by_stem in masks.values():
        for group in by_stem.values():
            problems += [f"{m}: no image in {images_dir}" for m in group if m not in used]
    return pairs, problems


def _is_image(path: Path) -> bool:
    from ..io import IMAGE_EXTENSIONS

    return path.suffix.lower() in IMAGE_EXTENSIONS


def _is_mask(path: Path) -> bool:
    probability = path.stem.endswith(PROBABILITY_SUFFIX)
    return not probability and path.suffix.lower() in MASK_EXTENSIONS


def _files_below(
    folder: Path, recursive: bool, wanted, leave_out: tuple[Path, ...] = ()
) -> list[Path]:
    """The files of ``folder`` (and of its subfolders when ``recursive``) that ``wanted``
    takes, sorted; hidden files and folders (``.name``), the folders ``leave_out`` and
    the widget's series folders left out."""
    from ..input_files import subfolders_to_walk

    skipped = {path.resolve() for path in leave_out}
    files = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = subfolders_to_walk(dirpath, dirnames, skipped) if recursive else []
        files += [
            Path(dirpath, name) for name in filenames
            if not name.startswith(".") and wanted(Path(name)) and Path(dirpath, name).is_file()
        ]  # fmt: skip
    return sorted(files)


def _masks_named(by_stem: dict[str, list[Path]], names: list[str]) -> list[Path]:
    """The masks of one folder named ``names``: exactly, else regardless of case (as a
    case-insensitive file system, macOS or Windows, pairs them)."""
    found = [m for name in names for m in by_stem.get(name, [])]
    if not found:
        keys = {same_file_key(name) for name in names}
        found = [m for stem, group in by_stem.items() if same_file_key(stem) in keys
                 for m in group]  # fmt: skip
    return found


def _read_pair(image_path: Path, mask_path: Path) -> tuple[Any, Any]:
    """The image and its mask, both in the image's upright (EXIF) frame; a mask that
    cannot be read or has another size says so, naming the mask file."""
    from ..io import file_orientation, read_image

    image = read_image(image_path)
    try:
        mask = read_mask_file(mask_path)
    except (OSError, ValueError) as error:
        raise ValueError(f"its mask {mask_path}: {error}") from error
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


def _sample_key(stem: str, layout: str) -> tuple[str, str]:
    """The sample name an image stem exports as, and the key under which two names are
    one sample (one file on a case-insensitive file system)."""
    from .names import sanitize_name

    try:
        name = sanitize_name(stem, get_layout(layout))
    except ExportError:  # refused when exported, with the reason
        name = stem
    return same_file_key(name), name


def _images_below(folder: Path, masks_dir: Path) -> bool:
    """Whether a subfolder of ``folder`` (not hidden, not the masks) holds an image."""
    below = _files_below(folder, True, _is_image, leave_out=(masks_dir,))
    return any(path.parent != folder for path in below)


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
    images_dir, masks_dir = Path(args.images_dir), Path(args.masks_dir)
    for label, folder in (("IMAGES_DIR", images_dir), ("MASKS_DIR", masks_dir)):
        if not folder.is_dir():
            what = "does not exist" if not folder.exists() else "is a file"
            print(f"napari-focus: {label} {folder} {what}; export takes a folder of images "
                  "and a folder of their masks", file=sys.stderr)  # fmt: skip
            return EXIT_SETUP_ERROR

    try:
        check_writable_folder(args.root)
    except WriteError as exc:
        print(f"napari-focus: --root: {exc}", file=sys.stderr)
        return EXIT_SETUP_ERROR

    if not args.recursive and _images_below(images_dir, masks_dir):
        print(f"napari-focus: note: images in subfolders of {images_dir} are not included; "
              "add --recursive to include them (each paired with a mask in the same "
              "subfolder of MASKS_DIR, else in MASKS_DIR)", file=sys.stderr)  # fmt: skip
    pairs, problems = pair_files(images_dir, masks_dir, layout, recursive=args.recursive)
    for message in [] if args.quiet else problems:
        print(f"  unpaired: {message}", file=sys.stderr)
    counts = {"written": 0, "renamed": 0, "replaced": 0, "skipped": 0}
    failures: list[str] = []
    for image_path, mask_path in pairs:
        try:
            result = export_sample(
                args.root,
                layout,
                image_path.stem,
                *_read_pair(image_path, mask_path),
                on_exists=args.on_exists,
                provenance={
                    "source_path": str(image_path.resolve()),
                    "task": args.task or get_layout(layout).task,  # the layout implies its task
                    "mask_path": str(mask_path.resolve()),
                    "tool": "napari-focus export",
                },
            )
        except (ExportError, OSError, ValueError, MemoryError) as exc:
            words = exc.cli_message() if isinstance(exc, SampleExistsError) else str(exc)
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
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    print(
        f"napari-focus: {summary}, {len(failures)} failed, {len(problems)} unpaired "
        f"-> {args.root} ({layout})",
        file=sys.stderr,
    )
    if args.quiet:  # said as they happened otherwise
        for message in failures:
            print(f"  failed: {message}", file=sys.stderr)
        for message in problems:
            print(f"  unpaired: {message}", file=sys.stderr)
    return EXIT_FAILED if failures or problems else 0
