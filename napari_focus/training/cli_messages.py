"""What ``napari-focus train`` says around a run: notes before it starts, the settings a
resumed run must share, how it stopped, and its summary line."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from ..cli_common import interrupted_exit

PREFIX = "napari-focus train"  # every line of the command, refusals to summary


def note_recorded_task(args: argparse.Namespace) -> None:
    """Say when the output would record the base's task although every --layout holds
    samples of another task (``predict --task`` then warns about the new checkpoint)."""
    from ..checkpoint_identity import recorded_task
    from ..datasets.layouts import get_layout
    from .setup import official_base

    if args.task is not None:
        return
    data_tasks = {get_layout(layout).task for layout in args.layout}
    found = official_base(args.weights) or recorded_task(args.weights)
    base_task = found[0] if found else None
    if len(data_tasks) == 1 and None not in data_tasks and base_task not in (None, *data_tasks):
        (data_task,) = data_tasks
        tell(f"note: the base weights are for {base_task} and --layout "
             f"{' '.join(args.layout)} holds {data_task} samples; the output records the "
             f"task {base_task} (the base's) unless you add --task {data_task}")  # fmt: skip


# the settings a resumed run must share with the run it continues, in the flags' words
RESUME_SETTINGS = {
    "base": "--weights", "parts": "--preset (trained parts)", "batch_size": "--batch-size",
    "canvas": "--crop", "seed": "--seed", "steps": "--steps", "warmup": "warm-up steps",
    "lr": "--lr", "eval_every": "--eval-every", "select_metric": "--keep-best",
    "validation": "held-out samples (--val, --val-fraction)",
    "data": "samples under --root --layout",
}  # fmt: skip


def tell(message: str) -> None:
    """Print ``message`` as a line of the command (``napari-focus train: ...``)."""
    print(f"{PREFIX}: {message}", file=sys.stderr)


def resume_changes(error: Any, args: argparse.Namespace) -> str:
    """The settings that differ from the saved run's, as ``--crop 96 -> 128``; the
    warm-up and evaluation period that follow --steps by default are not said twice."""
    skip: tuple[str, ...] = ()
    if "steps" in error.differing:
        skip = ("warmup",) if args.eval_every is not None else ("warmup", "eval_every")
    return error.describe(RESUME_SETTINGS, skip=skip)


def warn_gpu_preset_on_cpu(args: argparse.Namespace) -> None:
    """One line when a GPU preset would train on the CPU (hours for what takes minutes)."""
    if not args.preset.startswith("gpu"):
        return
    from ..devices import resolve_device
    from .presets import PRESETS

    if resolve_device(args.device).type == "cpu":
        on = "--device cpu" if args.device == "cpu" else f"--device {args.device} (no GPU here)"
        preset = PRESETS[args.preset]
        tell(f"warning: --preset {args.preset} is for a GPU ({preset.description}) and {on} "
             "trains on the CPU, many times slower per step than --preset cpu")  # fmt: skip


def saved_since(work_dir: Path, started: float) -> bool:
    """Whether the run saved its resume state after ``started`` (so it had trained)."""
    from .state import STATE_NAME

    try:
        return (work_dir / STATE_NAME).stat().st_mtime >= started - 1.0
    except OSError:
        return False


def interrupted_code(received: set[int]) -> int:
    """130 for Ctrl-C, 143 when SIGTERM stopped the run (as a shell reports them)."""
    return interrupted_exit(signal.SIGTERM in received)


def best_step_summary(result: Any, keep_best: str) -> str:
    """``best step 4 by --keep-best iou: iou 0.570 -> 0.612, mask_iou ...``: the figure
    that chose the kept weights first, then the proposal's IoU, S-measure, edit effort."""
    best = result.best_metrics or {}
    base = result.baseline_metrics or {}
    figures = ", ".join(
        f"{k} {base[k]:.3f} -> {best[k]:.3f}" if k in base else f"{k} {best[k]:.3f}"
        for k in dict.fromkeys((keep_best, "mask_iou", "smeasure", "edit_effort"))
        if k in best
    )
    if result.best_step is None:  # no held-out samples: the last step is written
        return f"the last step, {result.step}: no held-out samples to choose a best by"
    if not figures:
        return f"best step {result.best_step}"
    return f"best step {result.best_step} by --keep-best {keep_best}: {figures}"
