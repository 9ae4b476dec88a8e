"""The FOCUS dock widget: propose an editable mask for the selected image."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error

from ..mask_ops import Refinement, refine
from ..presets import SIZES, TASKS, task_info
from .export_section import ExportSection
from .improve_section import FocusWidgetHost, ImproveSection
from .job import JobFailure, JobResult, ModelKey, Progress, proposal_name, run_job
from .planes import LayerPlanes, UnsupportedLayerError, current_plane_index, layer_planes
from .series_section import SeriesSection

if TYPE_CHECKING:
    import napari

META_KEY = "napari_focus"


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
        return f"kernels: unknown ({error})"
    parts = [
        f"{name.upper()} {info.get('status', '?')}"
        for name, info in status.get("kernels", {}).items()
    ]
    return "compiled kernels: " + (", ".join(parts) if parts else "none (PyTorch reference)")


def ask_yes_no(parent: Any, question: str) -> bool:
    """Modal Yes/No question; "No" is the default."""
    from qtpy.QtWidgets import QMessageBox

    buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
    answer = QMessageBox.question(parent, "FOCUS", question, buttons, QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


class FocusWidget(Container):
    """Dock widget: choose image, task, model and device; Run proposes a Labels layer."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        self.viewer = napari_viewer
        self._predictor = None
        self._predictor_key: ModelKey | None = None
        self._worker = None

        self.image = ComboBox(label="image", choices=self._image_choices, nullable=True)
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
        self.tta = CheckBox(text="test-time augmentation (12 passes)", value=False)
        self.planes = ComboBox(
            label="planes",
            choices=[("current plane", "current"), ("all planes", "all")],
            value="current",
            visible=False,
        )
        self.kernels = Label(label="kernels", value=kernel_status_text())
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=100, value=0)
        self.status = Label(label="status", value="ready")

        self.official = CheckBox(text="official mask (uncheck to threshold)", value=True)
        self.threshold = FloatSlider(
            label="threshold", min=0.0, max=1.0, step=0.01, value=0.5, enabled=False
        )
        self.fill_holes = CheckBox(text="fill holes", value=False)
        self.min_size = SpinBox(label="remove objects <", min=0, max=10**7, value=0)
        self.keep_largest = CheckBox(text="keep largest object", value=False)
        self.export_section = ExportSection(
            self.viewer, self.selected_layer, self.mask_layer, lambda: self.task.value
        )
        self.series = SeriesSection(self)
        self.improve = ImproveSection(self.viewer, FocusWidgetHost(self))

        super().__init__(
            widgets=[
                self.image,
                self.task,
                self.size,
                self.weights_source,
                self.weights_path,
                self.device,
                self.tta,
                self.planes,
                self.kernels,
                self.run_button,
                self.cancel_button,
                self.progress,
                self.status,
                Label(value="Refine the proposal (no model call)"),
                self.official,
                self.threshold,
                self.fill_holes,
                self.min_size,
                self.keep_largest,
                Label(value="Export to a FOCUS training set"),
                self.export_section,
                Label(value="Go through a folder (series)"),
                self.series,
                Label(value="Improve the model"),
                self.improve,
            ],
            labels=True,
        )
        self.task.changed.connect(self.export_section.task_changed)

        self.weights_source.changed.connect(self._on_weights_source)
        self.image.changed.connect(self._on_image_changed)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.official.changed.connect(self._on_official_toggled)
        for control in (self.threshold, self.fill_holes, self.min_size, self.keep_largest):
            control.changed.connect(self._on_refinement_changed)
        layers = self.viewer.layers
        layers.events.inserted.connect(self.reset_choices)
        layers.events.removed.connect(self.reset_choices)
        layers.events.renamed.connect(self.reset_choices)
        layers.selection.events.active.connect(self._on_active_layer)
        self.reset_choices()
        self._on_active_layer()

    # ------------------------------------------------------------ choices
    def image_layer_names(self) -> list[str]:
        """Names of the image layers FOCUS can segment (not its own outputs)."""
        return self._image_choices()

    def _image_choices(self, _widget: Any = None) -> list[str]:
        # Layers are referred to by name: npe2 hands plugins a proxy of the viewer,
        # whose layer objects are not identical from one access to the next.
        from napari.layers import Image

        return [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Image) and META_KEY not in layer.metadata
        ]

    def reset_choices(self, *args: Any) -> None:
        super().reset_choices(*args)
        self._on_active_layer()

    def _on_active_layer(self, _event: Any = None) -> None:
        names = self._image_choices()
        active = self.viewer.layers.selection.active
        if active is not None and active.name in names:
            self.image.value = active.name
        elif self.image.value not in names and names:
            self.image.value = names[-1]

    def selected_layer(self) -> Any:
        return self._find_layer(self.image.value)

    def _on_image_changed(self, _name: Any = None) -> None:
        layer = self.selected_layer()
        self.export_section.image_changed(layer.name if layer is not None else None)
        try:
            self.planes.visible = layer is not None and layer_planes(layer).is_stack
        except UnsupportedLayerError:
            self.planes.visible = False

    def _on_weights_source(self, source: str) -> None:
        self.weights_path.visible = source == "file"
        self.size.enabled = source == "official"

    # -------------------------------------------------------------- model
    def adopt_predictor(self, key: ModelKey, predictor: Any) -> None:
        """Keep ``predictor`` for reuse while the settings stay at ``key``."""
        self._predictor, self._predictor_key = predictor, key

    def loaded_predictor(self) -> Any:
        """The kept predictor if it matches the current settings, else None."""
        return self._predictor if self._predictor_key == self.model_key() else None

    def current_model(self) -> tuple[ModelKey, Any]:
        return self._predictor_key, self._predictor

    # ---------------------------------------------------------------- run
    def model_key(self) -> ModelKey:
        weights = None
        if self.weights_source.value == "file":
            path = self.weights_path.value
            if not path or not str(path).strip() or not path.is_file():
                raise ValueError("choose a local checkpoint file (.pth or .safetensors) first")
            weights = str(path)
        return ModelKey(
            task=self.task.value, size=self.size.value, weights=weights, device=self.device.value
        )

    def run(self) -> None:
        """Start a background job for the selected image (returns immediately)."""
        if self._worker is not None:
            return
        layer = self.selected_layer()
        try:
            if layer is None:
                raise ValueError("add or select an image layer first")
            planes = layer_planes(layer)
            key = self.model_key()
        except ValueError as error:
            self._report_error(error)
            return
        if planes.stack_shape and self.planes.value == "current":
            indices = [current_plane_index(layer, tuple(self.viewer.dims.point), planes)]
        else:
            indices = planes.all_indices()
        predictor = self.loaded_predictor()

        worker = thread_worker(run_job, start_thread=False)(
            key, predictor, planes, indices, self.tta.value
        )
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda result: self._on_returned(result, layer, planes))
        worker.errored.connect(self._report_error)
        worker.finished.connect(self._on_finished)
        worker.aborted.connect(lambda: self._set_status("cancelled"))
        self._worker = worker
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self._set_status("starting…")
        worker.start()

    def cancel(self) -> None:
        """Stop the running job at its next step; nothing it computed is added."""
        if self._worker is not None:
            self._set_status("cancelling…")
            self._worker.quit()

    @property
    def running(self) -> bool:
        return self._worker is not None

    def _on_progress(self, progress: Progress) -> None:
        if progress.fraction is None:
            self.progress.min, self.progress.max = 0, 0  # busy indicator
        else:
            self.progress.min, self.progress.max = 0, 100
            self.progress.value = round(progress.fraction * 100)
        self._set_status(progress.message)

    def _on_finished(self) -> None:
        self._worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        self.progress.min, self.progress.max = 0, 100

    def _set_status(self, text: str) -> None:
        self.status.value = text

    def _report_error(self, error: BaseException) -> None:
        message = str(error) or type(error).__name__
        self._set_status(f"error: {message}")
        show_error(f"FOCUS: {message}")

    def _confirm(self, question: str) -> bool:
        return ask_yes_no(self.native, question)

    # ------------------------------------------------------------- output
    def _on_returned(self, result: JobResult | JobFailure, layer: Any, planes: LayerPlanes) -> None:
        if isinstance(result, JobFailure):
            self._report_error(result.error)
            return
        self.show_result(result, layer, planes)

    def show_result(self, result: JobResult, layer: Any, planes: LayerPlanes) -> None:
        """Add or update the proposal (Labels + hidden probability) of ``layer``."""
        self.adopt_predictor(result.key, result.predictor)
        name = proposal_name(layer.name, result.key.task)
        labels = self._find_layer(name)
        if labels is not None and tuple(labels.data.shape) != planes.spatial_shape:
            labels = None  # the image changed shape: start a new proposal
        question = f"'{name}' has edits. Replace them with the new proposal?"
        if labels is not None and self._is_edited(labels) and not self._confirm(question):
            self._set_status("kept your edits; new proposal discarded")
            return

        state = labels.metadata.get(META_KEY) if labels is not None else None
        if state is None or state["probability"].shape != planes.spatial_shape:
            probability = np.zeros(planes.spatial_shape, np.float32)
            official = np.zeros(planes.spatial_shape, np.uint8)
        else:
            probability, official = state["probability"], state["official_mask"]
        for index, prob, mask in zip(
            result.indices, result.probabilities, result.masks, strict=True
        ):
            probability[index] = prob
            official[index] = mask
        refinement = self.refinement()
        mask = refine(probability, official, refinement)
        metadata = {
            META_KEY: {
                "task": result.key.task,
                "size": result.predictor.architecture.size_name,
                "weights": result.key.weights_id,
                "device": str(result.predictor.device),
                "tta": self.tta.value,
                "source_image": layer.name,
                "refinement": asdict(refinement),
                "probability": probability,
                "official_mask": official,
                "proposal": mask.copy(),
            }
        }
        if labels is None:
            labels = self.viewer.add_labels(
                mask,
                name=name,
                scale=layer.scale,
                translate=layer.translate,
                metadata=metadata,
            )
        else:
            labels.metadata = metadata
            labels.data = mask
        self._show_probability(name, probability, layer)
        self.viewer.layers.selection.active = labels
        labels.mode = "paint"
        labels.selected_label = 1
        self._set_status(f"proposed {name}")

    def _show_probability(self, name: str, probability: np.ndarray, layer: Any) -> None:
        prob_name = f"{name} probability"
        existing = self._find_layer(prob_name)
        if existing is not None:
            existing.data = probability
            return
        self.viewer.add_image(
            probability,
            name=prob_name,
            scale=layer.scale,
            translate=layer.translate,
            colormap="magma",
            contrast_limits=(0.0, 1.0),
            visible=False,
            metadata={META_KEY: {"probability_of": name}},
        )

    def _find_layer(self, name: str) -> Any:
        return next((layer for layer in self.viewer.layers if layer.name == name), None)

    # --------------------------------------------------------- refinement
    def refinement(self) -> Refinement:
        return Refinement(
            threshold=None if self.official.value else float(self.threshold.value),
            fill_holes=self.fill_holes.value,
            min_size=int(self.min_size.value),
            keep_largest=self.keep_largest.value,
        )

    def mask_layer(self) -> Any:
        """The Labels layer ``"<image> [FOCUS <task>]"`` of the selected image, if any
        (a model proposal, or a mask loaded as the starting point)."""
        from napari.layers import Labels

        layer = self.selected_layer()
        if layer is None:
            return None
        labels = self._find_layer(proposal_name(layer.name, self.task.value))
        return labels if isinstance(labels, Labels) else None

    def _proposal_layer(self) -> Any:
        labels = self.mask_layer()
        return labels if labels is not None and META_KEY in labels.metadata else None

    @staticmethod
    def _is_edited(labels: Any) -> bool:
        """Painted since the last proposal; without one, any painted pixel counts."""
        data = np.asarray(labels.data) > 0
        state = labels.metadata.get(META_KEY)
        if state is None:
            return bool(data.any())
        return not np.array_equal(data, state["proposal"] > 0)

    def _on_official_toggled(self, official: bool) -> None:
        self.threshold.enabled = not official
        self._on_refinement_changed()

    def _on_refinement_changed(self, _value: Any = None) -> None:
        """Re-derive the mask from the stored model output; no model call."""
        labels = self._proposal_layer()
        if labels is None:
            return
        if self._is_edited(labels) and not self._confirm(
            f"'{labels.name}' has edits. Replace them with the refined proposal?"
        ):
            self._set_status("kept your edits")
            return
        state = labels.metadata[META_KEY]
        refinement = self.refinement()
        mask = refine(state["probability"], state["official_mask"], refinement)
        state["proposal"] = mask.copy()
        state["refinement"] = asdict(refinement)
        labels.data = mask
        self._set_status("mask updated")
