"""Base weights, the model in training mode, and the official optimizer parameter groups."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..checkpoint_fit import load_model
from ..checkpoint_hub import official_checkpoint
from ..checkpoints import metadata_architecture, read_checkpoint
from ..hub_download import ProgressCallback
from ..model import FocusModel, build_model, resolve_architecture
from ..presets import TASKS, check_size, official_weights_id
from .config import TrainConfig
from .presets import part_of

_OFFICIAL_NAME = re.compile(r"^(?:geshang/)?focus_(large|giant)_(sod|cod|sd|dbd|fd)$")
NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)


@dataclass
class BaseModel:
    model: FocusModel
    task: str | None
    base_id: str


def load_base(
    config: TrainConfig,
    download_progress: ProgressCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> BaseModel:
    """The model to fine-tune, on the CPU, float32, with its id (``hf://...``, ``file:...``
    or ``random-init``). A download of official weights reports to ``download_progress``
    and stops once ``cancelled()`` is true (see :func:`official_checkpoint`)."""
    weights = config.weights
    if weights is None:
        if config.architecture is None:
            raise ValueError("without base weights, give the architecture to initialise")
        torch.manual_seed(config.seed)
        model = build_model(resolve_architecture(config.architecture))
        return BaseModel(model, config.task, f"random-init:seed={config.seed}")
    path = Path(weights)
    if path.is_file():
        state, metadata = read_checkpoint(path)
        architecture = config.architecture or metadata_architecture(metadata, str(path))
        task = config.task or metadata.get("task") or None
        base_id = f"file:{path.name}:sha256={_file_sha256(path)}"
    else:
        task, size = _official(weights, config.size)
        path = official_checkpoint(task, size, progress=download_progress, cancelled=cancelled)
        state, _ = read_checkpoint(path)
        architecture = size
        base_id = official_weights_id(task, size)
        task = config.task or task
    # the checks and messages of inference loading: shapes, other size, kinds, finiteness
    return BaseModel(load_model(state, architecture, str(path)), task, base_id)


def _official(name: str, size: str) -> tuple[str, str]:
    lowered = name.strip().lower()
    if lowered in TASKS:
        return lowered, check_size(size)
    match = _OFFICIAL_NAME.match(lowered)
    if match is None and _looks_like_a_path(name):
        raise ValueError(
            f"--weights {name}: no such file; give the path of a checkpoint (.pth or "
            ".safetensors), a task such as 'cod' or an official name such as 'focus_large_cod'"
        )
    if match is None:
        raise ValueError(
            f"--weights {name!r} is neither a checkpoint file nor an official model (a task "
            f"such as 'cod', or a name such as 'focus_large_cod')"
        )
    return match.group(2), match.group(1)


def check_base_weights(weights: str, size: str) -> None:
    """Raise ValueError, in the command line's words, when ``weights`` is neither a
    readable checkpoint file nor an official base: said before the samples are read."""
    from ..cli_common import weights_file_problem

    path = Path(weights)
    if path.is_dir() or path.is_file():
        problem = weights_file_problem(weights)
        if problem:
            raise ValueError(f"--weights {weights}: {problem}")
        return
    _official(weights, size)


def official_base(weights: str) -> tuple[str, str] | None:
    """``(task, how it is known)`` when ``weights`` names an official base (a task or
    ``focus_large_cod``) rather than a file; None otherwise."""
    if Path(weights).is_file():
        return None
    lowered = weights.strip().lower()
    if lowered in TASKS:
        return lowered, "a task name"
    match = _OFFICIAL_NAME.match(lowered)
    return (match.group(2), "an official name") if match else None


def _looks_like_a_path(name: str) -> bool:
    return "/" in name or "\\" in name or Path(name).suffix.lower() in (
        ".pth", ".pt", ".safetensors", ".bin", ".ckpt",
    )  # fmt: skip


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare_for_training(
    model: FocusModel, parts: Iterable[str], *, checkpointing: bool, backend: str
) -> list[str]:
    """Freeze what ``parts`` leaves out, switch checkpointing and the attention backend;
    returns the names of the trainable parameters."""
    parts = set(parts)
    trainable = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(part_of(name) in parts)
        if parameter.requires_grad:
            trainable.append(name)
    for interaction in model.backbone.interactions:
        interaction.checkpoint_blocks = checkpointing
    model.set_deform_attn_backend(backend)
    set_train_mode(model)
    return trainable


def set_train_mode(model: FocusModel) -> None:
    """Training mode with the BatchNorm statistics kept as loaded: fine-tuning batches
    (1-8 images on one device) are too small for the official SyncBatchNorm statistics."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def parameter_groups(
    model: FocusModel, lr: float, backbone_multiplier: float, weight_decay: float
) -> list[dict]:
    """The official grouping: backbone parameters at ``lr * backbone_multiplier``; no
    weight decay on normalisation layers and embeddings."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for parameter in module.parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            group_lr = lr * backbone_multiplier if module_name.startswith("backbone") else lr
            decay = 0.0 if isinstance(module, (*NORM_TYPES, nn.Embedding)) else weight_decay
            groups.setdefault((group_lr, decay), []).append(parameter)
    return [
        {"params": params, "lr": group_lr, "base_lr": group_lr, "weight_decay": decay}
        for (group_lr, decay), params in groups.items()
    ]


def lr_factor(step: int, steps: int, warmup: int, power: float) -> float:
    """``(1 - step/steps)^power``, detectron2's WarmupPolyLR, after a linear warm-up from
    0.001 over ``warmup`` steps (detectron2's default; the official FOCUS configs have
    none, runs from trained weights here do: see the README)."""
    factor = (1 - step / steps) ** power if step < steps else 0.0
    if step < warmup:
        alpha = step / warmup
        factor *= 0.001 * (1 - alpha) + alpha
    return factor
