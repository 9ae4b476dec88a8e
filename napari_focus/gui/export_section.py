"""Export section of the FOCUS widget: the current image + its corrected Labels layer
into a FOCUS training split (all file-format work is in :mod:`napari_focus.datasets`)."""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, LineEdit, PushButton
from napari.utils.notifications import show_error, show_info

from ..datasets import (
    LAYOUTS,
    ExportError,
    ExportWriteError,
    SampleExistsError,
    UnusableNameError,
    export_sample,
    fitting_name,
    get_layout,
    layout_for_task,
    root_of_export,
)
from ..presets import task_info
from . import dialogs
from .fields import chosen_dir, middle_cut
from .layout import WrappingLabel, narrow_combo, narrow_line_edits
from .planes import UnsupportedLayerError, current_plane_index, layer_planes
from .proposal_layers import META_KEY
from .series_layers import PROVENANCE_KEY
from .workers import WidgetLifetime, background

POLICIES = ("ask", "skip", "rename", "replace")


class ExportSection(Container):
    """Dataset root, layout (default: the task's split), sample name, overwrite policy."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.viewer = owner.viewer
        self._worker: Any = None
        self._layout_chosen = False  # the user picked a layout: a task switch keeps it
        self.dataset_root = FileEdit(label="dataset root", mode="d")
        self.dataset_layout = ComboBox(
            label="layout", choices=list(LAYOUTS), value=layout_for_task(owner.task.value)
        )
        self.sample_name = LineEdit(label="sample name")
        self.policy = ComboBox(label="if it exists", choices=list(POLICIES), value="ask")
        self.export_button = PushButton(text="Export", enabled=False)
        self.result_label = WrappingLabel(label="export", value="")
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
        self._lifetime = WidgetLifetime(self.native)
        narrow_combo(self.dataset_layout)
        narrow_line_edits(self.dataset_root)
        narrow_line_edits(self.sample_name)
        self.dataset_root.tooltip = "The FOCUS datasets/ folder the sample is added to"
        self.dataset_layout.tooltip = "Which training split (by default the task's own)"
        self.sample_name.tooltip = "File name of the exported image and mask (no extension)"
        self.policy.tooltip = "What to do when a sample of that name is already listed"
        self.export_button.tooltip = "Add the image and its mask to the split (needs a mask)"
        self.export_button.changed.connect(lambda: self.export())
        self.dataset_layout.changed.connect(self._on_layout_chosen)
        for field in (self.dataset_root, self.dataset_layout, self.sample_name):
            field.changed.connect(self._forget_error)

    def _forget_error(self, _value: Any = None) -> None:
        """A field the error may have named changed: its line would tell of a problem
        that may be gone (the next Export says it again if not)."""
        if self.result_label.value.startswith("error: "):
            self.result_label.value = ""

    def _on_layout_chosen(self, _value: Any = None) -> None:
        if not self._following_task:
            self._layout_chosen = True

    _following_task = False

    def task_changed(self, task: str) -> None:
        """Follow the task's default layout until the user picks one."""
        if self._layout_chosen:
            return
        self._following_task = True
        try:
            self.dataset_layout.value = layout_for_task(task)
        finally:
            self._following_task = False

    def follow_series(self, records: list[dict[str, Any]]) -> str | None:
        """With no dataset root chosen, take the root and layout of a series' last export
        (``records``: its export records), so that Accept in a reopened series exports
        where it did before; returns the root taken, if any."""
        if chosen_dir(self.dataset_root.value) is not None or not records:
            return None
        last = max(records, key=lambda record: str(record.get("at") or ""))
        layout, image = last.get("layout"), last.get("image")
        root = root_of_export(layout, image) if layout and image else None
        if root is None or not root.is_dir():
            return None
        self.dataset_root.value = root
        self.dataset_layout.value = layout
        return str(root)

    def image_changed(self, name: str | None) -> None:
        # a file name too long for a sample is offered shortened, not refused at Accept
        layout = get_layout(self.dataset_layout.value)
        self.sample_name.value = fitting_name(name, layout) if name else ""

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def export(self, on_done: Callable[[Any], None] | None = None) -> None:
        """Export in a worker; ``on_done`` gets the
        :class:`~napari_focus.datasets.ExportResult`, or None when nothing was exported
        (the reason is shown; the mask stays as it is in the viewer)."""
        if self._worker is not None:
            return
        try:
            image, mask, name, provenance, made_for = self._sample()
            root = chosen_dir(self.dataset_root.value)
            if root is None:
                raise ExportError(
                    "choose the dataset root (the FOCUS datasets/ folder) in the Export tab first"
                )
            if root.exists() and not root.is_dir():
                raise ExportError(
                    f"the dataset root {root} is a file, not a folder: choose the FOCUS "
                    "datasets/ folder under 'dataset root' in the Export tab"
                )
        except (ExportError, UnsupportedLayerError) as error:
            self._failed(error, on_done)
            return
        layout = self.dataset_layout.value
        question = _other_task_question(made_for, layout, name)
        if question is not None and not dialogs.ask_yes_no(self.native, question):
            self.result_label.value = f"not exported: '{name}' is not a {layout} mask yet"
            if on_done is not None:
                on_done(None)
            return
        policy = self.policy.value
        job = (root, layout, name, image, mask, provenance)
        self._attempt(job, "error" if policy == "ask" else policy, on_done)

    def _attempt(self, job: tuple, on_exists: str, on_done: Callable | None) -> None:
        root, layout, name, image, mask, provenance = job

        def write() -> tuple[Any, BaseException | None]:
            # an exception is handed back in a tuple: a worker re-raises one it returns
            try:
                pixels = image()
                recorded = with_proposal_read(provenance, np.shape(mask))
                return export_sample(
                    root, layout, name, pixels, mask, on_exists=on_exists, provenance=recorded
                ), None
            except (ExportError, OSError) as error:
                return None, error

        worker = background(write)
        guard = self._lifetime.guard
        worker.returned.connect(guard(lambda outcome: self._on_written(job, *outcome, on_done)))
        worker.errored.connect(guard(lambda error: self._failed(error, on_done)))
        worker.finished.connect(guard(self._on_finished))
        self._worker = worker
        self.export_button.enabled = False
        self.result_label.value = f"exporting '{name}'…"
        worker.start()

    def _on_finished(self) -> None:
        self._worker = None
        self.owner.update_enabled()

    def _on_written(
        self, job: tuple, outcome: Any, error: BaseException | None, on_done: Callable | None
    ) -> None:
        if isinstance(error, SampleExistsError) and self.policy.value == "ask":
            choice = dialogs.ask_policy(self.native, f"{error.reason}.\n\nWhat should happen?")
            if choice is None:
                self.result_label.value = "export cancelled"
                if on_done is not None:
                    on_done(None)
                return
            self._worker = None
            self._attempt(job, choice, on_done)
            return
        if error is not None:
            self._failed(error, on_done)
            return
        self.result_label.value = f"{outcome.status}: {outcome.name} -> {outcome.image.parent}"
        show_info(f"FOCUS: {outcome.status} sample '{outcome.name}' in {outcome.layout}")
        if on_done is not None:
            on_done(outcome)

    def _failed(self, error: BaseException, on_done: Callable | None) -> None:
        cause = error if isinstance(error, OSError) else error.__cause__
        advice = "fix that"
        if isinstance(cause, OSError):
            forbidden = cause.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
            advice = "choose a dataset root you can write to" if forbidden else (
                "free some space or choose another dataset root"
            )
        if isinstance(error, OSError):
            where = error.filename or chosen_dir(self.dataset_root.value)
            reason = getattr(error, "reason", None) or error.strerror or str(error)
            text = (
                f"could not write to {where}: {reason}. Your mask is still in the viewer: "
                f"{advice}, then export again"
            )
        elif isinstance(error, UnusableNameError):
            # a long name is shortened, so that what to do stays in the tab's line
            reason = re.sub(r"'([^']{41,})'", lambda m: f"'{middle_cut(m[1])}'", error.reason)
            text = (
                f"{reason}: type a shorter or other name under "
                f"'{self.sample_name.label}' in the Export tab, then export again"
            )
        elif isinstance(error, ExportWriteError):
            text = f"{error}. Your mask is still in the viewer: {advice}, then export again"
        else:
            text = str(error)
        self.result_label.value = f"error: {text}"
        show_error(f"FOCUS export: {text}")
        if on_done is not None:
            on_done(None)

    def _sample(self) -> tuple[Callable[[], np.ndarray], np.ndarray, str, dict, str | None]:
        image_layer = self.owner.selected_layer()
        if image_layer is None:
            raise ExportError("select the image to export under 'image' in the Model tab")
        labels = self.owner.mask_layer()
        if labels is None:
            raise ExportError(
                f"no mask for '{image_layer.name}': press Run first, then correct the mask"
            )
        planes = layer_planes(image_layer)
        index = current_plane_index(image_layer, tuple(self.viewer.dims.point), planes)
        name = self.sample_name.value.strip() or image_layer.name
        if index:
            name = f"{name}_plane{'_'.join(str(i) for i in index)}"
        state = labels.metadata.get(META_KEY) or labels.metadata.get(PROVENANCE_KEY) or {}
        refinement = state.get("refinement", {})
        provenance = {
            "source_path": image_layer.metadata.get("path") or image_layer.source.path,
            "task": state.get("task"),
            "model_size": state.get("size"),
            "weights_id": state.get("weights"),
            "threshold": refinement.get("threshold"),
            "cleanup": {k: v for k, v in refinement.items() if k != "threshold"},
            "proposal": state["proposal"][index] if "proposal" in state else self._own(labels),
            "extra": {"layer": image_layer.name, "plane": list(index), "tta": state.get("tta")},
        }
        mask = np.array(labels.data[index] if index else labels.data)  # a copy: painting goes on
        made_for = state.get("weights_task") or state.get("task")  # the task its masks show
        # the pixels are read in the export's worker: a dask or zarr layer reads from disk
        return _read_once(planes, index, image_layer.name), mask, name, provenance, made_for

    def _own(self, labels: Any) -> Any:
        """The model's proposal a mask shown from the series' autosave was drawn from
        (or what reads it in the export's worker); None for any other mask."""
        series = getattr(self.owner, "series", None)
        if series is None:
            return None
        proposal, made_from_it = series.own_proposal(labels)
        return proposal if made_from_it else None


