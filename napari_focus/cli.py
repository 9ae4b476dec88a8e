"""Command line: `napari-focus predict | export | rank | annotate | doctor`."""

from __future__ import annotations

import argparse
import glob
import logging
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from .cli_common import EXIT_FAILED_IMAGES, EXIT_SETUP_ERROR
from .cli_common import load_predictor_from_args as _load_predictor
from .presets import SIZES, TASKS


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


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interrupt so that the run stops the same orderly way."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated


def run_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .atomic import WriteError, check_writable_folder, remove_own_temps, remove_stale_temps
    from .pipeline import Job

    images, unmatched = collect_inputs(args.inputs)
    for item in unmatched:
        print(f"napari-focus: no image matches {item!r}", file=sys.stderr)
    if not images:
        print("napari-focus: nothing to do: no input images", file=sys.stderr)
        return EXIT_SETUP_ERROR
    out_dir = Path(args.out or f"focus_{args.task}_masks")
    suffix = ".tif" if args.format == "tif" else ".png"

    jobs, failures, skipped = [], [], 0
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
        jobs.append(Job(image, mask_path, prob_path if args.probability else None))

    written, interrupted = 0, None
    if jobs:
        try:  # before anything slow: a precision this device cannot run
            from .predictor import resolve_device
            from .runtime import resolve_precision

            resolve_precision(args.precision, resolve_device(args.device))
        except ValueError as error:
            print(f"napari-focus: --precision {args.precision}: {error}", file=sys.stderr)
            return EXIT_SETUP_ERROR
        try:
            check_writable_folder(out_dir)
        except WriteError as error:
            print(f"napari-focus: --out {out_dir}: {error.reason}", file=sys.stderr)
            return EXIT_SETUP_ERROR
        if out_dir.is_dir():  # what killed runs left behind
            remove_stale_temps(out_dir)
        try:
            predictor = _load_predictor(args)
        except Exception as error:  # a bad checkpoint or no network: say why and stop
            print(f"napari-focus: cannot load the model: {error}", file=sys.stderr)
            return EXIT_SETUP_ERROR
        written, interrupted, run_failures = _run_jobs(predictor, jobs, args, tqdm)
        failures += run_failures
        removed = remove_own_temps(out_dir)
        if removed:
            print(f"napari-focus: removed {len(removed)} partial file(s)", file=sys.stderr)

    status = "interrupted: " if interrupted else ""
    print(
        f"napari-focus: {status}{written} written, {skipped} skipped (already exist; "
        f"--overwrite to redo), {len(failures)} failed -> {out_dir}",
        file=sys.stderr,
    )
    for image, message in failures:
        print(f"  failed: {image}: {message}", file=sys.stderr)
    if interrupted is not None:
        return 128 + interrupted
    return EXIT_FAILED_IMAGES if failures or unmatched else 0


