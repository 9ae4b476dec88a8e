"""What the Improve tab says when a training run fails, in the tab's words."""

from __future__ import annotations

# the settings a continued run shares with the cancelled one, in the Improve tab's words
SETTING_LABELS = {
    "base": "base weights (Model tab)", "parts": "hardware preset (trained parts)",
    "batch_size": "batch size (hardware preset)", "canvas": "crop", "seed": "seed",
    "steps": "steps", "warmup": "warm-up steps", "lr": "learning rate",
    "eval_every": "validation period", "select_metric": "keep best",
    "validation": "held-out images", "data": "exported samples",
}  # fmt: skip


def training_error_text(error: BaseException, out_name: str, output_label: str) -> str:
    """``error`` of the run into ``out_name``; ``output_label``: the output field's."""
    from ..training.state import ResumeMismatchError, UnreadableStateError

    if isinstance(error, ResumeMismatchError):
        skip = ("warmup", "eval_every") if "steps" in error.differing else ()
        return (
            f"the cancelled run of {out_name} was on other training data or settings "
            f"(then -> now: {error.describe(SETTING_LABELS, skip)}); set them back to "
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


def restart_question(error: BaseException, text: str, out_name: str) -> str | None:
    """The question that offers to discard the cancelled run ``error`` could not
    continue and to start a new one into the same file; None for other errors."""
    from ..training.state import ResumeMismatchError, UnreadableStateError

    if not isinstance(error, ResumeMismatchError | UnreadableStateError):
        return None
    return (
        f"{text[0].upper()}{text[1:]}.\n\nDiscard the cancelled run and start a new run "
        f"into {out_name}?"
    )
