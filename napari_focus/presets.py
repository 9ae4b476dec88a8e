"""Task, architecture and input presets, read from `resources/presets.json`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from ._paths import bundled_dir

TASKS: tuple[str, ...] = ("sod", "cod", "sd", "dbd", "fd")
SIZES: tuple[str, ...] = ("large", "giant")


@cache
def _presets() -> dict[str, Any]:
    with open(bundled_dir("resources") / "presets.json", encoding="utf-8") as f:
        return json.load(f)


def architecture_preset(size: str) -> dict[str, Any]:
    """The architecture mapping of an official model size (``"large"`` or ``"giant"``)."""
    archs = _presets()["architectures"]
    if size not in archs:
        raise ValueError(f"unknown model size {size!r}; expected one of {sorted(archs)}")
    return json.loads(json.dumps(archs[size]))  # deep copy


@dataclass(frozen=True)
class InputPreset:
    short_side: int
    max_long_side: int
    size_divisibility: int
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    tta_short_sides: tuple[int, ...]
    tta_max_long_side: int
    tta_flip: bool


def input_preset() -> InputPreset:
    raw = _presets()["input"]
    return InputPreset(
        short_side=raw["short_side"],
        max_long_side=raw["max_long_side"],
        size_divisibility=raw["size_divisibility"],
        pixel_mean=tuple(raw["pixel_mean"]),
        pixel_std=tuple(raw["pixel_std"]),
        tta_short_sides=tuple(raw["tta_short_sides"]),
        tta_max_long_side=raw["tta_max_long_side"],
        tta_flip=raw["tta_flip"],
    )


def check_task(task: str) -> str:
    """Normalise and validate a task name (``"SOD"`` -> ``"sod"``)."""
    name = str(task).lower()
    if name not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return name


def check_size(size: str) -> str:
    name = str(size).lower()
    if name not in SIZES:
        raise ValueError(f"unknown model size {size!r}; expected one of {', '.join(SIZES)}")
    return name


def task_info(task: str) -> dict[str, str]:
    """Plain-language name, description and default export layout of a task."""
    return dict(_presets()["tasks"][check_task(task)])


def hub_location(task: str, size: str) -> tuple[str, str]:
    """(repo_id, filename) of the official checkpoint on the Hugging Face hub."""
    hub = _presets()["hub"]
    fields = {"task": check_task(task), "size": check_size(size)}
    return hub["repo_id"].format(**fields), hub["filename"].format(**fields)


def official_weights_id(task: str, size: str) -> str:
    """``hf://<repo>/<file>``: how records name the official weights of a task and size."""
    repo, filename = hub_location(task, size)
    return f"hf://{repo}/{filename}"
