"""``napari-focus train``: fine-tune FOCUS on exported corrections.

Registered by :func:`add_train_parser`; nothing heavy (torch) is imported until the
command runs.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..atomic import WriteError, check_writable_file, check_writable_folder
from ..cli_common import (
    EXIT_INTERRUPTED,
    EXIT_SETUP_ERROR,
    StopRequest,
    first_signal_asks_to_stop,
    path_argument,
    positive_int,
    say,
)
from ..datasets.layouts import LAYOUTS as LAYOUT_NAMES
from ..presets import SIZES, TASKS
from .config import DEFAULT_STEPS

PREFIX = "napari-focus train"  # every line of the command, refusals to summary
# a copy (training.presets imports torch); tests/test_training_cli.py keeps it in step
PRESET_NAMES = ("auto", "cpu", "gpu-small", "gpu-medium", "gpu-large", "gpu-xl")
# the same for training.validate.VALIDATION_METRICS (the figures --keep-best picks from)
KEEP_BEST_NAMES = ("mask_iou", "iou", "smeasure", "emeasure_mean", "wfmeasure", "mae", "ber",
                   "edit_effort")  # fmt: skip


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def _crop(text: str) -> int:
    value = int(text)
    if value < 32 or value % 32:
        raise argparse.ArgumentTypeError(f"must be a multiple of 32 such as 512, got {text}")
    return value


EXIT_CODES = f"""\
exit codes:
  0  the checkpoint was written
  1  the run stopped: a file could not be written (a full disk; --resume
     continues) or, after a step was saved, a sample's files turned out broken
     (fix them, then --restart)
  {EXIT_SETUP_ERROR}  nothing was started: bad arguments, an unusable --device, PySODMetrics
     missing, no samples, an existing --out, an unfinished run of --out (add
     --resume or --restart), or base weights that could not be loaded
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C (143: by SIGTERM); --resume continues from the
     last completed step (a second one stops at once: from the last evaluation)
