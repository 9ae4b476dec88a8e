"""The "Improve the model" section: fine-tune on the exported corrections, then switch.

The section trains from the dataset root and layout the Export section writes to, in a
separate process watched by a worker thread (progress, Cancel), with the model currently
chosen in the widget as the base. When the run ends it offers to switch to the new
weights (and to re-propose and re-rank the series images not yet accepted); the previous
weights stay one click away.

It talks to its host only through :class:`~.improve_host.ImproveHost`, so it can sit in
any dock layout; :class:`~.improve_host.FocusWidgetHost` adapts the FOCUS dock widget.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info

from ..quality import require_metrics
from ..training.cli import PRESET_NAMES
from ..training.config import DEFAULT_STEPS
from . import dialogs
from .fields import chosen_dir, clear_path
from .improve_host import FocusWidgetHost, ImproveHost, WeightsChoice
from .improve_messages import (
    METRIC_LABELS,
    restart_question,
    training_error_text,
    validation_text,
)
from .improve_watch import TrainingWatch
from .layout import WrappingLabel, narrow_combo, narrow_line_edits

#: the validation figures "keep best" offers
KEEP_BEST = ("mask_iou", "iou", "smeasure", "edit_effort")
IMPROVE_TIP = "Fine-tune the current model on the corrected masks exported to the dataset root"


class ImproveSection(Container):
    """Steps, preset, output file; Improve / Cancel; then use the new or previous weights."""

    def __init__(self, viewer: Any, host: ImproveHost) -> None:
        self.viewer, self.host = viewer, host
        self._worker = None
        self._cancel = threading.Event()
        self.new_weights: WeightsChoice | None = None
        self.previous_weights: WeightsChoice | None = None
        self._filled_output = False  # the output field names a cancelled run

        self.steps = SpinBox(label="steps", min=1, max=100_000, value=DEFAULT_STEPS)
        self.preset = ComboBox(label="hardware preset", choices=list(PRESET_NAMES), value="auto")
        self.crop = SpinBox(label="crop", min=0, max=2048, step=32, value=0)
        self.learning_rate = ComboBox(
            label="learning rate",
            choices=[("1e-4 (official)", 1e-4), ("3e-4", 3e-4), ("1e-3", 1e-3), ("3e-5", 3e-5)],
            value=1e-4,
        )
        self.keep = ComboBox(
            label="keep best",
            choices=[(METRIC_LABELS[metric], metric) for metric in KEEP_BEST],
            value="mask_iou",
        )  # fmt: skip
        self.output = FileEdit(label="new weights", mode="w", filter="*.safetensors")
        self.improve_button = PushButton(text="Improve")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="training", min=0, max=100, value=0)
        self.status = WrappingLabel(label="status", value="")
        self.repropose = CheckBox(text="re-propose unaccepted images", value=True)
        self.use_new_button = PushButton(text="Use new weights", enabled=False)
        self.use_previous_button = PushButton(text="Previous weights", enabled=False)
        super().__init__(
            widgets=[
                self.steps, self.preset, self.crop, self.learning_rate, self.keep, self.output,
                Container(widgets=[self.improve_button, self.cancel_button], layout="horizontal"),
                self.progress, self.status, self.repropose,
                Container(widgets=[self.use_new_button, self.use_previous_button],
                          layout="horizontal"),
            ],
            labels=True,
        )  # fmt: skip
        self.steps.tooltip = "Optimizer steps; about 50 CPU-seconds each for FOCUS-L on a CPU"
        self.preset.tooltip = (
            "What trains and at which batch size and crop: auto picks by the device "
            "(CPU or < 16 GB GPU: decoder + adapter; >= 24 GB: the ViT too)"
        )
        self.crop.tooltip = "Training crop in pixels (multiple of 32); 0 = the preset's"
        self.learning_rate.tooltip = "AdamW learning rate (the official recipe uses 1e-4)"
        self.keep.tooltip = "The validation figure that chooses which step's weights are kept"
        for combo in (self.learning_rate, self.keep):
            narrow_combo(combo)
        narrow_combo(self.preset, 8)  # its label is long: the row must fit the other tabs' width
        narrow_line_edits(self.output)
        self.output.tooltip = (
            "Where the new .safetensors weights go (empty: napari_focus_models/ in the "
            "dataset root); an existing file is never overwritten"
        )
        self.cancel_button.tooltip = "Stop training; the run can be resumed later"
        self.progress.tooltip = "Training steps done"
        self.repropose.tooltip = (
            "After switching weights, recompute the proposals of the series images not yet "
            "accepted and re-rank them"
        )
        self.use_new_button.tooltip = "Switch the Model tab to the weights just trained"
        self.use_previous_button.tooltip = "Switch back to the weights used before"
        self.improve_button.changed.connect(lambda *_: self.start())
        host.watch_training_data(self._update_improve_button)
        self._update_improve_button()
        self.cancel_button.changed.connect(self.cancel)
        # napari closing mid-run: the child stops after its step and saves its resume state
        self._closed = False
        self._offer_restart: tuple[str, str] | None = None  # (question, error text)
        self.native.destroyed.connect(self._on_closed)
        self.use_new_button.changed.connect(self.use_new_weights)
        self.use_previous_button.changed.connect(self.use_previous_weights)

    # ------------------------------------------------------------- training
    @property
    def running(self) -> bool:
        return self._worker is not None

    def build_config(self, restart: bool = False) -> Any:
        from ..training import TrainConfig

        root, layout = self.host.training_data()
        if root is None:
            raise ValueError("choose the dataset root in the Export tab first")
        base = self.host.current_weights()
        if base.source == "file" and (base.path is None or not base.path.is_file()):
            raise ValueError(
                "choose the base checkpoint file under 'checkpoint' in the Model tab first"
            )
        out = chosen_dir(self.output.value)
        if out is not None and out.suffix != ".safetensors":  # never another file than named
            raise ValueError(
                f"the new weights are a .safetensors file: under '{self.output.label}' choose "
                f"{out.with_suffix('.safetensors').name}, or leave it empty"
            )
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = root / "napari_focus_models" / f"focus_{base.task}_{stamp}.safetensors"
        if out.exists():
            raise ValueError(f"{out} exists; choose another file under 'new weights'")
        from ..training.state import has_saved_state

        return TrainConfig(
            root=root, layouts=(layout,), out=out,
            weights=str(base.path) if base.source == "file" else base.task,
            size=base.size, task=base.task, steps=self.steps.value, device=base.device,
            preset=self.preset.value, canvas=self.crop.value or None,
            lr=self.learning_rate.value, select_metric=self.keep.value,
            # a run cancelled into this file continues where it stopped, unless discarded
            resume=not restart and has_saved_state(out.parent / f"{out.stem}.training"),
            restart=restart,
        )  # fmt: skip

    def start(self, restart: bool = False) -> None:
        """Improve; with ``restart``, the cancelled run saved for the output is
        discarded and a new one starts."""
        if self._worker is not None:
            return
        try:
            require_metrics()  # every evaluation of the run scores with them
            config = self.build_config(restart)
        except (ImportError, ValueError) as error:
            self._error(str(error))
            return
        self._cancel = threading.Event()
        self._base = self.host.current_weights()
        # a process of its own: the training's Python work never competes with the viewer
        self._watch = TrainingWatch(config, self._cancel)
        worker = thread_worker(self._watch.body, start_thread=False)()
        self._watch.attach(worker)  # napari closing aborts it: the run ends all the same
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.improve_button.enabled, self.cancel_button.enabled = False, True
        self._settings_enabled(False)  # the run has taken them: changes would do nothing
        self._config = config
        self.status.value = (
            f"continuing the cancelled run of {config.out.name}…"
            if config.resume
            else f"starting from {self._base.describe()}…"
        )
        worker.start()
        self.host.job_changed()

    def _update_improve_button(self) -> None:
        """Improve needs the exported samples: without a dataset root it cannot act."""
        root, _layout = self.host.training_data()
        self.improve_button.enabled = self._worker is None and root is not None
        self.improve_button.tooltip = (
            IMPROVE_TIP if root is not None else "Choose the dataset root in the Export tab first"
        )

    def _settings_enabled(self, enabled: bool) -> None:
        for field in (self.steps, self.preset, self.crop, self.learning_rate, self.keep,
                      self.output):  # fmt: skip
            field.enabled = enabled

    def cancel(self) -> None:
        if self._worker is not None:
            self._cancel.set()
            self.status.value = "cancelling…"

    def _on_closed(self, *_: Any) -> None:
        self._cancel.set()
        self._closed = True  # what the worker still reports has no widget to go to
        if self._worker is not None:  # the run stops within a model stage; on stderr
            self._watch.close()

    def _on_progress(self, report: Any) -> None:
        if self._closed:
            return
        self.progress.value = int(100 * report.step / max(report.steps, 1))
        if report.phase == "train":
            eta = f", {report.eta_seconds:.0f} s left" if report.eta_seconds else ""
            self.status.value = f"step {report.step}/{report.steps}, loss {report.loss:.3f}{eta}"
        elif report.phase == "eval" and report.metrics is not None:
            metric = self._config.select_metric  # first: what a narrow line still shows
            self.status.value = validation_text(report.step, report.metrics, metric)
        else:
            self.status.value = report.message

    def _on_returned(self, outcome: tuple[Any, BaseException | None]) -> None:
        result, error = outcome
        if self._closed:
            return
        if error is not None:
            text = self._error_text(error)
            question = restart_question(error, self._config.out.name, self.output.label)
            if question is not None:  # asked once the worker has finished (a modal
                self._offer_restart = (question, text)  # dialog runs its events)
                return
            self._error(f"training failed: {text}")
            return
        if result.cancelled and not result.started:
            self.status.value = (
                "cancelled; the download of the base weights continues from there with "
                "the next Improve"
            )
            return
        if result.cancelled and not result.saved:
            self.status.value = (
                "cancelled before its first step was done, so nothing was saved; Improve "
                "starts the run again"
            )
            return
        if result.cancelled:
            # shown in the field, so that Improve continues this run, not a new one
            self.output.value = self._config.out
            self._filled_output = True
            self.status.value = (
                f"cancelled at step {result.step} of {self._config.steps}: "
                f"Improve continues it; to start a new run, choose another file under "
                f"'{self.output.label}'"
            )
            return
        base, best = result.baseline_metrics or {}, result.best_metrics or {}
        metric = self._config.select_metric  # the figure that chose the step kept
        gain = (
            f"{METRIC_LABELS.get(metric, metric)} {base[metric]:.3f} -> {best[metric]:.3f}"
            if metric in base and metric in best
            else "no sample was held out to choose a step by (export more), so the file "
            "holds the last step"
        )
        self.new_weights = WeightsChoice(
            "file", result.output, self._base.size, self._base.task, self._base.device
        )
        if result.best_step == 0:
            gain += "; no step beat the starting weights on the held-out images, so the new "
            gain += "file holds them"
        if self._filled_output:  # the next Improve starts a new run
            clear_path(self.output)
            self._filled_output = False
        self.status.value = f"done: {gain}; {result.output.name}"
        self.use_new_button.enabled = True
        show_info(f"FOCUS: new weights {result.output}: {gain}")

    def _error_text(self, error: BaseException) -> str:
        return training_error_text(error, self._config.out.name, self.output.label)

    def _on_finished(self) -> None:
        self._worker = None
        if self._closed:
            return
        if self._watch.aborted and self._watch.outcome is not None:  # napari's task list
            self._on_returned(self._watch.outcome)  # cancelled it: said as for Cancel
        self.cancel_button.enabled = False
        self._update_improve_button()
        self._settings_enabled(True)
        self.host.job_changed()
        offer, self._offer_restart = self._offer_restart, None
        if offer is not None:
            question, text = offer
            if dialogs.ask_yes_no(self.native, question):
                self.start(restart=True)
            else:  # the user's choice, not a failure
                self.status.value = f"not started: {text}"

    # -------------------------------------------------------------- switching
    def use_new_weights(self) -> None:
        if self.new_weights is None:
            return
        current = self.host.current_weights()
        if current != self.new_weights:  # a second click must not make them "previous"
            self.previous_weights = current
        self.host.use_weights(self.new_weights)
        self.use_new_button.enabled = False  # in use; "Previous weights" switches back
        self.use_previous_button.enabled = self.previous_weights is not None
        count = self.host.repropose_open_images() if self.repropose.value else 0
        again = f"; re-proposing {count} series images" if count else ""
        self.status.value = f"using {self.new_weights.describe()}{again}"

    def use_previous_weights(self) -> None:
        if self.previous_weights is None:
            return
        self.host.use_weights(self.previous_weights)
        self.use_previous_button.enabled = False
        self.use_new_button.enabled = self.new_weights is not None
        count = self.host.repropose_open_images() if self.repropose.value else 0
        again = f"; re-proposing {count} series images" if count else ""
        self.status.value = f"back to {self.previous_weights.describe()}{again}"

    def _error(self, message: str) -> None:
        self.status.value = f"error: {message}"
        show_error(f"FOCUS improve: {message}")


def for_focus_widget(owner: Any) -> ImproveSection:
    """The section as the FOCUS dock widget builds its tabs (``Class(owner)``)."""
    return ImproveSection(owner.viewer, FocusWidgetHost(owner))
