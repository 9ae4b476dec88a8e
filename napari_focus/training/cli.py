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
from ..cli_arguments import path_argument, positive_int
from ..cli_common import (
    EXIT_INTERRUPTED,
    EXIT_SETUP_ERROR,
    StopRequest,
    first_signal_asks_to_stop,
    say,
)
from ..datasets.layouts import LAYOUTS as LAYOUT_NAMES
from ..interrupts import interrupted_inside
from ..presets import SIZES, TASKS
from .cli_messages import (
    PREFIX,
    best_step_summary,
    interrupted_code,
    note_recorded_task,
    resume_changes,
    saved_since,
    tell,
    warn_gpu_preset_on_cpu,
)
from .config import DEFAULT_STEPS

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
                       help="override the preset's crop: the training canvas (multiple "
                       "of 32; its random crop is 1.25x it, official 640 for 512)")  # fmt: skip
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


def run_train(args: argparse.Namespace) -> int:
    from ..cli_common import progress_bar
    from ..quality import require_metrics

    try:  # before torch and the model code are imported (seconds)
        require_metrics()
    except ImportError as error:
        tell(f"the held-out validation's {error}")
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
        tell(f"--out {args.out}: the output is a .safetensors checkpoint; give --out {fixed}")
        return EXIT_SETUP_ERROR
    note_recorded_task(args)
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
        tell(str(error))
        return EXIT_SETUP_ERROR
    root = Path(args.root)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is a file"
        tell(f"--root {root} {what}; give the FOCUS datasets/ folder the samples were "
             "exported to")  # fmt: skip
        return EXIT_SETUP_ERROR
    out = Path(args.out)
    if args.resume and not out.exists() and not has_saved_state(config.work_dir):
        tell(f"--resume: {config.work_dir} holds no unfinished run of --out {out}; leave "
             "--resume out to start a new run")  # fmt: skip
        return EXIT_SETUP_ERROR
    if out.exists():
        finished = " (the run it came from has finished)" if args.resume else ""
        tell(f"{out} exists{finished}; choose another --out (nothing is overwritten)")
        return EXIT_SETUP_ERROR
    try:  # before hours of training: the checkpoint and its work folder go beside --out
        check_writable_file(out)
        if config.work_dir.exists():  # a work folder of an earlier run: written again
            check_writable_folder(config.work_dir)
    except WriteError as error:
        tell(f"--out: {error}; choose another --out")
        return EXIT_SETUP_ERROR

    try:  # a mistyped --weights is said now, not after the samples are read
        from .setup import check_base_weights

        check_base_weights(args.weights, args.size)
    except ValueError as error:
        tell(str(error))
        return EXIT_SETUP_ERROR
    warn_gpu_preset_on_cpu(args)

    bar = None  # shown once the run has begun: a refusal comes without a bar before it
    stepped = args.resume  # a completed step to save on a stop (a resumed run has one)

    def show(progress: Any) -> None:
        nonlocal bar, stepped
        stepped = stepped or (progress.phase == "train" and progress.step > 0)
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
        saving = "saving the last completed step" if stepped else "no step is done to save"
        return f"{PREFIX}: stopping within a model stage, {saving} ({again} to stop at once)"

    started = time.time()  # a state saved since then is this run's: it had started
    try:  # a first Ctrl-C or SIGTERM: the run stops within a model stage, saving its state
        with first_signal_asks_to_stop(stopping, on_first=cancel.set) as request:
            result = train(config, progress=show, cancel=cancel)
    except UnfinishedRunError:
        close_bar()
        tell(f"{config.work_dir} holds an unfinished run of --out {out}: add --resume to "
             "continue it, --restart to discard it and start this run, or choose another "
             "--out to keep it")  # fmt: skip
        return EXIT_SETUP_ERROR
    except ResumeMismatchError as error:
        close_bar()
        tell(f"--resume: the unfinished run in {config.work_dir} had other settings (then "
             f"-> now: {resume_changes(error, args)}); give its settings again to continue "
             "it, replace --resume by --restart to discard it and start this run, or "
             "choose another --out to keep it")  # fmt: skip
        return EXIT_SETUP_ERROR
    except UnreadableStateError as error:
        close_bar()
        tell(f"--resume: {error.path} cannot be continued ({error.reason}); replace "
             "--resume by --restart to start the run afresh, or choose another --out")  # fmt: skip
        return EXIT_SETUP_ERROR
    except (DatasetError, FileNotFoundError, FileExistsError, ValueError) as error:
        close_bar()
        flag = "--val: " if isinstance(error, UnknownValidationNames) else ""
        if not flag and saved_since(config.work_dir, started):
            # a sample's files found broken during the run (they are decoded as they come)
            tell(f"{error}; the run stopped there: once the sample is fixed or removed, "
                 "--restart trains afresh (--resume refuses changed samples)")  # fmt: skip
            return 1
        tell(f"{flag}{error}")
        return EXIT_SETUP_ERROR
    except WriteError as error:  # a full disk while saving an evaluation or the output
        close_bar()
        if has_saved_state(config.work_dir):
            tell(f"{error}; `--resume` continues from the last saved evaluation once it can "
                 "be written")  # fmt: skip
        else:
            tell(f"{error}; nothing was saved: run the same command again once it can be "
                 "written")  # fmt: skip
        return 1
    except (KeyboardInterrupt, RuntimeError) as error:
        if isinstance(error, RuntimeError) and not interrupted_inside(error):
            raise
        close_bar()
        if has_saved_state(config.work_dir) or args.resume:
            tell("interrupted; `--resume` continues from the last evaluation")
        else:  # nothing to resume yet (interrupted while the base weights downloaded, say)
            download = "" if Path(args.weights).is_file() else (
                " (a download of the base weights continues from where it stopped)"
            )
            tell(f"interrupted before anything was saved; run the same command again{download}")
        return interrupted_code(request.received)
    close_bar()
    if result.cancelled and not result.started:
        tell("interrupted while the base weights downloaded; run the same command again "
             "(the download continues from where it stopped)")
        return interrupted_code(request.received)
    if result.cancelled and not result.saved:
        tell("interrupted before its first step was done, so nothing was saved; run the "
             "same command again")  # fmt: skip
        return interrupted_code(request.received)
    if result.cancelled:
        tell(f"interrupted at step {result.step} of {args.steps}; the same command with "
             "`--resume` continues from there")
        return interrupted_code(request.received)
    if result.output != Path(args.out):
        tell(f"--out {args.out} appeared during training and was kept; the trained "
             f"weights are in {result.output}")  # fmt: skip
    for problem in result.problems:
        print(f"  skipped: {problem}", file=sys.stderr)
    tell(f"wrote {result.output} ({best_step_summary(result, args.keep_best)}); report: "
         f"{result.report}")  # fmt: skip
    if result.best_step == 0:
        print("  no step beat the base weights on the held-out samples: the output holds "
              "them unchanged", file=sys.stderr)  # fmt: skip
    return 0