def _other_task_question(task: str | None, layout: str, name: str) -> str | None:
    """What to ask before a mask proposed for one task goes into another task's split
    (the task was switched, or a reopened series exports where it did before)."""
    split_task = get_layout(layout).task
    if not task or not split_task or task == split_task:
        return None
    proposed, split = (f"{task_info(t)['name'].lower()} ({t.upper()})" for t in (task, split_task))
    return (
        f"The mask of '{name}' was made for {proposed}, and the Export tab's layout "
        f"{layout} is a split for {split}.\n\nExport it there anyway? (No: press Run for a "
        f"{split_task.upper()} proposal, with {split_task.upper()} weights, or choose another "
        "layout in the Export tab.)"
    )


def _read_once(planes: Any, index: tuple, layer: str) -> Callable[[], np.ndarray]:
    """What reads the plane in the export's worker, once (an export asked again, after
    "the sample exists", reuses it); a read that fails is said as a read, not a write."""
    kept: list[np.ndarray] = []

    def read() -> np.ndarray:
        if not kept:
            try:
                kept.append(np.asarray(planes.plane(index)))
            except OSError as error:
                raise ExportError(f"could not read the pixels of '{layer}': {error}") from error
        return kept[0]

    return read


def with_proposal_read(provenance: dict[str, Any], shape: tuple[int, ...]) -> dict[str, Any]:
    """Worker-thread body: ``provenance`` with its proposal read, when it holds what reads
    it (kept only when it is of the mask's shape)."""
    read = provenance.get("proposal")
    if not callable(read):
        return provenance
    proposal = read()
    if proposal is not None and np.shape(proposal) != shape:
        proposal = None
    return {**provenance, "proposal": proposal}