def _run_jobs(predictor, jobs, args: argparse.Namespace, tqdm) -> tuple[int, int | None, list]:
    """Run the pipeline with a progress bar; SIGTERM and Ctrl-C stop it in order.
    Returns (written, the signal number if interrupted, failures)."""
    import signal

    from .pipeline import run_pipeline

    bar = tqdm(total=len(jobs), desc="FOCUS", unit="image", disable=args.quiet)

    def on_done(job, error: str | None) -> None:
        if error is not None:
            tqdm.write(f"FAILED {job.source}: {error}", file=sys.stderr)
        bar.update(1)

    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        summary = run_pipeline(
            predictor,
            jobs,
            tta=args.tta,
            batch_size=args.batch_size,
            workers=args.workers,
            on_done=on_done,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
        bar.close()
    interrupted = None
    if summary.interrupted is not None:
        terminated = isinstance(summary.interrupted, _Terminated)
        interrupted = int(signal.SIGTERM if terminated else signal.SIGINT)
    if not args.quiet:
        print(
            f"napari-focus: {summary.images_per_second:.2f} images/s "
            f"({summary.seconds:.1f} s)",
            file=sys.stderr,
        )
    return summary.written, interrupted, summary.failures


def add_throughput_arguments(predict: argparse.ArgumentParser) -> None:
    """--batch-size, --workers, --precision and --compile of `predict`."""
    predict.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="images per forward pass (images of one padded size run together); "
        "default 1 on CPU, 4 on CUDA",
    )
    predict.add_argument(
        "--workers",
        type=_positive_int,
        default=2,
        metavar="N",
        help="threads reading and preparing images ahead of the model (default 2)",
    )
    predict.add_argument(
        "--precision",
        choices=("auto", "float32", "float16", "bfloat16"),
        default="auto",
        help="auto (float32), float32, float16 (CUDA, MPS) or bfloat16 (CUDA, MPS, or a "
        "faster, slightly less exact mode on CPUs with AVX-512 BF16 / AMX)",
    )
    predict.add_argument(
        "--compile",
        action="store_true",
        help="compile the model with torch.compile first (minutes; each new image size "
        "compiles again)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run_doctor(args: argparse.Namespace) -> int:
    from .cpu_linear import describe
    from .ops.doctor import doctor_report

    print(doctor_report(build=args.build))
    print(describe())
    return 0


def run_annotate(args: argparse.Namespace) -> int:
    import napari

    from .gui.annotate import open_viewer

    paths: list[Path] = []
    folder = Path(args.path) if args.path and Path(args.path).is_dir() else None
    if args.path and folder is None:
        paths, unmatched = collect_inputs([args.path])
        if unmatched:
            print(f"napari-focus: no image matches {args.path!r}", file=sys.stderr)
            return EXIT_SETUP_ERROR
    open_viewer(paths, folder=folder)
    napari.run()
    return 0


TASK_HELP = (
    "sod = salient objects, cod = camouflaged objects, sd = shadows, "
    "dbd = defocus blur, fd = forgeries (image manipulation)"
)

EXIT_CODES = f"""\
exit codes:
  0  everything done (existing outputs skipped by policy count as done)
  {EXIT_FAILED_IMAGES}  some inputs failed or matched nothing; the others were processed
  {EXIT_SETUP_ERROR}  nothing was started: bad arguments, an unusable --device, or weights
     that could not be downloaded or loaded
"""


def _device_argument(text: str) -> str:
    from .devices import DeviceError, check_device_name

    try:
        return check_device_name(text)
    except DeviceError as error:
        raise argparse.ArgumentTypeError(
            error.cli_message().removeprefix(f"--device {text}: ")
        ) from None


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--task, --size, --weights, --device and --tta, shared by the commands that predict."""
    parser.add_argument(
        "--task", required=True, choices=TASKS, type=str.lower, help=f"what to segment: {TASK_HELP}"
    )
    parser.add_argument(
        "--size",
        choices=SIZES,
        default=None,
        help="model size: large (FOCUS-L, DINOv2-L, ~2 GB download) or giant (FOCUS-G, "
        "DINOv2-G); default large, or what --weights holds",
    )
    parser.add_argument(
        "--weights",
        metavar="FILE",
        help="a local checkpoint (official .pth or .safetensors) instead of downloading "
        "geshang/focus_<size>_<task> from the Hugging Face hub",
    )
    parser.add_argument(
        "--device",
        default="auto",
        type=_device_argument,
        help="where the model runs: auto (CUDA, then Apple MPS, then CPU), cpu, cuda, "
        "cuda:N, gpu (same as cuda) or mps; default auto",
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="official test-time augmentation (6 scales x horizontal flip, averaged; "
        "about 20x slower)",
    )


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="napari-focus",
        description=textwrap.fill(
            f"FOCUS foreground segmentation (AAAI 2025) of images: {TASK_HELP}. "
            "Run `napari-focus COMMAND --help` for a command's options.",
            width=80,
        ),
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser(
        "predict",
        help="segment images and write masks",
        description="Segment images with FOCUS and write one 0/255 mask per image.",
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    predict.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    add_model_arguments(predict)
    predict.add_argument(
        "--out", metavar="FOLDER", help="output folder (default: ./focus_<task>_masks)"
    )
    predict.add_argument(
        "--probability",
        action="store_true",
        help="also write <name>_probability maps (foreground probability, 0-255)",
    )
    predict.add_argument(
        "--format", choices=("png", "tif"), default="png", help="mask file format (default png)"
    )
    predict.add_argument(
        "--overwrite", action="store_true", help="redo images whose outputs already exist"
    )
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    add_throughput_arguments(predict)
    predict.set_defaults(func=run_predict)
    from .distributed.cli import add_ray_arguments

    add_ray_arguments(predict)

    from .datasets.cli import add_export_parser
    from .series.rank import add_rank_parser
    from .training.cli import add_train_parser

    for sub in (add_export_parser(commands), add_rank_parser(commands),
                add_train_parser(commands)):  # fmt: skip
        sub.epilog, sub.formatter_class = EXIT_CODES, formatter

    annotate = commands.add_parser(
        "annotate",
        help="open napari with the FOCUS widget; a folder opens as a series to label",
        description="Open napari with the FOCUS widget docked, optionally with images loaded.",
    )
    annotate.add_argument(
        "path",
        nargs="?",
        help="a folder of images (opened as a series: Previous / Next / Accept) or an image",
    )
    annotate.set_defaults(func=run_annotate)

    doctor = commands.add_parser(
        "doctor",
        help="report torch, devices and the compiled kernels",
        description="Report the PyTorch build, the devices and the state of the compiled "
        "deformable-attention kernels.",
    )
    doctor.add_argument(
        "--build", action="store_true", help="compile (and self-check) the kernels now"
    )
    doctor.set_defaults(func=run_doctor)
    return parser


def _check_device(args: argparse.Namespace) -> bool:
    """Whether --device is usable here; says why not, before any download or file read."""
    from .devices import DeviceError, resolve_device

    try:
        resolve_device(args.device)
    except DeviceError as error:
        print(f"napari-focus: {error.cli_message()}", file=sys.stderr)
        return False
    return True


class _StderrLines(logging.Handler):
    """Prints a kernel build's start and end as ``napari-focus: <message>`` on the current
    ``sys.stderr`` (failures reach the user once, as the fallback warning)."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "kernel_event", None) not in ("build-started", "build-finished"):
            return
        line = f"napari-focus: {record.getMessage()}"
        if "tqdm" in sys.modules:  # keeps a running progress bar intact
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)


def _announce_kernel_builds() -> None:
    """Say on stderr when the deformable-attention kernel is compiled (the first run)."""
    log = logging.getLogger("napari_focus.ops.build")
    if not any(isinstance(h, _StderrLines) for h in log.handlers):
        log.addHandler(_StderrLines(logging.INFO))
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)


QT_BINDINGS = ("PyQt6", "PySide6", "PyQt5", "PySide2")


def _has_qt_binding() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(name) is not None for name in QT_BINDINGS)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _announce_kernel_builds()
    if getattr(args, "command", None) == "annotate" and not _has_qt_binding():
        print(
            "napari-focus: annotate opens napari, which needs a Qt binding, and none is "
            f"installed ({', '.join(QT_BINDINGS)}). Install one with "
            "`pip install \"napari-focus[gui]\"` (PyQt6).",
            file=sys.stderr,
        )
        return EXIT_SETUP_ERROR
    if getattr(args, "command", None) == "predict":
        args.size_given = args.size
        args.size = args.size or "large"
        if args.engine == "ray":  # the workers' devices are checked where they run
            from .distributed.cli import run_predict_ray

            return run_predict_ray(args)
    if getattr(args, "device", None) is not None and not _check_device(args):
        return EXIT_SETUP_ERROR
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
