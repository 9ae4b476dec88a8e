"""Model section of the FOCUS widget: image, task, weights, device, precision; it keeps
the loaded predictor and frees the old one before another is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit

from ..checkpoint_identity import recorded_task
from ..devices import release_cached_memory
from ..presets import SIZES, TASKS, task_info
from ..runtime import PRECISIONS
from .job import ModelKey, SharedModel
from .layout import WrappingLabel, narrow_combo, narrow_line_edits
from .workers import WidgetLifetime, background


def available_devices() -> list[str]:
    devices = ["auto", "cpu"]
    devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def kernel_status_text() -> str:
    """One line on the deformable-attention kernels, without building anything."""
    try:
        from ..ops.doctor import kernel_status

        status = kernel_status()
    except Exception as error:  # the status line must never break the widget
        return f"unknown ({error})"
    parts = [
        f"{name.upper()} {info.get('status', '?')}"
        for name, info in status.get("kernels", {}).items()
    ]
    return ", ".join(parts) if parts else "none compiled (PyTorch reference)"


def checkpoint_task_note(task: str, path: Path) -> str | None:
    """The Model tab's words for a checkpoint trained for another task than ``task``."""
    found = recorded_task(path)
    if found is None or found[0] == task:
        return None
    other = found[0]
    chosen, held = task_info(task)["name"].lower(), task_info(other)["name"].lower()
    return (
        f"\u26a0 {path.name} holds {other.upper()} weights: its masks show {held}, "
        f"not {chosen}. Choose task {other.upper()} or another checkpoint."
    )


