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

from ..atomic import WriteError, atomic_write

STATE_NAME = "resume.pt"
STATE_FORMAT = "napari-focus/training-state-v1"


class UnfinishedRunError(FileExistsError):
    """A new run would replace the saved state of an unfinished (cancelled, interrupted)
    run in the same work folder; resume that one or choose another output."""


class UnreadableStateError(ValueError):
    """The saved state of a run cannot be read (damaged, or not napari-focus's): it
    cannot be continued; a run started afresh (``restart``) replaces it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"{path} is not a readable napari-focus training state ({reason}); start "
            "afresh (restart), which replaces it, or use another output/work folder"
        )
        self.path, self.reason = Path(path), reason

    def __reduce__(self) -> tuple:
        return type(self), (self.path, self.reason)


class ResumeMismatchError(ValueError):
    """The saved state belongs to another run; ``differing`` names what differs (data,
    base, parts, validation, batch_size, canvas, seed, and the schedule: steps, warmup,
    lr, eval_every, select_metric) and ``changes`` says it as ``(name, saved, now)``
    in readable words, for the interface to name its own flags or fields."""

    def __init__(
        self,
        message: str,
        differing: tuple[str, ...] = (),
        changes: tuple[tuple[str, str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.differing = tuple(differing)
        self.changes = tuple(tuple(change) for change in changes)

    def __reduce__(self) -> tuple:  # crosses the training process's queue whole
        return type(self), (str(self), self.differing, self.changes)

    def describe(self, names: dict[str, str], skip: tuple[str, ...] = ()) -> str:
        """``"--crop 96 -> 128, --seed 0 -> 1"`` with ``names`` for the settings."""
        return ", ".join(
            f"{names.get(name, name)} {saved} -> {now}"
            for name, saved, now in self.changes
            if name not in skip
        )


def _readable(name: str, value: Any) -> str:
    """A saved or current identity value as a person reads it."""
    if name == "data":
        return str(len(value))
    if name == "validation":
        shown = ", ".join(value[:3]) + (f" and {len(value) - 3} more" if len(value) > 3 else "")
        return f"{len(value)} ({shown})" if value else "none"
    if name == "parts":
        return "+".join(value)
    if name == "base" and isinstance(value, str) and ":sha256=" in value:
        file, digest = value.removeprefix("file:").split(":sha256=", 1)
        return f"{file} (sha256 {digest[:12]})"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _changes(saved: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, str, str]]:
    """What differs between two run identities; a setting the saved state does not
    record (written by an older version) is not compared."""
    changes = []
    # what the samples and their split became last: they follow from the settings too
    for name in sorted(current, key=lambda name: name in ("data", "validation")):
        if name not in saved or saved[name] == current[name]:
            continue
        old, new = _readable(name, saved[name]), _readable(name, current[name])
        if name == "validation" and len(saved[name]) == len(current[name]):
            gone = [key for key in saved[name] if key not in current[name]]
            came = [key for key in current[name] if key not in saved[name]]
            old, new = _readable(name, gone), _readable(name, came)
        elif old == new and name == "data":  # as many samples, other files
            new += " (other files)"
        elif old == new:
            old, new = str(saved[name]), str(current[name])
        changes.append((name, old, new))
    return changes


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
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # said as a failed write: the run stops, its last state kept
        raise WriteError(folder, error) from error
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
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file fails in many ways inside torch.load
        # torch's own text may advise weights_only=False, which would run the file's code
        raise UnreadableStateError(path, "damaged or cut short") from error
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise UnreadableStateError(path, "not written by napari-focus training")
    saved = json.loads(payload["identity"])
    changes = _changes(saved, identity)
    if changes:
        differing = tuple(name for name, _, _ in changes)
        raise ResumeMismatchError(
            f"{path} belongs to another run (differs in: "
            + ", ".join(f"{name} {old} -> {new}" for name, old, new in changes)
            + "); use the same settings to continue it, or another output/work folder",
            differing,
            tuple(changes),
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
