"""The fine-tuning loop: batches, loss, AdamW step, validation, best step, resume, output.

Determinism: every step draws its samples, augmentation and loss points from generators
seeded with ``(seed, step)``, so a run resumed at step k continues exactly as the
uninterrupted run would have (up to the nondeterminism of the device's kernels).

Cancelling: the ``cancel`` event stops the run within one model stage (see
:mod:`.interrupt`), in a training step or an evaluation; no step or evaluation starts
after it, and no output is written. The resume state saved then is that of the last
completed step; an evaluation a cancel cut short runs first when the run resumes.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..atomic import WriteError, check_writable_file, check_writable_folder
from ..checkpoints import save_inference_checkpoint
from ..hub_download import DownloadProgress
from ..predictor import FocusPredictor, resolve_device
from ..quality import require_metrics
from ..run_control import Cancelled, RunControl, watch_model
from ..runtime import DTYPES
from .augment import AugmentConfig
from .batches import TrainBatches
from .config import OFFICIAL_POLY_POWER, TrainConfig
from .criterion import SetCriterion, total_loss
from .data import collect_samples, same_source_groups, split_samples
from .forward import training_forward
from .interrupt import watch_step
from .matcher import DIVERGED_ADVICE, TrainingDiverged
from .presets import resolve_preset
from .setup import load_base, lr_factor, parameter_groups, prepare_for_training, set_train_mode
from .state import (
    STATE_NAME,
    RunState,
    UnfinishedRunError,
    has_saved_state,
    load_state,
    save_state,
)
from .validate import REPORT_NAME, better, score_samples, write_report


@dataclass(frozen=True)
class TrainProgress:
    """What a progress callback receives after every step and evaluation."""

    phase: str  # "setup", "eval", "train", "done", "cancelled"
    step: int
    steps: int
    message: str
    loss: float | None = None
    steps_per_second: float | None = None
    eta_seconds: float | None = None
    metrics: dict[str, float] | None = None


@dataclass(frozen=True)
class TrainResult:
    output: Path | None  # None when cancelled
    cancelled: bool
    step: int
    best_step: int | None
    best_metrics: dict[str, float] | None
    baseline_metrics: dict[str, float] | None
    report: Path
    work_dir: Path
    history: list[dict]
    problems: tuple[str, ...] = ()
    started: bool = True  # False: cancelled while the base weights downloaded
    saved: bool = True  # a cancelled run left a resume state (False: nothing to continue)


def train(
    config: TrainConfig,
    *,
    progress: Callable[[TrainProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> TrainResult:
    """Fine-tune FOCUS on exported samples; see :class:`TrainConfig` and the README."""
    report_progress = progress or (lambda _p: None)
    cancel = cancel or threading.Event()
    control = RunControl(cancel)
    device = resolve_device(config.device)
    preset = resolve_preset(config.preset, device)
    parts = tuple(config.parts or preset.parts)
    batch_size = config.batch_size or preset.batch_size
    canvas = config.canvas or preset.canvas
    amp = (preset.amp if config.amp is None else config.amp) and device.type == "cuda"
    checkpointing = preset.checkpointing if config.checkpointing is None else config.checkpointing
    if canvas % 32:
        raise ValueError(f"the canvas must be a multiple of 32, got {canvas}")
    if config.out.exists() and not config.overwrite:
        raise FileExistsError(f"{config.out} exists; choose another output (or overwrite=True)")
    fresh = config.overwrite or config.restart
    if not config.resume and not fresh and has_saved_state(Path(config.work_dir)):
        raise UnfinishedRunError(
            f"{config.work_dir} holds the saved state of an unfinished run, which a new run "
            "would replace: resume it, restart (discarding it), or choose another output"
        )
    # hours of training must not end in a folder that takes no files
    check_writable_file(config.out)
    check_writable_folder(Path(config.work_dir))
    require_metrics()  # validation scores every evaluation; fail before any loading

    report_progress(TrainProgress("setup", 0, config.steps, "reading the training data…"))
    samples, problems = collect_samples(config.root, config.layouts)
    train_set, val_set = split_samples(
        samples, val_fraction=config.val_fraction, val_names=config.val_names, seed=config.seed,
        groups=same_source_groups(config.root, samples),
    )  # fmt: skip
    loading = TrainProgress("setup", 0, config.steps, "loading the base weights…")
    report_progress(loading)

    def downloading(progress: DownloadProgress) -> None:
        text = f"downloading {progress.filename}: {progress.describe()}"
        report_progress(loading if progress.finished else replace(loading, message=text))

    try:
        base = load_base(config, downloading, cancel.is_set)
    except Cancelled:  # the download resumes with the next run
        report_progress(TrainProgress("cancelled", 0, config.steps, "cancelled"))
        result = _result(None, True, RunState(), Path(config.work_dir))
        return replace(result, started=False, saved=False)
    model = base.model.to(device)
    trainable = prepare_for_training(
        model, parts, checkpointing=checkpointing, backend=config.deform_attn_backend
    )
    if not trainable:
        raise ValueError(f"nothing to train: parts {parts} hold no parameters")
    params = dict(model.named_parameters())
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.lr, config.backbone_multiplier, config.weight_decay)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    criterion = SetCriterion(num_points=config.num_points)
    batches = TrainBatches(train_set, batch_size, AugmentConfig(canvas=canvas), config.seed)
    data_hashes = [{"sample": s.key, "sha256": s.sha256()} for s in samples]
    identity = {
        "base": base.base_id,
        "parts": list(parts),
        "data": [h["sha256"] for h in data_hashes],
        "validation": [s.key for s in val_set],
        "batch_size": batch_size,
        "canvas": canvas,
        "seed": config.seed,
        # the schedule: a resumed run is the run it continues, recorded once in the output
        "steps": config.steps,
        "warmup": config.warmup,
        "lr": config.lr,
        "eval_every": config.evaluation_period,
        "select_metric": config.select_metric,
    }
    work_dir = Path(config.work_dir)
    run = RunState()
    if config.restart:  # asked for: the unfinished run is dropped once this one starts
        (work_dir / STATE_NAME).unlink(missing_ok=True)
    if config.resume:
        run, weights, optimizer_state, scaler_state = load_state(work_dir, identity)
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
        optimizer.load_state_dict(optimizer_state)
        scaler.load_state_dict(scaler_state)
    # float32: a half precision would convert the weights being trained in place
    predictor = FocusPredictor(model, base.task, device=device, precision="float32")
    set_train_mode(model)

    def evaluate(step: int) -> dict[str, float] | None:
        if not val_set:
            return None
        report_progress(TrainProgress("eval", step, config.steps, f"validating at step {step}…"))
        try:
            with watch_model(model, control):
                metrics = score_samples(predictor, val_set, check=control.check)  # eval mode
        finally:
            set_train_mode(model)
        run.history.append({"step": step, "kind": "eval", **metrics})
        value = metrics.get(config.select_metric, float("nan"))
        best_value = (run.best_metrics or {}).get(config.select_metric)
        if run.best_step is None or better(config.select_metric, value, best_value):
            run.best_step, run.best_metrics = step, metrics
            run.best_weights = {n: params[n].detach().cpu().clone() for n in trainable}
        report_progress(
            TrainProgress("eval", step, config.steps, _describe(step, metrics), metrics=metrics)
        )
        return metrics

    saved = [(run.step, len(run.history)) if config.resume else None]

    def checkpoint_state() -> None:
        if saved[0] == (run.step, len(run.history)):
            return  # a cancel right after a save (or a resume) has nothing new to keep
        if run.step == 0 and not run.history:
            return  # cancelled before the first step or evaluation ended: nothing to skip
        save_state(
            work_dir,
            run=run,
            trainable={n: params[n] for n in trainable},
            optimizer=optimizer.state_dict(),
            scaler=scaler.state_dict(),
            identity=identity,
        )
        write_report(work_dir, run.history, f"Fine-tuning {base.base_id}")
        saved[0] = (run.step, len(run.history))

    def evaluation_due(step: int) -> bool:
        due = step == 0 or step % config.evaluation_period == 0 or step == config.steps
        return due and not any(r["kind"] == "eval" and r["step"] == step for r in run.history)

    try:
        if evaluation_due(run.step):  # the baseline, or one a cancel cut short
            evaluate(run.step)
            if run.step:
                checkpoint_state()
        started, first_step = time.perf_counter(), run.step
        for step in range(run.step, config.steps):
            control.check()
            factor = lr_factor(step, config.steps, config.warmup, OFFICIAL_POLY_POWER)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            torch.manual_seed(config.seed * 1_000_003 + step)
            images, targets = batches(step, device)
            with watch_step(model, control) as watch:
                with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                    predictions = training_forward(model, images)
                losses = criterion(predictions, targets)
                loss = total_loss(losses)
                loss_value = loss.item()  # the step's one device sync
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(
                        f"the loss is {loss_value} at step {step}: {DIVERGED_ADVICE}"
                    )
                optimizer.zero_grad(set_to_none=True)
                watch.backward_begins()
                scaler.scale(loss).backward()
            control.check()  # the last chance: the update below always runs to its end
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([params[n] for n in trainable], config.clip_norm)
            scaler.step(optimizer)
            scaler.update()
            run.step = step + 1
            elapsed = time.perf_counter() - started
            rate = (run.step - first_step) / elapsed if elapsed > 0 else None
            run.history.append({"step": run.step, "kind": "train", "loss": loss_value,
                                "lr": config.lr * factor})  # fmt: skip
            report_progress(
                TrainProgress(
                    "train", run.step, config.steps, f"step {run.step}/{config.steps}",
                    loss=loss_value, steps_per_second=rate,
                    eta_seconds=(config.steps - run.step) / rate if rate else None,
                )
            )  # fmt: skip
            if evaluation_due(run.step):
                control.check()  # a cancel during the report: the evaluation waits
                evaluate(run.step)
                checkpoint_state()
        control.check()  # cancelled in the last evaluation: no weights the user never saw
    except Cancelled:
        checkpoint_state()
        report_progress(TrainProgress("cancelled", run.step, config.steps, "cancelled"))
        # saved: by this run, or by the run it resumes (not an older run's state in the
        # work folder, which an overwrite leaves)
        return replace(_result(None, True, run, work_dir), saved=saved[0] is not None)

    if run.best_weights is not None:
        with torch.no_grad():
            for name, value in run.best_weights.items():
                params[name].copy_(value)
    metadata = {
        "base_checkpoint": base.base_id,
        "training_data": json.dumps(data_hashes),
        "training_config": config.to_json(),
        "training_preset": json.dumps({"name": preset.name, "parts": list(parts),
                                       "batch_size": batch_size, "canvas": canvas, "amp": amp}),
        "training_steps": str(run.step),
        "best_step": "" if run.best_step is None else str(run.best_step),
        "validation": json.dumps(_baseline_and_best(run)),
    }  # fmt: skip
    output = _save_output(
        config, model.state_dict(), architecture=model.architecture.to_dict(),
        task=base.task, dtype=DTYPES[config.save_dtype], source=base.base_id,
        extra_metadata=metadata,
    )  # fmt: skip
    # a finished run cannot be resumed (its --out exists): its optimizer state only costs
    # disk (several times the checkpoint); the log and the report stay
    (work_dir / STATE_NAME).unlink(missing_ok=True)
    report_progress(TrainProgress("done", run.step, config.steps, f"wrote {output}"))
    return _result(output, False, run, work_dir, problems)


def _save_output(config: TrainConfig, state: dict[str, torch.Tensor], **how: Any) -> Path:
    """Save the trained weights at ``config.out``; a file that appeared there during the
    run (another run, the user) is kept unless ``overwrite``, and the weights go to the
    first free ``<name>-N.safetensors`` beside it (hours of training are not dropped)."""
    out = config.out
    for n in range(1, 1000):
        try:
            return save_inference_checkpoint(state, out, replace=config.overwrite, **how)
        except FileExistsError:
            out = config.out.with_name(f"{config.out.stem}-{n}{config.out.suffix}")
    raise WriteError(config.out, f"{config.out} and {out} exist; choose another output")


def _baseline_and_best(run: RunState) -> dict:
    evals = [r for r in run.history if r.get("kind") == "eval"]
    return {
        "baseline": evals[0] if evals and evals[0]["step"] == 0 else None,
        "best": None if run.best_step is None else {"step": run.best_step, **run.best_metrics},
        "evaluations": evals,
    }


def _result(
    output: Path | None,
    cancelled: bool,
    run: RunState,
    work_dir: Path,
    problems: Sequence[str] = (),
) -> TrainResult:
    evals = [r for r in run.history if r.get("kind") == "eval"]
    baseline = {k: v for k, v in evals[0].items() if k not in ("step", "kind")} if evals else None
    return TrainResult(
        output=output,
        cancelled=cancelled,
        step=run.step,
        best_step=run.best_step,
        best_metrics=run.best_metrics,
        baseline_metrics=baseline if evals and evals[0]["step"] == 0 else None,
        report=work_dir / REPORT_NAME,
        work_dir=work_dir,
        history=list(run.history),
        problems=tuple(problems),
    )


def _describe(step: int, metrics: dict[str, float]) -> str:
    parts = [f"{k} {v:.3f}" for k, v in metrics.items() if not math.isnan(v)]
    return f"step {step}: " + ", ".join(parts)
