"""Fine-tuning, from a config to its output: the settings and outputs checked, the
samples and base weights read, then the run (:class:`.fine_tuning.FineTuning`: batches,
loss, AdamW step, validation, best step, resume, output).

Determinism: every step draws its samples, augmentation and loss points from generators
seeded with ``(seed, step)``, so a run resumed at step k continues exactly as the
uninterrupted run would have (up to the nondeterminism of the device's kernels).

Cancelling: the ``cancel`` event stops the run within one model stage (see
:mod:`.interrupt`), in a training step or an evaluation; no step or evaluation starts
after it, and no output is written. The resume state saved then is that of the last
completed step; an evaluation a cancel cut short runs first when the run resumes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..atomic import check_writable_file, check_writable_folder
from ..hub_download import DownloadProgress
from ..predictor import resolve_device
from ..quality import require_metrics
from ..run_control import Cancelled, RunControl
from .config import TrainConfig
from .data import collect_samples, same_source_groups, split_samples
from .fine_tuning import FineTuning, Settings
from .outcome import TrainProgress, TrainResult, train_result
from .presets import resolve_preset
from .setup import load_base
from .state import RunState, UnfinishedRunError, has_saved_state

__all__ = ["TrainProgress", "TrainResult", "train"]


def train(
    config: TrainConfig,
    *,
    progress: Callable[[TrainProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> TrainResult:
    """Fine-tune FOCUS on exported samples; see :class:`TrainConfig` and the README."""
    report = progress or (lambda _p: None)
    cancel = cancel or threading.Event()
    settings = _settings(config)
    _check_outputs(config)

    report(TrainProgress("setup", 0, config.steps, "reading the training data…"))
    samples, problems = collect_samples(config.root, config.layouts)
    train_set, val_set = split_samples(
        samples, val_fraction=config.val_fraction, val_names=config.val_names, seed=config.seed,
        groups=same_source_groups(config.root, samples),
    )  # fmt: skip
    loading = TrainProgress("setup", 0, config.steps, "loading the base weights…")
    report(loading)

    def downloading(progress: DownloadProgress) -> None:
        text = f"downloading {progress.filename}: {progress.describe()}"
        report(loading if progress.finished else replace(loading, message=text))

    try:
        base = load_base(config, downloading, cancel.is_set)
    except Cancelled:  # the download resumes with the next run
        report(TrainProgress("cancelled", 0, config.steps, "cancelled"))
        result = train_result(None, True, RunState(), Path(config.work_dir))
        return replace(result, started=False, saved=False)
    fine_tuning = FineTuning(config, settings, base, samples, train_set, val_set, report)
    try:
        fine_tuning.run(RunControl(cancel))
    except Cancelled:
        return fine_tuning.cancelled()
    return fine_tuning.finish(problems)


def _settings(config: TrainConfig) -> Settings:
    device = resolve_device(config.device)
    preset = resolve_preset(config.preset, device)
    canvas = config.canvas or preset.canvas
    if canvas % 32:
        raise ValueError(f"the canvas must be a multiple of 32, got {canvas}")
    return Settings(
        device=device,
        preset=preset,
        parts=tuple(config.parts or preset.parts),
        batch_size=config.batch_size or preset.batch_size,
        canvas=canvas,
        amp=(preset.amp if config.amp is None else config.amp) and device.type == "cuda",
        checkpointing=preset.checkpointing if config.checkpointing is None
        else config.checkpointing,
    )  # fmt: skip


def _check_outputs(config: TrainConfig) -> None:
    """Refuse a run whose output or work folder would lose something, or take no files."""
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