class ModelSection(Container):
    """Which image and which model: every choice that decides the proposal."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self._predictor: Any = None
        self._predictor_key: ModelKey | None = None
        self.shared_model = SharedModel()  # what Run and the series prefetch load through
        self.image = ComboBox(label="image", choices=owner.image_choices, nullable=True)
        self.task = ComboBox(
            label="task",
            choices=[(f"{task_info(t)['name']} ({t.upper()})", t) for t in TASKS],
            value="sod",
        )
        self.size = ComboBox(label="model size", choices=list(SIZES), value="large")
        self.weights_source = ComboBox(
            label="weights",
            choices=[("official (Hugging Face hub)", "official"), ("local checkpoint", "file")],
            value="official",
        )
        self.weights_path = FileEdit(
            label="checkpoint", mode="r", filter="*.pth *.pt *.safetensors", visible=False
        )
        self.device = ComboBox(label="device", choices=available_devices(), value="auto")
        self.precision = ComboBox(label="precision", choices=list(PRECISIONS), value="auto")
        self.tta = CheckBox(text="test-time augmentation", value=False)
        self.planes = ComboBox(
            label="planes",
            choices=[("current plane", "current"), ("all planes", "all")],
            value="current",
            visible=False,
        )
        self.kernels = WrappingLabel(label="kernels", value="checking…")
        self.task_note = WrappingLabel(label="", value="", visible=False)
        super().__init__(
            widgets=[
                self.image,
                self.task,
                self.size,
                self.weights_source,
                self.weights_path,
                self.task_note,
                self.device,
                self.precision,
                self.tta,
                self.planes,
                self.kernels,
            ],
            labels=True,
        )
        for combo in (self.image, self.task, self.weights_source, self.planes):
            narrow_combo(combo)
        narrow_line_edits(self.weights_path)
        self.image.tooltip = "The image layer to segment (the selected layer by default)"
        self.task.tooltip = "What counts as foreground: each task has its own FOCUS weights"
        self.size.tooltip = "FOCUS-L (large) or FOCUS-G (giant, slower, more memory)"
        self.weights_source.tooltip = "Official weights from the Hugging Face hub, or a file"
        self.weights_path.tooltip = "A FOCUS checkpoint (.pth or .safetensors)"
        self.device.tooltip = "Where the model runs; auto picks a GPU when there is one"
        self.precision.tooltip = (
            "Number format of the model: auto = float16 on a CUDA GPU (masks 99.9 % equal "
            "to float32, 2x faster), float32 (exact) elsewhere; float16 needs a GPU; "
            "bfloat16 runs on a GPU or, faster and slightly less exact, on CPUs with bf16"
        )
        self.tta.tooltip = (
            "Test-time augmentation: average 6 scales x 2 flips (12 passes); "
            "better masks, 12x slower; used by Run and by the series proposals"
        )
        self.planes.tooltip = "For stacks: segment the plane on screen, or every plane"
        self.weights_source.changed.connect(self._on_weights_source)
        self._check_kernels()
        for widget in (self.task, self.weights_source, self.weights_path):
            widget.changed.connect(self._update_task_note)

    def _check_kernels(self) -> None:
        """Fill the kernels line from a worker: on a CUDA machine this initialises CUDA
        and asks nvcc what it can build, seconds the GUI thread must not wait."""
        lifetime = WidgetLifetime(self.native)
        worker = background(kernel_status_text)
        worker.returned.connect(lifetime.guard(self._show_kernels))
        worker.errored.connect(lifetime.guard(lambda error: self._show_kernels(f"{error}")))
        self._kernel_check = worker  # kept: the worker runs while the widget exists
        worker.start()

    def _show_kernels(self, text: str) -> None:
        self.kernels.value = text

    def _on_weights_source(self, source: str) -> None:
        self.weights_path.visible = source == "file"
        self.size.enabled = source == "official"

    def _update_task_note(self, *_: Any) -> None:
        """Say so when the chosen checkpoint records another task than the task chosen
        (it still runs: the five tasks share one architecture)."""
        note = None
        path = self.weights_path.value
        if self.weights_source.value == "file" and path and path.is_file():
            note = checkpoint_task_note(self.task.value, path)
        self.task_note.value = self.task_note.tooltip = note or ""
        self.task_note.visible = note is not None

    # ------------------------------------------------------------- model
    def model_key(self) -> ModelKey:
        weights = None
        if self.weights_source.value == "file":
            path = self.weights_path.value
            where = "under 'checkpoint' in the Model tab"
            if not path or str(path).strip() in ("", "."):  # an empty field holds "."
                raise ValueError(f"choose a checkpoint file (.pth or .safetensors) {where} first")
            if path.is_dir():
                raise ValueError(
                    f"'{path}' is a folder: choose the checkpoint file in it (.pth or "
                    f".safetensors) {where}"
                )
            if not path.exists():
                raise ValueError(
                    f"'{path}' does not exist (moved or renamed?): choose the checkpoint file "
                    f"(.pth or .safetensors) {where}"
                )
            if not path.is_file():
                raise ValueError(
                    f"'{path}' is not a checkpoint file: choose one (.pth or .safetensors) {where}"
                )
            weights = str(path)
        return ModelKey(
            task=self.task.value,
            size=self.size.value,
            weights=weights,
            device=self.device.value,
            precision=self.precision.value,
        )

    def adopt_predictor(self, key: ModelKey, predictor: Any) -> None:
        """Keep ``predictor`` for reuse while the settings stay at ``key``."""
        if predictor is not self._predictor:
            self.release_model()
        self._predictor, self._predictor_key = predictor, key

    def loaded_predictor(self) -> Any:
        """The kept predictor if it matches the current settings; otherwise the old one
        is freed (so two models never sit in memory) and None is returned."""
        try:
            key = self.model_key()
        except ValueError:
            return None
        if self._predictor_key == key:
            return self._predictor
        self.release_model()
        return None

    def release_model(self) -> None:
        """Drop the kept model and return its memory (GPU caches included)."""
        if self._predictor is None:
            return
        device = getattr(self._predictor, "device", None)
        self.shared_model.forget(self._predictor)
        self._predictor, self._predictor_key = None, None  # freed now (no cycles in it)
        release_cached_memory(device)

    def current_model(self) -> tuple[ModelKey | None, Any]:
        return self._predictor_key, self._predictor
