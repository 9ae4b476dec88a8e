"""The resume state of a run: trainable weights, optimizer, scaler, step, best step, log.

Saved as ``resume.pt`` in the run's work folder (atomically) and read back with
``torch.load(..., weights_only=True)``: it holds tensors, numbers, strings and plain
containers only. Random streams need no saving: every step derives its own from the
seed and the step number (see :mod:`.loop`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write

STATE_NAME = "resume.pt"
STATE_FORMAT = "napari-focus/training-state-v1"


class UnfinishedRunError(FileExistsError):
    """A new run would replace the saved state of an unfinished (cancelled, interrupted)
    run in the same work folder; resume that one or choose another output."""


class ResumeMismatchError(ValueError):
    """The saved state belongs to another run; ``differing`` names what differs (data,
    base, parts, validation, batch_size, canvas, seed)."""

    def __init__(self, message: str, differing: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.differing = tuple(differing)

    def __reduce__(self) -> tuple:  # crosses the training process's queue whole
        return type(self), (str(self), self.differing)


def has_saved_state(folder: Path) -> bool:
    """Whether ``folder`` holds the resume state of an unfinished run."""
    return (Path(folder) / STATE_NAME).is_file()


@dataclass
class RunState:
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_step: int | None = None
    best_metrics: dict[str, float] | None = None
    best_weights: dict[str, torch.Tensor] | None = None


def save_state(
    folder: Path,
    *,
    run: RunState,
    trainable: dict[str, torch.Tensor],
    optimizer: dict,
    scaler: dict,
    identity: dict[str, Any],
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": STATE_FORMAT,
        "identity": json.dumps(identity, sort_keys=True),
        "step": run.step,
        "history": json.dumps(run.history),
        "best_step": -1 if run.best_step is None else run.best_step,
        "best_metrics": json.dumps(run.best_metrics),
        "best_weights": run.best_weights or {},
        "trainable": {k: v.detach().cpu() for k, v in trainable.items()},
        "optimizer": optimizer,
        "scaler": scaler,
    }

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:  # its writes raise the OSError of a full disk
            try:
                torch.save(payload, handle)
            except RuntimeError as error:  # torch's zip writer failing after that OSError
                cause = error.__context__
                while cause is not None and not isinstance(cause, OSError):
                    cause = cause.__context__
                if cause is None:
                    raise
                raise cause from error

    return atomic_write(folder / STATE_NAME, write)


def load_state(folder: Path, identity: dict[str, Any]) -> tuple[RunState, dict, dict, dict]:
    """``(run, trainable, optimizer, scaler)``; raises ValueError when the state belongs to
    a different run (other data, base weights or trained parts) or cannot be read."""
    path = folder / STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no resume state at {path}: start without resume")
    unusable = (
        f"{path} is not a readable napari-focus training state ({{}}); delete it, or use "
        "another output/work folder, and start without resume"
    )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file fails in many ways inside torch.load
        # torch's own text may advise weights_only=False, which would run the file's code
        raise ValueError(unusable.format(f"damaged: {type(error).__name__}")) from error
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise ValueError(unusable.format("not written by napari-focus training"))
    saved = json.loads(payload["identity"])
    differing = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
    if differing:
        raise ResumeMismatchError(
            f"{path} belongs to another run (differs in: {', '.join(differing)}); use another "
            "output/work folder or start without resume",
            tuple(differing),
        )
    best_step = payload["best_step"]
    run = RunState(
        step=int(payload["step"]),
        history=json.loads(payload["history"]),
        best_step=None if best_step < 0 else int(best_step),
        best_metrics=json.loads(payload["best_metrics"]),
        best_weights=payload["best_weights"] or None,
    )
    return run, payload["trainable"], payload["optimizer"], payload["scaler"]
