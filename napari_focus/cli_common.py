"""What the command-line commands share: exit codes, the model flags and loading the
model from them, and the ``--out`` refusal of ``predict`` (both engines) (used by
``predict`` in :mod:`napari_focus.cli` and by ``rank`` in :mod:`napari_focus.series.rank`,
which must not import each other)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, TextIO

from .presets import SIZES, TASKS

EXIT_FAILED_IMAGES = 1
EXIT_SETUP_ERROR = 2
EXIT_INTERRUPTED = 128 + 2  # Ctrl-C, as a shell reports SIGINT

TASK_HELP = (
    "sod = salient objects, cod = camouflaged objects, sd = shadows, "
    "dbd = defocus blur, fd = forgeries (image manipulation)"
)


def say(line: str) -> None:
    """Print ``line`` on the current ``sys.stderr``, above a running progress bar."""
    if "tqdm" in sys.modules:  # keeps a running progress bar intact
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


ShowWarning = Callable[[Warning | str, type[Warning], str, int, TextIO | None, str | None], None]


def say_kernel_fallbacks(showwarning: ShowWarning) -> ShowWarning:
    """A ``warnings.showwarning`` printing a kernel fallback as one ``napari-focus:`` line
    (its message is in those words already) instead of Python's file, line number and
    source line; other warnings go to ``showwarning``. Used by the commands and by the
    workers of ``predict --engine ray``, whose stderr Ray shows on the driver."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if category.__name__ != "KernelFallbackWarning":  # its module imports torch
            showwarning(message, category, filename, lineno, file, line)
        elif str(message).startswith("napari-focus:"):
            say(str(message))
        else:
            say(f"napari-focus: {message}")

    show.says_kernel_fallbacks = True  # type: ignore[attr-defined]
    return show


def out_replaces_input_message(out: object, error: Any) -> str:
    """``predict``'s words for :class:`~napari_focus.prediction_files.OutputReplacesInput`
    (both engines)."""
    return f"--out {out}: {error.what}; choose another --out"


def load_predictor_from_args(args: argparse.Namespace) -> Any:
    """A :class:`~napari_focus.FocusPredictor` from ``--weights`` / ``--task`` /
    ``--size`` / ``--device`` / ``--precision`` / ``--compile`` (commands without the
    throughput flags get the defaults). A download of the official weights shows a
    progress bar on stderr unless ``--quiet``."""
    import warnings

    from .checkpoint_identity import TaskMismatchWarning
    from .predictor import FocusPredictor

    warn_if_weights_of_another_task(args)
    with warnings.catch_warnings():  # said above in the command line's words
        warnings.simplefilter("ignore", TaskMismatchWarning)
        predictor = FocusPredictor.load(
            args.task,
            size=args.size,
            weights=args.weights,
            device=args.device,
            precision=getattr(args, "precision", "auto"),
            download_progress=(lambda _progress: None) if getattr(args, "quiet", False) else None,
        )
    if getattr(args, "compile", False):
        predictor.compile()
    return predictor


def warn_if_weights_of_another_task(args: argparse.Namespace) -> None:
    """Say on stderr when ``--weights`` records another task than ``--task`` (the file
    loads: every task has the same head; its masks are those of its own task)."""
    import sys

    from .checkpoint_identity import task_mismatch

    message = task_mismatch(args.task, args.weights) if args.weights else None
    if message:
        print(f"napari-focus: warning: {message}", file=sys.stderr)


def load_predictor_or_say_why(args: argparse.Namespace) -> Any | None:
    """:func:`load_predictor_from_args`, or None after saying on stderr why the model
    cannot be loaded (a bad checkpoint, no network)."""
    import sys

    problem = weights_file_problem(args.weights) if args.weights else None
    if problem:
        print(f"napari-focus: --weights {args.weights}: {problem}", file=sys.stderr)
        return None
    try:
        return load_predictor_from_args(args)
    except Exception as error:
        print(f"napari-focus: cannot load the model: {error}", file=sys.stderr)
        return None


CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")


def weights_file_problem(weights: str) -> str | None:
    """What is wrong with ``--weights`` before it is read, in the command line's words:
    no such file, a folder (the checkpoints in it are named), an empty file."""
    from pathlib import Path

    path = Path(weights)
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        inside = f" (in it: {', '.join(found[:5])}{more})" if found else ""
        return f"a folder, not a checkpoint file; give the .pth or .safetensors file{inside}"
    if not path.exists():
        return (
            "no such file; check the path, or leave --weights out to download the official "
            "weights of --task and --size"
        )
    if path.is_file() and path.stat().st_size == 0:
        return "the file is empty (0 bytes; an interrupted download?); download it again"
    return None


def positive_int(text: str) -> int:
    """argparse type of counts (steps, batch sizes, workers)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
