"""``napari-focus train``: fine-tune FOCUS on exported corrections.

Registered by :func:`add_train_parser`; nothing heavy (torch) is imported until the
command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..atomic import WriteError, check_writable_file
from ..cli_common import EXIT_INTERRUPTED, EXIT_SETUP_ERROR, positive_int
from ..datasets.layouts import LAYOUTS as LAYOUT_NAMES
from ..presets import SIZES, TASKS
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
  1  a file could not be written during the run (a full disk); --resume
     continues
  {EXIT_SETUP_ERROR}  nothing was started: bad arguments, an unusable --device, PySODMetrics
     missing, no samples, an existing --out, or base weights that could not be
     loaded
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C; --resume continues from the last evaluation
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
    train.add_argument("--root", required=True, metavar="DATASETS",
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
    train.add_argument("--out", required=True, metavar="FILE",
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
    train.add_argument("--resume", action="store_true", help="continue an interrupted run")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=run_train)
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
        print(f"napari-focus train: note: the base weights are for {base_task} and "
              f"--layout {' '.join(args.layout)} holds {data_task} samples; the output "
              f"records the task {base_task} (the base's) unless you add --task {data_task}",
              file=sys.stderr)  # fmt: skip


def run_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..quality import require_metrics

    try:  # before torch and the model code are imported (seconds)
        require_metrics()
    except ImportError as error:
        print(f"napari-focus train: the held-out validation's {error}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    from .config import OFFICIAL_LR, TrainConfig
    from .data import DatasetError, UnknownValidationNames
    from .loop import train
    from .state import UnfinishedRunError, has_saved_state

    if Path(args.out).suffix != ".safetensors":
        fixed = Path(args.out).with_suffix(".safetensors")
        print(f"napari-focus train: --out {args.out}: the output is a .safetensors "
              f"checkpoint; give --out {fixed}", file=sys.stderr)  # fmt: skip
        return EXIT_SETUP_ERROR
    _note_recorded_task(args)
    try:
        config = TrainConfig(
            root=Path(args.root), layouts=tuple(args.layout), out=Path(args.out),
            weights=args.weights, size=args.size, task=args.task, steps=args.steps,
            device=args.device, preset=args.preset, batch_size=args.batch_size,
            canvas=args.crop, lr=args.lr or OFFICIAL_LR, eval_every=args.eval_every,
            val_fraction=args.val_fraction, val_names=tuple(args.val) if args.val else None,
            seed=args.seed, resume=args.resume, select_metric=args.keep_best,
        )  # fmt: skip
    except ValueError as error:
        print(f"napari-focus train: {error}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    root = Path(args.root)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is a file"
        print(f"napari-focus train: --root {root} {what}; give the FOCUS datasets/ folder "
              "the samples were exported to", file=sys.stderr)  # fmt: skip
        return EXIT_SETUP_ERROR
    out = Path(args.out)
    if args.resume and not out.exists() and not has_saved_state(config.work_dir):
        print(f"napari-focus train: --resume: {config.work_dir} holds no unfinished run of "
              f"--out {out}; leave --resume out to start a new run", file=sys.stderr)  # fmt: skip
        return EXIT_SETUP_ERROR
    if out.exists():
        finished = " (the run it came from has finished)" if args.resume else ""
        print(f"napari-focus train: {out} exists{finished}; choose another --out (nothing "
              "is overwritten)", file=sys.stderr)  # fmt: skip
        return EXIT_SETUP_ERROR
    try:  # before hours of training: the checkpoint and its work folder go beside --out
        check_writable_file(out)
    except WriteError as error:
        print(f"napari-focus train: --out: {error}", file=sys.stderr)
        return EXIT_SETUP_ERROR

    try:  # a mistyped --weights is said now, not after the samples are read
        from .setup import check_base_weights

        check_base_weights(args.weights, args.size)
    except ValueError as error:
        print(f"napari-focus train: {error}", file=sys.stderr)
        return EXIT_SETUP_ERROR

    bar = tqdm(total=args.steps, desc="fine-tuning", unit="step", disable=args.quiet)

    def show(progress: Any) -> None:
        if progress.phase == "train":  # tqdm shows step/s and the ETA
            bar.set_postfix(loss=f"{progress.loss:.3f}", refresh=False)
            bar.update(progress.step - bar.n)
        elif progress.phase == "eval" and progress.metrics is not None:
            tqdm.write(progress.message, file=sys.stderr)
        elif progress.phase == "setup":
            bar.set_description_str(progress.message)
            if progress.message.startswith("loading"):
                bar.set_description_str("fine-tuning")

    try:
        result = train(config, progress=show)
    except UnfinishedRunError:
        bar.close()
        print(f"napari-focus train: {config.work_dir} holds an unfinished run of --out "
              f"{out}: add --resume to continue it, or choose another --out to start a new "
              "run (nothing is overwritten)", file=sys.stderr)  # fmt: skip
        return EXIT_SETUP_ERROR
    except (DatasetError, FileNotFoundError, FileExistsError, ValueError) as error:
        bar.close()
        flag = "--val: " if isinstance(error, UnknownValidationNames) else ""
        print(f"napari-focus train: {flag}{error}", file=sys.stderr)
        return EXIT_SETUP_ERROR
    except WriteError as error:  # a full disk while saving an evaluation or the output
        bar.close()
        print(f"napari-focus train: {error}; `--resume` continues from the last saved "
              "evaluation once there is room", file=sys.stderr)  # fmt: skip
        return 1
    except KeyboardInterrupt:
        bar.close()
        if has_saved_state(config.work_dir) or args.resume:
            print("napari-focus train: interrupted; `--resume` continues from the last "
                  "evaluation", file=sys.stderr)  # fmt: skip
        else:  # nothing to resume yet (interrupted while the base weights downloaded, say)
            print("napari-focus train: interrupted before anything was saved; run the same "
                  "command again (a download of the base weights continues from where it "
                  "stopped)", file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    bar.close()
    if result.output != Path(args.out):
        print(f"napari-focus train: --out {args.out} appeared during training and was "
              f"kept; the trained weights are in {result.output}", file=sys.stderr)  # fmt: skip
    for problem in result.problems:
        print(f"  skipped: {problem}", file=sys.stderr)
    best = result.best_metrics or {}
    base = result.baseline_metrics or {}
    summary = ", ".join(
        f"{k} {base[k]:.3f} -> {best[k]:.3f}" if k in base else f"{k} {best[k]:.3f}"
        for k in ("mask_iou", "smeasure", "edit_effort")
        if k in best
    )
    print(
        f"napari-focus: wrote {result.output} (best step {result.best_step}"
        f"{': ' + summary if summary else ''}); report: {result.report}",
        file=sys.stderr,
    )
    if result.best_step == 0:
        print("  no step beat the base weights on the held-out samples: the output holds "
              "them unchanged", file=sys.stderr)  # fmt: skip
    return 0
