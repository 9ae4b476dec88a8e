"""Export section of the FOCUS widget: the current image + its corrected Labels layer
into a FOCUS training split (all file-format work is in :mod:`napari_focus.datasets`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, PushButton
from napari.utils.notifications import show_error, show_info

from ..datasets import LAYOUTS, ExportError, SampleExistsError, export_sample, layout_for_task
from .fields import chosen_dir
from .planes import UnsupportedLayerError, current_plane_index, layer_planes

META_KEY = "napari_focus"
POLICIES = ("ask", "skip", "rename", "replace")


def ask_policy(parent: Any, question: str) -> str | None:
    """Ask what to do with an existing sample: "replace", "rename", "skip" or None (cancel)."""
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox(parent)
    box.setWindowTitle("FOCUS export")
    box.setText(question)
    buttons = {
        box.addButton("Replace", QMessageBox.ButtonRole.DestructiveRole): "replace",
        box.addButton("Keep both (rename)", QMessageBox.ButtonRole.AcceptRole): "rename",
        box.addButton("Skip", QMessageBox.ButtonRole.RejectRole): "skip",
    }
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.exec()
    return buttons.get(box.clickedButton())


class ExportSection(Container):
    """Dataset root, layout (default: the task's split), sample name, overwrite policy."""

    def __init__(
        self,
        viewer: Any,
        image_layer: Callable[[], Any],
        proposal_layer: Callable[[], Any],
        task: Callable[[], str],
    ) -> None:
        self.viewer = viewer
        self._image_layer, self._proposal_layer, self._task = image_layer, proposal_layer, task
        self.dataset_root = FileEdit(label="dataset root", mode="d")
        self.dataset_layout = ComboBox(
            label="layout", choices=list(LAYOUTS), value=layout_for_task(task())
        )
        self.sample_name = LineEdit(label="sample name")
        self.policy = ComboBox(label="if it exists", choices=list(POLICIES), value="ask")
        self.export_button = PushButton(text="Export")
        self.result_label = Label(label="export", value="")
        super().__init__(
            widgets=[
                self.dataset_root,
                self.dataset_layout,
                self.sample_name,
                self.policy,
                self.export_button,
                self.result_label,
            ],
            labels=True,
        )
        self.export_button.changed.connect(self.export)

    def task_changed(self, task: str) -> None:
        self.dataset_layout.value = layout_for_task(task)

    def image_changed(self, name: str | None) -> None:
        self.sample_name.value = name or ""

    def export(self) -> Any:
        """Export now; returns the :class:`~napari_focus.datasets.ExportResult` or None."""
        try:
            image, mask, name, provenance = self._sample()
            root = chosen_dir(self.dataset_root.value)
            if root is None:
                raise ExportError("choose the dataset root (the FOCUS datasets/ folder) first")
            policy = self.policy.value

            def attempt(on_exists: str) -> Any:
                return export_sample(
                    root,
                    self.dataset_layout.value,
                    name,
                    image,
                    mask,
                    on_exists=on_exists,
                    provenance=provenance,
                )

            try:
                result = attempt("error" if policy == "ask" else policy)
            except SampleExistsError as exists:
                if policy != "ask":
                    raise
                choice = ask_policy(self.native, f"{exists}\n\nWhat should happen?")
                if choice is None:
                    self.result_label.value = "export cancelled"
                    return None
                result = attempt(choice)
        except (ExportError, UnsupportedLayerError, OSError) as error:
            self.result_label.value = f"error: {error}"
            show_error(f"FOCUS export: {error}")
            return None
        self.result_label.value = f"{result.status}: {result.name} -> {result.image.parent}"
        show_info(f"FOCUS: {result.status} sample '{result.name}' in {self.dataset_layout.value}")
        return result

    def _sample(self) -> tuple[np.ndarray, np.ndarray, str, dict[str, Any]]:
        image_layer = self._image_layer()
        if image_layer is None:
            raise ExportError("select the image to export")
        labels = self._proposal_layer()
        if labels is None:
            raise ExportError(
                f"no FOCUS proposal for '{image_layer.name}' and task {self._task().upper()}: "
                "run FOCUS first, then correct the mask"
            )
        planes = layer_planes(image_layer)
        index = current_plane_index(image_layer, tuple(self.viewer.dims.point), planes)
        name = self.sample_name.value.strip() or image_layer.name
        if index:
            name = f"{name}_plane{'_'.join(str(i) for i in index)}"
        state = labels.metadata.get(META_KEY) or {}
        refinement = state.get("refinement", {})
        provenance = {
            "source_path": image_layer.metadata.get("path") or image_layer.source.path,
            "task": state.get("task"),
            "model_size": state.get("size"),
            "weights_id": state.get("weights"),
            "threshold": refinement.get("threshold"),
            "cleanup": {k: v for k, v in refinement.items() if k != "threshold"},
            "proposal": state["proposal"][index] if "proposal" in state else None,
            "extra": {"layer": image_layer.name, "plane": list(index), "tta": state.get("tta")},
        }
        mask = np.asarray(labels.data[index] if index else labels.data)
        return planes.plane(index), mask, name, provenance
