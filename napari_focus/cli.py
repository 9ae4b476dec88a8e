"""Command line: `napari-focus predict | export | rank | train | annotate | doctor`."""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path

from .cli_common import (
    EXIT_FAILED_IMAGES,
    EXIT_INTERRUPTED,
    EXIT_SETUP_ERROR,
    TASK_HELP,
    add_model_arguments,
    say,
    say_kernel_fallbacks,
)
from .cli_predict import add_throughput_arguments, run_predict
from .prediction_files import collect_inputs, unmatched_reason


def run_doctor(args: argparse.Namespace) -> int:
    from .cpu_linear import describe
    from .ops.doctor import doctor_report

    print(doctor_report(build=args.build))
    print(describe())
    return 0


def run_annotate(args: argparse.Namespace) -> int:
    from .io import read_image

    paths: list[Path] = []
    images = []
    folder = Path(args.path) if args.path and Path(args.path).is_dir() else None
    if args.path and folder is None:
        paths, unmatched = collect_inputs([args.path])
        if unmatched:
            print(f"napari-focus: {unmatched_reason(args.path)}", file=sys.stderr)
            return EXIT_SETUP_ERROR
        for path in paths:  # before napari opens: a file it cannot show is said here
            try:
                images.append(read_image(path))
            except (OSError, ValueError) as error:
                print(f"napari-focus: cannot open {path} as an image: {error}", file=sys.stderr)
                return EXIT_SETUP_ERROR
    import napari

    from .gui.annotate import open_viewer

    open_viewer(paths, folder=folder, images=images)
    napari.run()
    return 0


EXIT_CODES = f"""\
exit codes:
  0  everything done (existing outputs skipped by policy count as done)
  {EXIT_FAILED_IMAGES}  some inputs failed or matched nothing; the others were processed
  {EXIT_SETUP_ERROR}  nothing was started: bad arguments, an unusable --device, or weights
     that could not be downloaded or loaded
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C (predict: also 143 when stopped by SIGTERM)
"""


def _fill(text: str) -> str:
    """``text`` wrapped at 80 columns between words only: a name such as ``camo-train``
    or a flag such as ``--task`` is never split at its hyphen."""
    return textwrap.fill(" ".join(text.split()), width=80, break_on_hyphens=False)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written (wrapped by :func:`_fill`, the exit-code
    table kept); option help wrapped between words only."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    formatter = _HelpFormatter
    parser = argparse.ArgumentParser(
        prog="napari-focus",
        description=_fill(
            f"FOCUS foreground segmentation (AAAI 2025) of images: {TASK_HELP}. "
            "Run `napari-focus COMMAND --help` for a command's options."
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
    predict.add_argument("--quiet", action="store_true",
                         help="only the summary: no progress bar, speed or failure as it "
                         "happens")  # fmt: skip
    add_throughput_arguments(predict)
    predict.set_defaults(func=run_predict)
    from .distributed.cli import add_ray_arguments

    add_ray_arguments(predict)

    from .datasets.cli import add_export_parser
    from .series.rank import add_rank_parser
    from .training.cli import add_train_parser

    for sub in (add_export_parser(commands), add_rank_parser(commands),
                add_train_parser(commands)):  # fmt: skip
        sub.epilog, sub.formatter_class = sub.epilog or EXIT_CODES, formatter

    annotate = commands.add_parser(
        "annotate",
        help="open napari with the FOCUS widget; a folder opens as a series to label",
        description="Open napari with the FOCUS widget docked, optionally with images loaded.",
        formatter_class=formatter,
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
        formatter_class=formatter,
    )
    doctor.add_argument(
        "--build", action="store_true", help="compile (and self-check) the kernels now"
    )
    doctor.set_defaults(func=run_doctor)
    for sub in commands.choices.values():  # the raw formatter keeps line breaks as written
        sub.description = _fill(sub.description or "")
        sub.set_defaults(command_parser=sub)  # whose usage an unknown argument is shown with
    return parser


def _unrecognized(command: argparse.ArgumentParser, extras: Sequence[str]) -> str:
    """The message for arguments ``command`` does not take, naming the option a typo was
    probably meant to be (``--overwite``: did you mean ``--overwrite``?)."""
    import difflib

    options = [o for a in command._actions for o in a.option_strings if o.startswith("--")]
    message = f"unrecognized arguments: {' '.join(extras)}"
    for extra in extras:
        if extra.startswith("--"):
            close = difflib.get_close_matches(extra.split("=", 1)[0], options, n=1, cutoff=0.6)
            if close:
                return f"{message} (did you mean {close[0]}?)"
    if any(extra.startswith("-") for extra in extras):
        return f"{message} (`napari-focus {command.prog.split()[-1]} --help` lists the options)"
    return message


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
        if getattr(record, "kernel_event", None) in ("build-started", "build-finished"):
            say(f"napari-focus: {record.getMessage()}")


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
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before a command's own handling (loading torch, say)
        print("napari-focus: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    args, extras = build_parser().parse_known_args(argv)
    if extras:  # said by the command's own parser: its usage, and the option meant
        args.command_parser.error(_unrecognized(args.command_parser, extras))
    _announce_kernel_builds()
    if getattr(args, "command", None) == "annotate" and not _has_qt_binding():
        print(
            "napari-focus: annotate opens napari, which needs a Qt binding, and none is "
            f"installed ({', '.join(QT_BINDINGS)}). Install one with "
            '`pip install "napari-focus[gui]"` (PyQt6).',
            file=sys.stderr,
        )
        return EXIT_SETUP_ERROR
    if getattr(args, "command", None) == "predict" and args.engine != "ray":
        ray_only = ("address", "num_workers", "gpus_per_worker", "cpus_per_worker", "manifest",
                    "series")  # fmt: skip
        given = [name for name in ray_only if getattr(args, name, None) is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            print(f"napari-focus: {flag} is an option of --engine ray; add --engine ray or "
                  f"leave {flag} out", file=sys.stderr)  # fmt: skip
            return EXIT_SETUP_ERROR
    if getattr(args, "command", None) == "predict" and args.engine == "ray":
        from .distributed.cli import run_predict_ray  # workers check devices where they run

        return run_predict_ray(args)
    if getattr(args, "device", None) is not None and not _check_device(args):
        return EXIT_SETUP_ERROR
    with warnings.catch_warnings():  # restores Python's own display afterwards
        warnings.showwarning = say_kernel_fallbacks(warnings.showwarning)
        return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
