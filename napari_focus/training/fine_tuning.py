"""One fine-tuning run: the model, its optimizer and the run's state, from the base
weights (or a resumed state) through the steps and evaluations to the output file."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..atomic import WriteError
from ..checkpoints import save_inference_checkpoint
from ..predictor import FocusPredictor
from ..run_control import RunControl, watch_model
from ..runtime import DTYPES
from .augment import AugmentConfig
from .batches import TrainBatches
from .config import OFFICIAL_POLY_POWER, TrainConfig
from .criterion import SetCriterion, total_loss
from .forward import training_forward
from .interrupt import watch_step
from .matcher import DIVERGED_ADVICE, TrainingDiverged
from .outcome import TrainProgress, TrainResult, train_result
from .setup import lr_factor, parameter_groups, prepare_for_training, set_train_mode
from .state import STATE_NAME, RunState, load_state, save_state
from .validate import better, score_samples, write_report


@dataclass(frozen=True)
class Settings:
    """What the preset and the device make of a config."""

    device: torch.device
    preset: Any
    parts: tuple[str, ...]
    batch_size: int
    canvas: int
    amp: bool
    checkpointing: bool


class FineTuning:
    """One run: the model, its optimizer and the run's state, from the base weights (or a
    resumed state) to the output."""

    def __init__(
        self,
        config: TrainConfig,
        settings: Settings,
        base: Any,
        samples: Sequence[Any],
        train_set: Sequence[Any],
        val_set: Sequence[Any],
        report: Callable[[TrainProgress], None],
    ) -> None:
        self.config, self.settings, self.base, self.report = config, settings, base, report
        self.val_set = val_set
        self.model = base.model.to(settings.device)
        self.trainable = prepare_for_training(
            self.model, settings.parts, checkpointing=settings.checkpointing,
            backend=config.deform_attn_backend,
        )  # fmt: skip
        if not self.trainable:
            raise ValueError(f"nothing to train: parts {settings.parts} hold no parameters")
        self.params = dict(self.model.named_parameters())
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, config.lr, config.backbone_multiplier,
                             config.weight_decay)
        )  # fmt: skip
        self.scaler = torch.amp.GradScaler("cuda", enabled=settings.amp)
        self.criterion = SetCriterion(num_points=config.num_points)
        self.batches = TrainBatches(
            train_set, settings.batch_size, AugmentConfig(canvas=settings.canvas), config.seed
        )
        self.data_hashes = [{"sample": s.key, "sha256": s.sha256()} for s in samples]
        self.identity = {
            "base": base.base_id,
            "parts": list(settings.parts),
            "data": [h["sha256"] for h in self.data_hashes],
            "validation": [s.key for s in val_set],
            "batch_size": settings.batch_size,
            "canvas": settings.canvas,
            "seed": config.seed,
            # the schedule: a resumed run is the run it continues, recorded once in the output
            "steps": config.steps,
            "warmup": config.warmup,
            "lr": config.lr,
            "eval_every": config.evaluation_period,
            "select_metric": config.select_metric,
        }
        self.work_dir = Path(config.work_dir)
        self.run_state = RunState()
        #: (step, history length) of the last resume state written or read; None: none
        self.saved_at: tuple[int, int] | None = None
        if config.restart:  # asked for: the unfinished run is dropped once this one starts
            (self.work_dir / STATE_NAME).unlink(missing_ok=True)
        if config.resume:
            self._resume()
        # float32: a half precision would convert the weights being trained in place
        self.predictor = FocusPredictor(
            self.model, base.task, device=settings.device, precision="float32"
        )
        set_train_mode(self.model)

    def _resume(self) -> None:
        run, weights, optimizer_state, scaler_state = load_state(self.work_dir, self.identity)
        with torch.no_grad():
            for name, value in weights.items():
                self.params[name].copy_(value)
        self.optimizer.load_state_dict(optimizer_state)
        self.scaler.load_state_dict(scaler_state)
        self.run_state = run
        self.saved_at = (run.step, len(run.history))

    def run(self, control: RunControl) -> None:
        """The steps from the run's step to the last, evaluating when due; raises
        :class:`Cancelled` (the state is then that of the last completed step)."""
        run, steps = self.run_state, self.config.steps
        if self._evaluation_due(run.step):  # the baseline, or one a cancel cut short
            self._evaluate(run.step, control)
            if run.step:
                self._save_state()
        started, first_step = time.perf_counter(), run.step
        for step in range(run.step, steps):
            loss, lr = self._step(step, control)
            run.step = step + 1
            elapsed = time.perf_counter() - started
            rate = (run.step - first_step) / elapsed if elapsed > 0 else None
            run.history.append({"step": run.step, "kind": "train", "loss": loss, "lr": lr})
            self.report(
                TrainProgress(
                    "train", run.step, steps, f"step {run.step}/{steps}", loss=loss,
                    steps_per_second=rate, eta_seconds=(steps - run.step) / rate if rate else None,
                )
            )  # fmt: skip
            if self._evaluation_due(run.step):
                control.check()  # a cancel during the report: the evaluation waits
                self._evaluate(run.step, control)
                self._save_state()
        control.check()  # cancelled in the last evaluation: no weights the user never saw

    def _step(self, step: int, control: RunControl) -> tuple[float, float]:
        """One optimizer step; its loss and learning rate."""
        control.check()
        factor = lr_factor(step, self.config.steps, self.config.warmup, OFFICIAL_POLY_POWER)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        torch.manual_seed(self.config.seed * 1_000_003 + step)
        images, targets = self.batches(step, self.settings.device)
        with watch_step(self.model, control) as watch:
            with torch.autocast(
                self.settings.device.type, dtype=torch.float16, enabled=self.settings.amp
            ):
                predictions = training_forward(self.model, images)
            loss = total_loss(self.criterion(predictions, targets))
            loss_value = loss.item()  # the step's one device sync
            if not math.isfinite(loss_value):
                raise TrainingDiverged(
                    f"the loss is {loss_value} at step {step}: {DIVERGED_ADVICE}"
                )
            self.optimizer.zero_grad(set_to_none=True)
            watch.backward_begins()
            self.scaler.scale(loss).backward()
        control.check()  # the last chance: the update below always runs to its end
        self.scaler.unscale_(self.optimizer)
        trained = [self.params[n] for n in self.trainable]
        torch.nn.utils.clip_grad_norm_(trained, self.config.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss_value, self.config.lr * factor

    def _evaluation_due(self, step: int) -> bool:
        config = self.config
        due = step == 0 or step % config.evaluation_period == 0 or step == config.steps
        history = self.run_state.history
        return due and not any(r["kind"] == "eval" and r["step"] == step for r in history)

    def _evaluate(self, step: int, control: RunControl) -> None:
        if not self.val_set:
            return
        steps, metric, run = self.config.steps, self.config.select_metric, self.run_state
        self.report(TrainProgress("eval", step, steps, f"validating at step {step}…"))
        try:
            with watch_model(self.model, control):
                metrics = score_samples(self.predictor, self.val_set, check=control.check)
        finally:
            set_train_mode(self.model)
        run.history.append({"step": step, "kind": "eval", **metrics})
        value = metrics.get(metric, float("nan"))
        best_value = (run.best_metrics or {}).get(metric)
        if run.best_step is None or better(metric, value, best_value):
            run.best_step, run.best_metrics = step, metrics
            run.best_weights = {n: self.params[n].detach().cpu().clone() for n in self.trainable}
        self.report(TrainProgress("eval", step, steps, _describe(step, metrics), metrics=metrics))

    def _save_state(self) -> None:
        run = self.run_state
        if self.saved_at == (run.step, len(run.history)):
            return  # a cancel right after a save (or a resume) has nothing new to keep
        if run.step == 0 and not run.history:
            return  # cancelled before the first step or evaluation ended: nothing to skip
        save_state(
            self.work_dir,
            run=run,
            trainable={n: self.params[n] for n in self.trainable},
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict(),
            identity=self.identity,
        )
        write_report(self.work_dir, run.history, f"Fine-tuning {self.base.base_id}")
        self.saved_at = (run.step, len(run.history))

    def cancelled(self) -> TrainResult:
        """Keep what the cancelled run did (to resume it) and say so."""
        self._save_state()
        run = self.run_state
        self.report(TrainProgress("cancelled", run.step, self.config.steps, "cancelled"))
        # saved: by this run, or by the run it resumes (not an older run's state in the
        # work folder, which an overwrite leaves)
        result = train_result(None, True, run, self.work_dir)
        return replace(result, saved=self.saved_at is not None)

    def finish(self, problems: Sequence[str]) -> TrainResult:
        """Write the best evaluated weights (the last ones without validation)."""
        run, settings, config = self.run_state, self.settings, self.config
        if run.best_weights is not None:
            with torch.no_grad():
                for name, value in run.best_weights.items():
                    self.params[name].copy_(value)
        preset = {"name": settings.preset.name, "parts": list(settings.parts),
                  "batch_size": settings.batch_size, "canvas": settings.canvas,
                  "amp": settings.amp}  # fmt: skip
        metadata = {
            "base_checkpoint": self.base.base_id,
            "training_data": json.dumps(self.data_hashes),
            "training_config": config.to_json(),
            "training_preset": json.dumps(preset),
            "training_steps": str(run.step),
            "best_step": "" if run.best_step is None else str(run.best_step),
            "validation": json.dumps(_baseline_and_best(run)),
        }
        output = _save_output(
            config, self.model.state_dict(), architecture=self.model.architecture.to_dict(),
            task=self.base.task, dtype=DTYPES[config.save_dtype], source=self.base.base_id,
            extra_metadata=metadata,
        )  # fmt: skip
        # a finished run cannot be resumed (its --out exists): its optimizer state only
        # costs disk (several times the checkpoint); the log and the report stay
        (self.work_dir / STATE_NAME).unlink(missing_ok=True)
        self.report(TrainProgress("done", run.step, config.steps, f"wrote {output}"))
        return train_result(output, False, run, self.work_dir, problems)


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


def _describe(step: int, metrics: dict[str, float]) -> str:
    parts = [f"{k} {v:.3f}" for k, v in metrics.items() if not math.isnan(v)]
    return f"step {step}: " + ", ".join(parts)
