"""`napari-focus annotate`: napari with the FOCUS widget docked; its options preset the
Model tab (which the widget then remembers for the next session)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from .cli_arguments import TASK_HELP, device_argument, path_argument
from .cli_common import EXIT_SETUP_ERROR, interrupted_exit, weights_file_problem
from .input_files import collect_inputs, unmatched_reason
from .presets import SIZES, TASKS


def add_annotate_parser(commands: Any) -> argparse.ArgumentParser:
    annotate = commands.add_parser(
        "annotate",
        help="open napari with the FOCUS widget; a folder opens as a series to label",
        description="Open napari with the FOCUS widget docked, optionally with images "
        "loaded. The model options set the widget's Model tab; left out, the tab shows "
        "the choices of the last session.",
    )
    annotate.add_argument(
        "path",
        nargs="?",
        type=path_argument,
        help="a folder of images (opened as a series: Previous / Next / Accept) or an image",
    )
    annotate.add_argument(
        "--task", choices=TASKS, type=str.lower, help=f"what to segment: {TASK_HELP}"
    )
    annotate.add_argument(
        "--size", choices=SIZES, help="model size of the official weights: large or giant"
    )
    annotate.add_argument(
        "--weights",
        metavar="FILE",
        type=path_argument,
        help="a local checkpoint (.pth or .safetensors) instead of the official weights",
    )
    annotate.add_argument(
        "--device",
        type=device_argument,
        help="where the model runs (the Model tab's device): auto, cpu, cuda, cuda:N, gpu "
        "(same as cuda) or mps",
    )
    annotate.set_defaults(func=run_annotate)
    return annotate


def model_choices(args: argparse.Namespace) -> dict[str, Any]:
    """The Model tab's fields the options set."""
    chosen: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("task", "size", "device")
        if getattr(args, name, None) is not None
    }
    if chosen.get("device") == "cuda":  # the Model tab names each GPU
        chosen["device"] = "cuda:0"
    if args.weights:
        chosen["weights_path"] = Path(args.weights).absolute()
        chosen["weights_source"] = "file"
    elif args.size:
        chosen["weights_source"] = "official"
    return chosen


def no_display_reason() -> str | None:
    """Why napari's window cannot open here (a Linux session without a display, where
    Qt would abort), or None."""
    if not sys.platform.startswith("linux"):
        return None
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform and not platform.startswith(("xcb", "wayland")):
        return None  # offscreen, vnc, eglfs: Qt draws without a display server
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    return (
        "annotate opens napari's window and this session has no display (DISPLAY and "
        "WAYLAND_DISPLAY are unset): run it on the desktop, over `ssh -X`, or under "
        "`xvfb-run`; `napari-focus predict` writes masks without a window"
    )


def run_annotate(args: argparse.Namespace) -> int:
    from .io import read_image

    if args.weights and (problem := weights_file_problem(args.weights)):
        print(f"napari-focus: --weights {args.weights}: {problem}", file=sys.stderr)
        return EXIT_SETUP_ERROR
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
    if (reason := no_display_reason()) is not None:
        print(f"napari-focus: {reason}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    import napari

    from .gui.annotate import close_on_signals, open_viewer

    viewer, _ = open_viewer(paths, folder=folder, images=images, model=model_choices(args))
    _timer, received, close = close_on_signals(viewer)
    napari.run()
    if received:  # closed by Ctrl-C or SIGTERM, as by the window's close button
        close()
        print("napari-focus: interrupted: napari was closed", file=sys.stderr)
        return interrupted_exit(received[0] == signal.SIGTERM)
    return 0
