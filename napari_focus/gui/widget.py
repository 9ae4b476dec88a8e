"""The FOCUS dock widget: sections as tabs (Model, Refine, Export, Series, Improve),
each in a scroll area, above a footer with Run, Cancel, the progress and the status line.

Adding a section is one line in :data:`SECTIONS`: ``(tab title, attribute name,
"module:Class")``; the class is a magicgui widget built as ``Class(owner)`` with this
widget as the owner (see the owner API below: ``viewer``, ``selected_layer()``,
``mask_layer()``, ``proposal_layer()``, ``task``, ``model_key()``,
``loaded_predictor()``, ``adopt_predictor()``, ``set_status()``, ``report_error()``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container, ProgressBar, PushButton
from napari.utils.notifications import show_error

from . import dialogs
from .improve_host import CANCELLING_IMPROVE
from .job import (
    JobFailure,
    JobResult,
    ModelKey,
    Progress,
    gui_message,
    left_running,
    proposal_name,
    run_job,
    uninterruptible,
)
from .layout import WrappingLabel, tabbed_sections
from .model_memory import keep_remembered
from .planes import LayerPlanes, UnsupportedLayerError, current_plane_index, layer_planes
from .proposal_layers import (
    META_KEY,
    find_layer,
    is_edited,
)
from .proposal_output import ProposalOutput
from .series_close import UndockWatch
from .shortcuts import bind_shortcuts
from .triton_isolation import load_triton_isolated
from .workers import background

if TYPE_CHECKING:
    import napari

SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("Model", "model_section", "napari_focus.gui.model_section:ModelSection"),
    ("Refine", "refine_section", "napari_focus.gui.refine_section:RefineSection"),
    ("Export", "export_section", "napari_focus.gui.export_section:ExportSection"),
    ("Series", "series", "napari_focus.gui.series_section:SeriesSection"),
    ("Improve", "improve", "napari_focus.gui.improve_section:for_focus_widget"),
)
STATUS_TICK_MS = 500


def load_section(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


class Footer(Container):
    """Always visible under the tabs: Run, Cancel, progress, status."""

    def __init__(self) -> None:
        self.run_button = PushButton(text="Run", enabled=False)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=100, value=0)
        self.status = WrappingLabel(label="status", value="ready")
        buttons = Container(widgets=[self.run_button, self.cancel_button], layout="horizontal")
        buttons.margins = (0, 0, 0, 0)
        super().__init__(widgets=[buttons, self.progress, self.status], labels=False)
        self.progress.tooltip = "Progress of the running job"


class FocusWidget(ProposalOutput, Container):
    """Dock widget: choose image, task, model and device; Run proposes a Labels layer."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        load_triton_isolated()  # before any worker thread can import it beside Mesa's LLVM
        self.viewer = napari_viewer
        self._worker: Any = None
        self._control: Any = None
        self._run_key: ModelKey | None = None  # the model the running job uses
        self.footer = Footer()
        self.run_button, self.cancel_button = self.footer.run_button, self.footer.cancel_button
        self.progress, self.status = self.footer.progress, self.footer.status
        self.sections: dict[str, Any] = {}
        for title, attribute, spec in SECTIONS:
            section = load_section(spec)(self)
            setattr(self, attribute, section)
            self.sections[title] = section
            if attribute == "model_section":
                self._alias_model_controls()
        refine = self.refine_section
        self.official, self.threshold = refine.official, refine.threshold
        self.fill_holes, self.min_size = refine.fill_holes, refine.min_size
        self.keep_largest = refine.keep_largest

        super().__init__(widgets=[], labels=False)
        self.tabs = tabbed_sections((title, section) for title, section in self.sections.items())
        self.native.layout().addWidget(self.tabs)
        self.native.layout().addWidget(self.footer.native)
        self.run_button.tooltip = "Run FOCUS on the selected image"
        self.cancel_button.tooltip = "Stop the running job, or the loading of the model"

        from qtpy.QtCore import QTimer

        self._tick = QTimer(self.native)  # deleted with the widget: never ticks after it
        self._tick.setInterval(STATUS_TICK_MS)
        self._tick.timeout.connect(self._show_stage)

        self.task.changed.connect(self.export_section.task_changed)
        self.image.changed.connect(self._on_image_changed)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        layers = self.viewer.layers
        layers.events.inserted.connect(self.reset_choices)
        layers.events.removed.connect(self.reset_choices)
        layers.events.renamed.connect(self.reset_choices)
        layers.selection.events.active.connect(self._on_active_layer)
        self._unbind = bind_shortcuts(self.viewer, self)
        self.native.destroyed.connect(lambda *_: self._on_destroyed())
        self._undock_watch = UndockWatch(self.native, self._on_undocked)
        self.reset_choices()
        self._on_active_layer()
        keep_remembered(self.model_section)  # last: the tabs follow the recalled task

    def _on_destroyed(self) -> None:
        """napari closed: a running job stops at its next stage and reports to nobody."""
        self._unbind()
        if self._control is not None:
            self._control.cancel()
        self._worker, self._control = None, None

    def _on_undocked(self) -> None:
        """Closed from its dock: the series keeps its edits; the viewer forgets this widget."""
        self.series.close_guard.on_undocked()
        self._unbind()
        layers = self.viewer.layers
        for event in (layers.events.inserted, layers.events.removed, layers.events.renamed):
            event.disconnect(self.reset_choices)
        layers.selection.events.active.disconnect(self._on_active_layer)

    def show_section(self, title: str) -> None:
        """Bring the tab ``title`` (e.g. "Series") to the front."""
        self.tabs.setCurrentIndex(list(self.sections).index(title))

    def _alias_model_controls(self) -> None:
        model = self.model_section
        for name in ("image", "task", "size", "weights_source", "weights_path", "device"):
            setattr(self, name, getattr(model, name))
        self.precision, self.tta, self.planes = model.precision, model.tta, model.planes
        self.kernels = model.kernels

    # ------------------------------------------------------------ choices
    def image_layer_names(self) -> list[str]:
        """Names of the image layers FOCUS can segment (not its own outputs)."""
        return self.image_choices()

    def image_choices(self, _widget: Any = None) -> list[str]:
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
        self.model_section.reset_choices()
        self._on_active_layer()
        self.update_enabled()

    def _on_active_layer(self, _event: Any = None) -> None:
        names = self.image_choices()
        active = self.viewer.layers.selection.active
        if active is not None and active.name in names:
            self.image.value = active.name
        elif self.image.value not in names and names:
            self.image.value = names[-1]
        self.update_enabled()

    def selected_layer(self) -> Any:
        return find_layer(self.viewer, self.image.value) if self.image.value else None

    def _on_image_changed(self, _name: Any = None) -> None:
        layer = self.selected_layer()
        self.export_section.image_changed(layer.name if layer is not None else None)
        try:
            self.planes.visible = layer is not None and layer_planes(layer).is_stack
        except UnsupportedLayerError:
            self.planes.visible = False
        self.update_enabled()

    def update_enabled(self) -> None:
        """Controls that cannot act are disabled (their tooltips say why)."""
        if not hasattr(self, "tabs"):
            return
        self.run_button.enabled = self._worker is None and self.selected_layer() is not None
        series = getattr(self, "series", None)
        loading = series is not None and series.prefetcher.loading is not None
        opening = series is not None and series.loader.wanted
        improve = getattr(self, "improve", None)
        training = improve is not None and improve.running
        self.cancel_button.enabled = self._worker is not None or loading or opening or training
        if loading and not self._tick.isActive():  # to show a download of its model
            self._tick.start()
        has_mask = self.mask_layer() is not None
        self.export_section.export_button.enabled = has_mask
        self.refine_section.reset_button.enabled = has_mask

    # -------------------------------------------------------------- model
    def model_key(self) -> ModelKey:
        return self.model_section.model_key()

    def adopt_predictor(self, key: ModelKey, predictor: Any) -> None:
        self.model_section.adopt_predictor(key, predictor)

    def loaded_predictor(self) -> Any:
        return self.model_section.loaded_predictor()

    def current_model(self) -> tuple[ModelKey | None, Any]:
        return self.model_section.current_model()

    @property
    def _predictor(self) -> Any:
        return self.model_section.current_model()[1]

    # ---------------------------------------------------------------- run
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
            self.report_error(error)
            return
        if self.series.takes_run(layer):  # the series image awaiting its proposal
            return
        name = proposal_name(layer.name, key.task)
        labels = find_layer(self.viewer, name)
        if (
            labels is not None
            and is_edited(labels)
            and not dialogs.ask_yes_no(
                self.native, f"'{name}' has edits. Replace them with a new proposal?"
            )
        ):
            self.set_status("kept your edits; nothing run")
            return
        if planes.stack_shape and self.planes.value == "current":
            indices = [current_plane_index(layer, tuple(self.viewer.dims.point), planes)]
        else:
            indices = planes.all_indices()
        from ..run_control import RunControl

        control = RunControl()
        worker = background(
            run_job, key, self.loaded_predictor(), planes, indices, self.tta.value, control,
            self.model_section.shared_model.get,
        )  # fmt: skip

        def while_current(handler: Any) -> Any:
            # a job the user left (Cancel while it read a checkpoint) reports to nobody
            return lambda *args: handler(*args) if self._worker is worker else None

        worker.yielded.connect(while_current(self._on_progress))
        worker.returned.connect(
            while_current(lambda result: self._on_returned(result, layer, planes))
        )
        worker.errored.connect(while_current(self._on_errored))
        worker.finished.connect(while_current(self._on_finished))
        worker.aborted.connect(while_current(lambda: self.set_status("cancelled")))
        self._worker, self._control, self._run_key = worker, control, key
        self.update_enabled()
        self.set_status("starting…")
        self._tick.start()
        worker.start()

    def cancel(self) -> None:
        """Stop the running job within one model stage; nothing it computed is added.
        While the model loads, the widget is free at once: a checkpoint read stops at the
        next tensor, a download ends in the background. A first kernel build goes on in
        the background, for the next Run. Without a Run, Cancel stops the opening of a
        series, else the model loading of the series' proposals (both shown here), else
        the Improve tab's training."""
        if self._worker is None:
            if self.series.cancel_open():
                return
            if self.improve.running and self.series.prefetcher.loading is None:
                self.improve.cancel()
                self.set_status(CANCELLING_IMPROVE)
            else:
                self.series.cancel_model_load()
            return
        self.set_status("cancelling…")
        self._control.cancel()
        self._worker.quit()
        stage = self._control.snapshot()[0]
        if uninterruptible(stage):
            series_waits = self.series.prefetcher.loading == self._run_key
            self._on_finished()  # the worker goes on alone; nothing it reports is taken
            self.set_status(left_running(stage, series_waits))

    @property
    def running(self) -> bool:
        return self._worker is not None

    def _on_progress(self, progress: Progress) -> None:
        if progress.fraction is None:
            self.progress.min, self.progress.max = 0, 0  # busy indicator
        else:
            self.progress.min, self.progress.max = 0, 100
            self.progress.value = round(progress.fraction * 100)
        self._show_stage()

    def _show_stage(self) -> None:
        if self._control is None:  # no Run: the series' model may be downloading
            if not self.series.show_model_download():
                self._tick.stop()
            return
        if self._control.cancelled:
            return
        stage, _in_stage, total = self._control.snapshot()
        self.set_status(f"{stage} — {total:.0f} s")

    def _on_finished(self) -> None:
        self._tick.stop()
        if self._control is not None and self._control.cancelled:
            self.set_status("cancelled")
        self._worker, self._control, self._run_key = None, None, None
        self.progress.min, self.progress.max = 0, 100
        self.update_enabled()

    def set_status(self, text: str) -> None:
        self.status.value = text

    def report_error(self, error: BaseException | str) -> None:
        message = error if isinstance(error, str) else gui_message(error)
        self.set_status(f"error: {message}")
        show_error(f"FOCUS: {message}")

    # ------------------------------------------------------------- output
    def _on_errored(self, error: BaseException) -> None:
        self._tick.stop()  # before the worker's end: no stage may cover the error
        self.report_error(error)

    def _on_returned(
        self, result: JobResult | JobFailure | None, layer: Any, planes: LayerPlanes
    ) -> None:
        self._tick.stop()  # the job reports no stage any more; nothing covers its outcome
        if result is None:
            self.set_status("cancelled")
        elif isinstance(result, JobFailure):
            self.report_error(result.error)
        elif layer not in self.viewer.layers:  # closed while the model ran
            self.adopt_predictor(result.key, result.predictor)
            self.set_status(f"'{layer.name}' was closed while FOCUS ran; no proposal added")
        elif not planes.shown_by(layer):  # its mask now belongs to other pixels
            self.adopt_predictor(result.key, result.predictor)
            self.set_status(
                f"'{layer.name}' shows another image than FOCUS ran on (Next, Previous or "
                "new pixels); no proposal added: press Run again"
            )
        else:
            self.show_result(result, layer, planes)
