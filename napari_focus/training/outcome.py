"""What a fine-tuning run reports while it runs, and what it returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .state import RunState
from .validate import REPORT_NAME


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


def train_result(
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
