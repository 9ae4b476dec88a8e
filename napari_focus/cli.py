"""Command line: `napari-focus predict | export | rank | train | annotate | doctor`."""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
import warnings
from collections.abc import Sequence

from .cli_annotate import add_annotate_parser
from .cli_arguments import TASK_HELP, add_model_arguments, path_argument
from .cli_common import (
    EXIT_FAILED_IMAGES,
    EXIT_INTERRUPTED,
    EXIT_SETUP_ERROR,
    say,
    say_kernel_fallbacks,
)
from .cli_predict import add_input_arguments, add_throughput_arguments, run_predict


def run_doctor(args: argparse.Namespace) -> int:
    from .cpu_linear import describe
    from .ops.doctor import doctor_report

    print(doctor_report(build=args.build))
    print(describe())
    return 0


EXIT_CODES = f"""\
exit codes:
  0  everything done (existing outputs skipped by policy count as done)
  {EXIT_FAILED_IMAGES}  some inputs failed or matched nothing; the others were processed
  {EXIT_SETUP_ERROR}  nothing was started: bad arguments, an unusable --device, or weights
     that could not be downloaded or loaded
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C; 143 when stopped by SIGTERM (predict, export,
     rank, train)
"""

# each command's own (train's are in training.cli)
COMMAND_EXIT_CODES = {
    "predict": f"""\
exit codes:
  0  every image done (images whose outputs exist are skipped and count as done)
  {EXIT_FAILED_IMAGES}  some inputs failed or matched no image; the others were written
  {EXIT_SETUP_ERROR}  nothing was started: bad arguments, an unusable --device or
     --precision, no input image, an --out that cannot be written, or weights
     that could not be downloaded or loaded
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C; 143 when stopped by SIGTERM (the masks
     written so far stay; the same command continues)
""",
    "export": f"""\
exit codes:
  0  every pair exported (or skipped by --on-exists skip)
  {EXIT_FAILED_IMAGES}  some pairs failed or some files had no partner; the others were
     exported
  {EXIT_SETUP_ERROR}  nothing was started: bad arguments, no --layout or --task, a missing
     IMAGES_DIR or MASKS_DIR, no image in IMAGES_DIR, or a --root that cannot be
     written
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C, 143 by SIGTERM (the samples exported so far
     stay)
""",
    "rank": f"""\
exit codes:
  0  every image ranked
  {EXIT_FAILED_IMAGES}  some images failed; the others were ranked
  {EXIT_SETUP_ERROR}  nothing was ranked: bad arguments, an unusable --device, no images,
     --gt without PySODMetrics, an --out or --report holding other files, or
     weights that could not be downloaded or loaded; also when the CSV or the
     report could not be written
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C, 143 by SIGTERM (nothing is written: an earlier
     --out stays as it was)
""",
    "annotate": f"""\
exit codes:
  0  napari was closed (the series' edits are kept in its series folder)
  {EXIT_INTERRUPTED}  napari was closed by Ctrl-C in the terminal (143: by SIGTERM), as by its
     close button
  {EXIT_SETUP_ERROR}  napari was not opened: bad arguments, a --weights file that cannot be
     used, a file that is not an image, or no display to open a window on
""",
    "doctor": """\
exit codes:
  0  the report was printed (a kernel that cannot be compiled here is said in
     it, not an error)
""",
}


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
        epilog=COMMAND_EXIT_CODES["predict"],
        formatter_class=formatter,
    )
    add_input_arguments(predict)
    add_model_arguments(predict)
    predict.add_argument(
        "--out", metavar="FOLDER", type=path_argument,
        help="output folder (default: ./focus_<task>_masks)",
    )
    predict.add_argument(
        "--probability",
        action="store_true",
        help="also write <name>_probability maps of the foreground probability: 0-255 in "
        "a PNG, float32 0-1 in a TIFF (--format tif)",
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
    from .series.rank_cli import add_rank_parser
    from .training.cli import add_train_parser

    for sub in (add_export_parser(commands), add_rank_parser(commands),
                add_train_parser(commands)):  # fmt: skip
        sub.formatter_class = formatter
        sub.epilog = sub.epilog or COMMAND_EXIT_CODES[sub.prog.split()[-1]]

    annotate = add_annotate_parser(commands)
    annotate.formatter_class, annotate.epilog = formatter, COMMAND_EXIT_CODES["annotate"]

    doctor = commands.add_parser(
        "doctor",
        help="report torch, devices and the compiled kernels",
        description="Report the PyTorch build, the devices and the state of the compiled "
        "deformable-attention kernels.",
        formatter_class=formatter,
        epilog=COMMAND_EXIT_CODES["doctor"],
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
        print(f"{_prefix(args)}: {error.cli_message()}", file=sys.stderr)
        return False
    return True


def _prefix(args: argparse.Namespace) -> str:
    """What the command's lines begin with (``napari-focus train`` for train)."""
    return getattr(args, "message_prefix", "napari-focus")


class _StderrLines(logging.Handler):
    """Prints a kernel build's start and end as ``<prefix>: <message>`` on the current
    ``sys.stderr`` (failures reach the user once, as the fallback warning)."""

    def __init__(self, level: int, prefix: str) -> None:
        super().__init__(level)
        self.prefix = prefix

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "kernel_event", None) in ("build-started", "build-finished"):
            say(f"{self.prefix}: {record.getMessage()}")


def _announce_kernel_builds(prefix: str = "napari-focus") -> None:
    """Say on stderr when the deformable-attention kernel is compiled (the first run)."""
    log = logging.getLogger("napari_focus.ops.build")
    for handler in [h for h in log.handlers if isinstance(h, _StderrLines)]:
        log.removeHandler(handler)  # of an earlier command in this process
    log.addHandler(_StderrLines(logging.INFO, prefix))
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)


QT_BINDINGS = ("PyQt6", "PySide6", "PyQt5", "PySide2")


def _has_qt_binding() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(name) is not None for name in QT_BINDINGS)


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    # PIL warns of images above its pixel limit; read_image refuses them in words first
    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before a command's own handling (loading torch, say)
        words = list(sys.argv[1:] if argv is None else argv)
        command = " train" if words[:1] == ["train"] else ""
        print(f"napari-focus{command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


#: the commands that read images (and so the pixel limit)
READS_IMAGES = ("predict", "rank", "export", "train", "annotate")


def _main(argv: Sequence[str] | None) -> int:
    args, extras = build_parser().parse_known_args(argv)
    if extras:  # said by the command's own parser: its usage, and the option meant
        args.command_parser.error(_unrecognized(args.command_parser, extras))
    _announce_kernel_builds(_prefix(args))
    if getattr(args, "command", None) == "annotate" and not _has_qt_binding():
        print(
            "napari-focus: annotate opens napari, which needs a Qt binding, and none is "
            f"installed ({', '.join(QT_BINDINGS)}). Install one with "
            "`pip install PyQt6` (napari-focus's 'gui' extra).",
            file=sys.stderr,
        )
        return EXIT_SETUP_ERROR
    if getattr(args, "command", None) in READS_IMAGES:
        from .io import pixel_limit

        try:  # a bad NAPARI_FOCUS_MAX_PIXELS would fail every image: said once, first
            pixel_limit()
        except ValueError as error:
            print(f"{_prefix(args)}: {error}; correct it, or unset it for the default "
                  "limit", file=sys.stderr)  # fmt: skip
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
        warnings.showwarning = say_kernel_fallbacks(warnings.showwarning, _prefix(args))
        return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
