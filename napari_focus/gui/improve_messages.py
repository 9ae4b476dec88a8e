"""What the Improve tab says when a training run fails, in the tab's words."""

from __future__ import annotations

from typing import Any

# the settings a continued run shares with the cancelled one, in the Improve tab's words
SETTING_LABELS = {
    "base": "base weights (Model tab)", "parts": "hardware preset (trained parts)",
    "batch_size": "batch size (hardware preset)", "canvas": "crop", "seed": "seed",
    "steps": "steps", "warmup": "warm-up steps", "lr": "learning rate",
    "eval_every": "validation period", "select_metric": "keep best",
    "validation": "held-out images", "data": "exported samples",
}  # fmt: skip


# the validation figures, in the words of the tab's "keep best" choices
METRIC_LABELS = {
    "mask_iou": "proposal IoU", "iou": "IoU of probability > 0.5", "smeasure": "S-measure",
    "emeasure_mean": "E-measure", "wfmeasure": "weighted F", "mae": "MAE", "ber": "BER",
    "edit_effort": "edit effort",
}  # fmt: skip


def validation_text(step: int, metrics: dict[str, float], first: str = "mask_iou") -> str:
    """One evaluation's figures, ``first`` (the one "keep best" chooses by) first, where a
    narrow line still shows it: ``step 4: S-measure 0.874, proposal IoU 0.912, ...``."""
    names = sorted(metrics, key=lambda name: name != first)
    parts = [
        f"{METRIC_LABELS.get(name, name)} {metrics[name]:.3f}"
        for name in names
        if metrics[name] == metrics[name]  # not NaN
    ]
    return f"step {step}: " + ", ".join(parts)


def training_error_text(error: BaseException, out_name: str, output_label: str) -> str:
    """``error`` of the run into ``out_name``; ``output_label``: the output field's."""
    from ..training.data import NoTrainingSamples
    from ..training.state import ResumeMismatchError, UnreadableStateError

    if isinstance(error, NoTrainingSamples):
        return error.text("the Export tab", "choose that layout, and its task, in the Export tab")
    if isinstance(error, ResumeMismatchError):
        return (
            f"the cancelled run of {out_name} was on other training data or settings "
            f"(then -> now: {_what_changed(error)}); set them back to "
            f"continue it, or choose another file under '{output_label}' to start a new "
            "run (the cancelled one is kept)"
        )
    if isinstance(error, UnreadableStateError):
        return (
            f"the cancelled run of {out_name} cannot be continued ({error.reason}); choose "
            f"another file under '{output_label}' to start a new run"
        )
    from ..checkpoint_identity import HubFileMismatch
    from ..checkpoints import CheckpointNotAvailable
    from .job import gui_message

    if isinstance(error, CheckpointNotAvailable | HubFileMismatch):
        return gui_message(error)  # official weights not at hand: the Model tab's words
    return str(error)


def restart_question(error: BaseException, out_name: str, output_label: str) -> str | None:
    """The question that offers to discard the cancelled run ``error`` could not
    continue and to start a new one into the same file; None for other errors."""
    from ..training.state import ResumeMismatchError, UnreadableStateError

    if isinstance(error, ResumeMismatchError):
        why = f"was on other training data or settings (then -> now: {_what_changed(error)})"
    elif isinstance(error, UnreadableStateError):
        why = f"cannot be read ({error.reason})"
    else:
        return None
    return (
        f"The cancelled run of {out_name} {why}, so Improve cannot continue it.\n\n"
        f"Discard it and start a new run into {out_name}? (No keeps it: set the data and "
        f"settings back to continue it, or choose another file under '{output_label}'.)"
    )


def _what_changed(error: Any) -> str:
    """The settings of a ``ResumeMismatchError`` that differ, then -> now."""
    skip = ("warmup", "eval_every") if "steps" in error.differing else ()  # follow steps
    return error.describe(SETTING_LABELS, skip)
