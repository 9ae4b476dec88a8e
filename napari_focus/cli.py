"""Command line: `napari-focus predict | export | rank | annotate | doctor`."""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Sequence
from pathlib import Path

from .presets import SIZES, TASKS

EXIT_FAILED_IMAGES = 1
EXIT_SETUP_ERROR = 2


def collect_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Expand files, folders (their images, sorted) and glob patterns.

    Returns the image paths (deduplicated, in order) and the inputs that matched nothing.
    """
    from .io import IMAGE_EXTENSIONS

    found: list[Path] = []
    unmatched: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            matches = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(item):
            matches = sorted(
                Path(p)
                for p in glob.glob(item, recursive=True)
                if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_EXTENSIONS
            )
        else:
            matches = []
        if not matches:
            unmatched.append(item)
        found.extend(matches)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique, unmatched


def _load_predictor(args: argparse.Namespace):
    from .predictor import FocusPredictor

    if args.weights:
        return FocusPredictor.from_checkpoint(
            args.weights, args.task, architecture=args.size_given, device=args.device
        )
    return FocusPredictor.from_pretrained(args.task, args.size, device=args.device)


def run_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .io import read_image, write_mask, write_probability

    images, unmatched = collect_inputs(args.inputs)
    for item in unmatched:
        print(f"napari-focus: no image matches {item!r}", file=sys.stderr)
    if not images:
        print("napari-focus: nothing to do: no input images", file=sys.stderr)
        return EXIT_SETUP_ERROR
    out_dir = Path(args.out or f"focus_{args.task}_masks")
    suffix = ".tif" if args.format == "tif" else ".png"

    jobs, failures, skipped, written = [], [], 0, 0
    claimed: dict[Path, Path] = {}
    for image in images:
        mask_path = out_dir / f"{image.stem}{suffix}"
        prob_path = out_dir / f"{image.stem}_probability{suffix}"
        if mask_path in claimed:
            failures.append((image, f"same output name as {claimed[mask_path]}; rename one"))
            continue
        claimed[mask_path] = image
        outputs = [mask_path, prob_path] if args.probability else [mask_path]
        if not args.overwrite and all(p.exists() for p in outputs):
            skipped += 1
            continue
        jobs.append((image, mask_path, prob_path))

    if jobs:
        try:
            predictor = _load_predictor(args)
        except Exception as error:  # a bad checkpoint or no network: say why and stop
            print(f"napari-focus: cannot load the model: {error}", file=sys.stderr)
            return EXIT_SETUP_ERROR
        for image, mask_path, prob_path in tqdm(
            jobs, desc="FOCUS", unit="image", disable=args.quiet
        ):
            try:
                result = predictor.predict(read_image(image), tta=args.tta)
                write_mask(mask_path, result.mask)
                if args.probability:
                    write_probability(prob_path, result.probability)
                written += 1
            except Exception as error:  # report, keep going with the other images
                failures.append((image, str(error)))
                tqdm.write(f"FAILED {image}: {error}", file=sys.stderr)

    print(
        f"napari-focus: {written} written, {skipped} skipped (already exist; --overwrite to redo), "
        f"{len(failures)} failed -> {out_dir}",
        file=sys.stderr,
    )
    for image, message in failures:
        print(f"  failed: {image}: {message}", file=sys.stderr)
    return EXIT_FAILED_IMAGES if failures or unmatched else 0


def run_doctor(args: argparse.Namespace) -> int:
    from .ops.doctor import doctor_report

    print(doctor_report(build=args.build))
    return 0


def run_annotate(args: argparse.Namespace) -> int:
    import napari

    from .gui.annotate import open_viewer

    paths: list[Path] = []
    if args.path:
        paths, unmatched = collect_inputs([args.path])
        if unmatched:
            print(f"napari-focus: no image matches {args.path!r}", file=sys.stderr)
            return EXIT_SETUP_ERROR
    open_viewer(paths)
    napari.run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-focus", description="FOCUS foreground segmentation"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser(
        "predict", help="segment images and write masks", description="Segment images with FOCUS."
    )
    predict.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    predict.add_argument("--task", required=True, choices=TASKS, type=str.lower)
    predict.add_argument("--size", choices=SIZES, default=None, help="model size (default: large)")
    predict.add_argument(
        "--weights", help="local checkpoint (.pth or .safetensors) instead of the hub"
    )
    predict.add_argument("--out", help="output folder (default: ./focus_<task>_masks)")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    predict.add_argument("--tta", action="store_true", help="official test-time augmentation")
    predict.add_argument(
        "--probability", action="store_true", help="also write <name>_probability maps"
    )
    predict.add_argument("--format", choices=("png", "tif"), default="png")
    predict.add_argument("--overwrite", action="store_true", help="redo existing outputs")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(func=run_predict)

    from .datasets.cli import add_export_parser
    from .series.rank import add_rank_parser
    from .training.cli import add_train_parser

    add_export_parser(commands)
    add_rank_parser(commands)
    add_train_parser(commands)

    annotate = commands.add_parser(
        "annotate", help="open napari with the FOCUS widget (and an image or folder)"
    )
    annotate.add_argument("path", nargs="?", help="an image file or a folder of images")
    annotate.set_defaults(func=run_annotate)

    doctor = commands.add_parser("doctor", help="report torch, devices and the compiled kernels")
    doctor.add_argument("--build", action="store_true", help="build the kernels now")
    doctor.set_defaults(func=run_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) == "predict":
        args.size_given = args.size
        args.size = args.size or "large"
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