"""


def add_train_parser(commands: Any) -> argparse.ArgumentParser:
    train = commands.add_parser(
        "train",
        help="fine-tune FOCUS on exported corrected masks",
        description=(
            "Fine-tune FOCUS on the samples exported under --root (official loss and "
            "augmentation, AdamW, held-out validation) and write a .safetensors checkpoint "
            "that `predict --weights` and the widget load."
        ),
        epilog=EXIT_CODES,
    )
    train.add_argument("--root", required=True, metavar="DATASETS", type=path_argument,
                       help="dataset root the exports went to")  # fmt: skip
    train.add_argument(
        "--layout", action="append", required=True, choices=LAYOUT_NAMES, type=str.lower,
        metavar="LAYOUT", help=f"layout to train on, one of {', '.join(LAYOUT_NAMES)} "
        "(repeat for several)",
    )  # fmt: skip
    train.add_argument(
        "--weights", required=True, metavar="BASE",
        help="base weights: a task (sod, cod, sd, dbd, fd; with --size), an official name "
        "(focus_large_cod) or a checkpoint file (.pth or .safetensors)",
    )  # fmt: skip
    train.add_argument("--out", required=True, metavar="FILE", type=path_argument,
                       help="output checkpoint (.safetensors)")  # fmt: skip
    train.add_argument("--size", choices=SIZES, default="large",
                       help="size of an official base given as a task (default large)")
    train.add_argument("--task", choices=TASKS, type=str.lower,
                       help="task recorded in the output (default: the base's)")  # fmt: skip
    train.add_argument("--steps", type=positive_int, default=DEFAULT_STEPS, metavar="N",
                       help=f"optimizer steps (default {DEFAULT_STEPS})")  # fmt: skip
    train.add_argument("--device", default="auto",
                       help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N, gpu "
                       "(same as cuda) or mps; default auto")  # fmt: skip
    train.add_argument("--preset", choices=PRESET_NAMES, default="auto", metavar="PRESET",
                       help=f"hardware preset (what trains, batch size, crop): "
                       f"{', '.join(PRESET_NAMES)}; default auto")  # fmt: skip
    train.add_argument("--batch-size", type=positive_int, metavar="N",
                       help="override the preset's batch size")  # fmt: skip
    train.add_argument("--crop", type=_crop, metavar="PIXELS",
                       help="override the preset's crop (multiple of 32)")  # fmt: skip
    train.add_argument("--lr", type=_positive_float, help="learning rate (official: 1e-4)")
    train.add_argument("--keep-best", choices=KEEP_BEST_NAMES, default="mask_iou",
                       metavar="METRIC", help="the validation figure that picks the step "
                       f"written: {', '.join(KEEP_BEST_NAMES)}; default mask_iou, the IoU "
                       "of the proposal a person corrects")  # fmt: skip
    train.add_argument("--eval-every", type=positive_int, metavar="N",
                       help="validation period (default steps/5)")  # fmt: skip
    train.add_argument("--val-fraction", type=_fraction, default=0.2, metavar="F",
                       help="held-out share of the samples (default 0.2)")  # fmt: skip
    train.add_argument("--val", nargs="+", metavar="NAME",
                       help="hold out these samples instead (names or layout/name)")  # fmt: skip
    train.add_argument("--seed", type=int, default=0, metavar="N",
                       help="random seed of sampling and augmentation (default 0)")  # fmt: skip
    again = train.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the unfinished (interrupted) run of --out; its "
                       "settings must be the same")  # fmt: skip
    again.add_argument("--restart", action="store_true",
                       help="discard the unfinished run of --out (its <out stem>.training/"
                       "resume.pt) and start this one")  # fmt: skip
    train.add_argument("--quiet", action="store_true",
                       help="only the evaluations and the summary: no progress bar")  # fmt: skip
    train.set_defaults(func=run_train, message_prefix=PREFIX)
    return train


def _note_recorded_task(args: argparse.Namespace) -> None:
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
        print(f"{PREFIX}: note: the base weights are for {base_task} and "
              f"--layout {' '.join(args.layout)} holds {data_task} samples; the output "
              f"records the task {base_task} (the base's) unless you add --task {data_task}",
              file=sys.stderr)  # fmt: skip


# the settings a resumed run must share with the run it continues, in the flags' words
RESUME_SETTINGS = {
    "base": "--weights", "parts": "--preset (trained parts)", "batch_size": "--batch-size",
    "canvas": "--crop", "seed": "--seed", "steps": "--steps", "warmup": "warm-up steps",
    "lr": "--lr", "eval_every": "--eval-every", "select_metric": "--keep-best",
    "validation": "held-out samples (--val, --val-fraction)",
    "data": "samples under --root --layout",
}  # fmt: skip


def _say(message: str) -> None:
    print(f"{PREFIX}: {message}", file=sys.stderr)


def _resume_changes(error: Any, args: argparse.Namespace) -> str:
    """The settings that differ from the saved run's, as ``--crop 96 -> 128``; the
    warm-up and evaluation period that follow --steps by default are not said twice."""
    skip: tuple[str, ...] = ()
    if "steps" in error.differing:
        skip = ("warmup",) if args.eval_every is not None else ("warmup", "eval_every")
    return error.describe(RESUME_SETTINGS, skip=skip)


def _warn_gpu_preset_on_cpu(args: argparse.Namespace) -> None:
    """One line when a GPU preset would train on the CPU (hours for what takes minutes)."""
    if not args.preset.startswith("gpu"):
        return
    from ..devices import resolve_device
    from .presets import PRESETS

    if resolve_device(args.device).type == "cpu":
        on = "--device cpu" if args.device == "cpu" else f"--device {args.device} (no GPU here)"
        preset = PRESETS[args.preset]
        _say(f"warning: --preset {args.preset} is for a GPU ({preset.description}) and {on} "
             "trains on the CPU, many times slower per step than --preset cpu")  # fmt: skip


def run_train(args: argparse.Namespace) -> int:
    from ..cli_common import progress_bar
    from ..quality import require_metrics

    try:  # before torch and the model code are imported (seconds)
        require_metrics()
    except ImportError as error:
        _say(f"the held-out validation's {error}")
        return EXIT_SETUP_ERROR
    from .config import OFFICIAL_LR, TrainConfig
    from .data import DatasetError, UnknownValidationNames
    from .loop import train
    from .state import (
        ResumeMismatchError,
        UnfinishedRunError,
        UnreadableStateError,
        has_saved_state,
    )

    if Path(args.out).suffix != ".safetensors":
        fixed = Path(args.out).with_suffix(".safetensors")
        _say(f"--out {args.out}: the output is a .safetensors checkpoint; give --out {fixed}")
        return EXIT_SETUP_ERROR
    _note_recorded_task(args)
    try:
        config = TrainConfig(
            root=Path(args.root), layouts=tuple(args.layout), out=Path(args.out),
            weights=args.weights, size=args.size, task=args.task, steps=args.steps,
            device=args.device, preset=args.preset, batch_size=args.batch_size,
            canvas=args.crop, lr=args.lr or OFFICIAL_LR, eval_every=args.eval_every,
            val_fraction=args.val_fraction, val_names=tuple(args.val) if args.val else None,
            seed=args.seed, resume=args.resume, restart=args.restart,
            select_metric=args.keep_best,
        )  # fmt: skip
    except ValueError as error:
        _say(str(error))
        return EXIT_SETUP_ERROR
    root = Path(args.root)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is a file"
        _say(f"--root {root} {what}; give the FOCUS datasets/ folder the samples were "
             "exported to")  # fmt: skip
        return EXIT_SETUP_ERROR
    out = Path(args.out)
    if args.resume and not out.exists() and not has_saved_state(config.work_dir):
        _say(f"--resume: {config.work_dir} holds no unfinished run of --out {out}; leave "
             "--resume out to start a new run")  # fmt: skip
        return EXIT_SETUP_ERROR
    if out.exists():
        finished = " (the run it came from has finished)" if args.resume else ""
        _say(f"{out} exists{finished}; choose another --out (nothing is overwritten)")
        return EXIT_SETUP_ERROR
    try:  # before hours of training: the checkpoint and its work folder go beside --out
        check_writable_file(out)
        if config.work_dir.exists():  # a work folder of an earlier run: written again
            check_writable_folder(config.work_dir)
    except WriteError as error:
        _say(f"--out: {error}")
        return EXIT_SETUP_ERROR

    try:  # a mistyped --weights is said now, not after the samples are read
        from .setup import check_base_weights

        check_base_weights(args.weights, args.size)
    except ValueError as error:
        _say(str(error))
        return EXIT_SETUP_ERROR
    _warn_gpu_preset_on_cpu(args)

    bar = None  # shown once the run has begun: a refusal comes without a bar before it

    def show(progress: Any) -> None:
        nonlocal bar
        downloading = progress.phase == "setup" and progress.message.startswith("downloading")
        if bar is None and (downloading or progress.phase in ("eval", "train")):
            bar = progress_bar(args.steps, "fine-tuning", "step", quiet=args.quiet,
                               prefix=PREFIX)  # fmt: skip
        if bar is None:
            return
        if progress.phase == "train":  # the bar shows step/s and the ETA
            bar.set_description_str("fine-tuning")
            bar.set_postfix(loss=f"{progress.loss:.3f}", refresh=False)
            bar.update(progress.step - bar.n)
        elif progress.phase == "eval" and progress.metrics is not None:
            say(progress.message)
        elif downloading:
            bar.set_description_str(progress.message)

    def close_bar() -> None:
        if bar is not None:
            bar.close()

    cancel = threading.Event()
    request = StopRequest()

    def stopping(signum: int) -> str:
        again = "Ctrl-C" if signum == signal.SIGINT else "another SIGTERM"
        return (f"napari-focus train: stopping within a model stage and saving the last "
                f"completed step ({again} to stop at once)")  # fmt: skip

    started = time.time()  # a state saved since then is this run's: it had started
    try:  # a first Ctrl-C or SIGTERM: the run stops within a model stage, saving its state
        with first_signal_asks_to_stop(stopping, on_first=cancel.set) as request:
            result = train(config, progress=show, cancel=cancel)
    except UnfinishedRunError:
        close_bar()
        _say(f"{config.work_dir} holds an unfinished run of --out {out}: add --resume to "
             "continue it, --restart to discard it and start this run, or choose another "
             "--out to keep it")  # fmt: skip
        return EXIT_SETUP_ERROR
    except ResumeMismatchError as error:
        close_bar()
        _say(f"--resume: the unfinished run in {config.work_dir} had other settings (then "
             f"-> now: {_resume_changes(error, args)}); give its settings again to continue "
             "it, replace --resume by --restart to discard it and start this run, or "
             "choose another --out to keep it")  # fmt: skip
        return EXIT_SETUP_ERROR
    except UnreadableStateError as error:
        close_bar()
        _say(f"--resume: {error.path} cannot be continued ({error.reason}); replace "
             "--resume by --restart to start the run afresh, or choose another --out")  # fmt: skip
        return EXIT_SETUP_ERROR
    except (DatasetError, FileNotFoundError, FileExistsError, ValueError) as error:
        close_bar()
        flag = "--val: " if isinstance(error, UnknownValidationNames) else ""
        if not flag and _saved_since(config.work_dir, started):
            # a sample's files found broken during the run (they are decoded as they come)
            _say(f"{error}; the run stopped there: once the sample is fixed or removed, "
                 "--restart trains afresh (--resume refuses changed samples)")  # fmt: skip
            return 1
        _say(f"{flag}{error}")
        return EXIT_SETUP_ERROR
    except WriteError as error:  # a full disk while saving an evaluation or the output
        close_bar()
        if has_saved_state(config.work_dir):
            _say(f"{error}; `--resume` continues from the last saved evaluation once it can "
                 "be written")  # fmt: skip
        else:
            _say(f"{error}; nothing was saved: run the same command again once it can be "
                 "written")  # fmt: skip
        return 1
    except (KeyboardInterrupt, RuntimeError) as error:
        if isinstance(error, RuntimeError) and not _interrupted_inside(error):
            raise
        close_bar()
        if has_saved_state(config.work_dir) or args.resume:
            _say("interrupted; `--resume` continues from the last evaluation")
        else:  # nothing to resume yet (interrupted while the base weights downloaded, say)
            download = "" if Path(args.weights).is_file() else (
                " (a download of the base weights continues from where it stopped)"
            )
            _say(f"interrupted before anything was saved; run the same command again{download}")
        return _interrupted_code(request.received)
    close_bar()
    if result.cancelled and not result.started:
        _say("interrupted while the base weights downloaded; run the same command again "
             "(the download continues from where it stopped)")
        return _interrupted_code(request.received)
    if result.cancelled and not result.saved:
        _say("interrupted before its first step was done, so nothing was saved; run the "
             "same command again")  # fmt: skip
        return _interrupted_code(request.received)
    if result.cancelled:
        _say(f"interrupted at step {result.step} of {args.steps}; the same command with "
             "`--resume` continues from there")
        return _interrupted_code(request.received)
    if result.output != Path(args.out):
        _say(f"--out {args.out} appeared during training and was kept; the trained "
             f"weights are in {result.output}")  # fmt: skip
    for problem in result.problems:
        print(f"  skipped: {problem}", file=sys.stderr)
    _say(f"wrote {result.output} ({_best_step_summary(result, args.keep_best)}); report: "
         f"{result.report}")  # fmt: skip
    if result.best_step == 0:
        print("  no step beat the base weights on the held-out samples: the output holds "
              "them unchanged", file=sys.stderr)  # fmt: skip
    return 0


def _saved_since(work_dir: Path, started: float) -> bool:
    """Whether the run saved its resume state after ``started`` (so it had trained)."""
    from .state import STATE_NAME

    try:
        return (work_dir / STATE_NAME).stat().st_mtime >= started - 1.0
    except OSError:
        return False


def _interrupted_inside(error: BaseException) -> bool:
    """Whether ``error`` comes from a second Ctrl-C inside a library call (torch's
    file writer turns the KeyboardInterrupt into a RuntimeError of its own)."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _interrupted_code(received: set[int]) -> int:
    """130 for Ctrl-C, 143 when SIGTERM stopped the run (as a shell reports them)."""
    return 128 + int(signal.SIGTERM) if signal.SIGTERM in received else EXIT_INTERRUPTED


def _best_step_summary(result: Any, keep_best: str) -> str:
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
