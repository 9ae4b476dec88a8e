"""The command line's argument types and the model flags its predicting commands share."""

from __future__ import annotations

import argparse

from .presets import SIZES, TASKS

TASK_HELP = (
    "sod = salient objects, cod = camouflaged objects, sd = shadows, "
    "dbd = defocus blur, fd = forgeries (image manipulation)"
)


def path_argument(text: str) -> str:
    """argparse type of file and folder options: an empty value (an unset shell variable,
    ``--out "$OUT"``) is refused instead of meaning the default or the working folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty (an unset shell variable?); give a path")
    return text


def positive_float(text: str) -> float:
    """argparse type of amounts above 0 (CPUs per worker)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type of counts (steps, batch sizes, workers)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def device_argument(text: str) -> str:
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
        type=path_argument,
        help="a local checkpoint (official .pth or .safetensors) instead of downloading "
        "geshang/focus_<size>_<task> from the Hugging Face hub",
    )
    parser.add_argument(
        "--device",
        default="auto",
        type=device_argument,
        help="where the model runs: auto (CUDA, then Apple MPS, then CPU), cpu, cuda, "
        "cuda:N, gpu (same as cuda) or mps; default auto",
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="official test-time augmentation (6 scales x horizontal flip, averaged; "
        "about 20x slower)",
    )
