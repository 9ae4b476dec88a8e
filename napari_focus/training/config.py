"""What a fine-tuning run is told: data, base weights, schedule, hardware, validation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Official FOCUS solver settings (configs/*/..._dinov2_*.yaml and focus/config.py).
OFFICIAL_LR = 1e-4
OFFICIAL_BACKBONE_MULTIPLIER = 0.1
OFFICIAL_WEIGHT_DECAY = 0.05
OFFICIAL_CLIP_NORM = 0.01
OFFICIAL_POLY_POWER = 0.9
OFFICIAL_NUM_POINTS = 12544
DEFAULT_STEPS = 300  # `train --steps` and the Improve tab alike


@dataclass
class TrainConfig:
    """Settings of :func:`napari_focus.training.train`.

    root, layouts: the dataset root the exports went to and the layouts to read.
    out: the ``.safetensors`` inference checkpoint to write.
    weights: the base: a task (``"cod"``, with ``size``), an official name
        (``"focus_large_cod"`` or ``"geshang/focus_large_cod"``), a checkpoint file, or
        None for random initialisation (then ``architecture`` is required).
    preset: ``"auto"`` or a name of :data:`~.presets.PRESETS`; ``batch_size``,
        ``canvas``, ``parts``, ``amp`` and ``checkpointing`` override it.
    lr, backbone_multiplier, weight_decay, clip_norm: the official AdamW settings
        (the backbone, adapter included, learns at ``lr * backbone_multiplier``).
    warmup_steps: linear warm-up (default ``min(100, steps // 10)``), then the official
        poly decay (power 0.9) to 0 at ``steps``.
    eval_every: validation period in steps (default ``steps // 5``, at least 1).
    val_fraction / val_names: held-out share of the samples, or the names to hold out.
    select_metric: the validation figure that picks the best step (``mask_iou``,
        the IoU of the proposal a person would correct, by default; ``smeasure``,
        ``edit_effort``, ... see :data:`~.validate.VALIDATION_METRICS`).
    work_dir: resume state and report (default ``<out stem>.training`` beside ``out``).
    resume: continue from the resume state in ``work_dir``; the data, base, preset
        choices, seed, validation and schedule (steps, warm-up, lr, evaluation period,
        select_metric) must be those of the saved run.
    restart: start afresh, the saved state of an unfinished run in ``work_dir`` being
        replaced by this run's (otherwise an error); ``out`` is still never replaced.
    overwrite: replace an existing ``out``, and start afresh over the saved state of an
        unfinished run in ``work_dir`` (otherwise either is an error).
    """

    root: Path
    layouts: tuple[str, ...]
    out: Path
    weights: str | None = None
    size: str = "large"
    task: str | None = None
    architecture: Mapping[str, Any] | None = None
    steps: int = DEFAULT_STEPS
    device: str = "auto"
    preset: str = "auto"
    batch_size: int | None = None
    canvas: int | None = None
    parts: tuple[str, ...] | None = None
    amp: bool | None = None
    checkpointing: bool | None = None
    lr: float = OFFICIAL_LR
    backbone_multiplier: float = OFFICIAL_BACKBONE_MULTIPLIER
    weight_decay: float = OFFICIAL_WEIGHT_DECAY
    clip_norm: float = OFFICIAL_CLIP_NORM
    warmup_steps: int | None = None
    num_points: int = OFFICIAL_NUM_POINTS
    eval_every: int | None = None
    val_fraction: float = 0.2
    val_names: tuple[str, ...] | None = None
    select_metric: str = "mask_iou"
    seed: int = 0
    save_dtype: str = "float16"
    work_dir: Path | None = None
    resume: bool = False
    restart: bool = False
    overwrite: bool = False
    deform_attn_backend: str = "torch"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root, self.out = Path(self.root), Path(self.out)
        self.layouts = tuple(self.layouts)
        if self.out.suffix != ".safetensors":
            raise ValueError(f"the output must be a .safetensors file, got {self.out.name}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        from .validate import VALIDATION_METRICS

        if self.select_metric not in VALIDATION_METRICS:
            raise ValueError(
                f"select_metric must be one of {', '.join(VALIDATION_METRICS)}, "
                f"got {self.select_metric!r}"
            )
        if self.resume and self.restart:
            raise ValueError("resume continues the saved run and restart discards it: not both")
        if self.work_dir is None:
            self.work_dir = self.out.parent / f"{self.out.stem}.training"
        self.work_dir = Path(self.work_dir)

    @property
    def warmup(self) -> int:
        return min(100, self.steps // 10) if self.warmup_steps is None else self.warmup_steps

    @property
    def evaluation_period(self) -> int:
        return max(1, self.steps // 5) if self.eval_every is None else max(1, self.eval_every)

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, default=str, sort_keys=True)
