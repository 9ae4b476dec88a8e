"""Series section of the FOCUS widget: go through a folder of images with proposals
computed ahead in the background (queue, resume and prefetch logic live in
:mod:`napari_focus.series`; opening a series in :mod:`.series_start`; the worker in
:mod:`.series_jobs`; the layers in :mod:`.series_layers`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    LineEdit,
    PushButton,
    SpinBox,
)
from napari.utils.notifications import show_error, show_info, show_warning

from ..series import PrefetchCache, SeriesState, Status
from ..series.decoded import DecodedImages
from ..series.presence import Presence
from .job import DOWNLOADING
from .layout import WrappingLabel, enter_to_apply, narrow_combo, narrow_line_edits
from .proposal_layers import META_KEY, is_edited
from .series_autosave import BackgroundAutosaves
from .series_close import CloseGuard, provenance_of
from .series_decisions import SeriesDecisions
from .series_display import SeriesDisplay
from .series_ends import SeriesEnds
from .series_jobs import Prefetcher
from .series_layers import (
    SERIES_KEY,
    series_layer,
)
from .series_opening import ImageReader, SeriesOpening
from .series_proposal import DECLINED, SeriesProposal
from .series_scheduling import SeriesScheduling
from .series_start import SeriesLoader, SeriesStarting
from .series_unaccept import SeriesUnaccept


class SeriesSection(
    SeriesStarting,
    SeriesOpening,
    SeriesEnds,
    SeriesDisplay,
    SeriesScheduling,
    SeriesDecisions,
    SeriesUnaccept,
    SeriesProposal,
    Container,
):
    """Folder queue with Previous / Next / Accept / Reject / Skip, resume and prefetch."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.viewer = owner.viewer
        self.state: SeriesState | None = None
        self.cache = PrefetchCache(capacity=8, lookahead=2)
        self.decoded = DecodedImages()  # files read ahead, for display and proposals
        self.prefetcher = Prefetcher(
            self.cache, self._on_prefetched, owner.model_section.shared_model.get, self.decoded.get
        )
        self.prefetcher.on_idle = self._on_prefetch_idle
        self.prefetcher.on_loading = owner.update_enabled
        self.seconds: dict[str, float] = {}
        self.reader = ImageReader(self._on_read, self.decoded.get)
        self.autosaves = BackgroundAutosaves(self)  # edits of the images left, being written
        self._opening: tuple[str, int] | None = None
        self._locked_mode: str | None = None
        self.scores: dict[str, float] = {}  # uncertainty of every proposal computed
        self._shown: str | None = None
        self._awaiting: str | None = None  # key whose proposal is being computed
        self._resetting: str | None = None  # key whose mask Reset to proposal replaces
        self._model_error: Any = None  # settings whose model failed to load
        self._load_declined: Any = None  # settings whose model loading the user cancelled
        self._buttons_off = False  # disabled while no image of the series can be shown
        self._start_listing: tuple[Any, Any] | None = None  # the start masks folder, listed
        self._presence: Presence | None = None  # this widget's marker in the series folder
        self._rank_wanted = False

        self.folder = FileEdit(label="image folder", mode="d")
        self.output = FileEdit(label="series folder", mode="d")
        self.recursive = CheckBox(text="include subfolders", value=False)
        self.pattern = LineEdit(label="file pattern")
        self.references = FileEdit(label="start masks", mode="d")
        self.open_button = PushButton(text="Open folder")
        self.layers_button = PushButton(text="Queue open layers")
        self.include_exported = CheckBox(text="visit exported images too", value=False)
        self.position = WrappingLabel(label="image", value="no series")
        self.previous_button = PushButton(text="◀ Previous", enabled=False)
        self.next_button = PushButton(text="Next ▶", enabled=False)
        self.accept_button = PushButton(text="Accept", enabled=False)
        self.reject_button = PushButton(text="Reject", enabled=False)
        self.skip_button = PushButton(text="Skip", enabled=False)
        self.jump_to = enter_to_apply(SpinBox(label="go to #", min=1, max=1, value=1))
        self.on_leave = ComboBox(
            label="unsaved edits",
            choices=[("autosave", "autosave"), ("ask", "ask")],
            value="autosave",
        )
        self.prefetch = CheckBox(text="compute the next proposals ahead", value=True)
        self.rank_button = PushButton(text="Order by uncertainty", enabled=False)
        self.quality = WrappingLabel(label="quality", value="")
        rows = [
            Container(widgets=[self.open_button, self.layers_button], layout="horizontal"),
            Container(widgets=[self.previous_button, self.next_button], layout="horizontal"),
            Container(
                widgets=[self.accept_button, self.reject_button, self.skip_button],
                layout="horizontal",
            ),
        ]
        for row in rows:
            row.margins = (0, 0, 0, 0)
        super().__init__(
            widgets=[
                self.folder,
                self.output,
                self.recursive,
                self.pattern,
                self.references,
                rows[0],
                self.include_exported,
                self.position,
                rows[1],
                rows[2],
                self.jump_to,
                self.on_leave,
                self.prefetch,
                self.rank_button,
                self.quality,
            ],
            labels=True,
        )
        narrow_combo(self.on_leave)
        for field in (self.folder, self.output, self.pattern, self.references):
            narrow_line_edits(field)
        self._tooltips()
        self.open_button.changed.connect(lambda: self.open())
        self.layers_button.changed.connect(self.open_layers)
        self.previous_button.changed.connect(self.previous)
        self.next_button.changed.connect(self.next)
        self.accept_button.changed.connect(self.accept)
        self.reject_button.changed.connect(lambda: self._mark_and_advance(Status.REJECTED))
        self.skip_button.changed.connect(lambda: self._mark_and_advance(Status.SKIPPED))
        self.jump_to.changed.connect(self._on_jump)
        self.rank_button.changed.connect(self.order_by_uncertainty)
        self.prefetch.changed.connect(lambda _: self._schedule())
        model = owner.model_section
        for control in (model.task, model.size, model.weights_source, model.weights_path,
                        model.device, model.precision, model.tta):  # fmt: skip
            control.changed.connect(self._on_model_settings)
        self.loader = SeriesLoader(owner.set_status, self.native)  # opens a series
        self.close_guard = CloseGuard(self)
        self.native.destroyed.connect(lambda *_: self._gone())
        # deleting the mask layer (or closing napari) removes it: keep the edits first
        self.viewer.layers.events.removing.connect(self.close_guard.on_layer_removing)

    def _gone(self) -> None:
        """The widget is deleted: a series still opening, and a file still being read,
        report to nobody."""
        self.loader.close(wait_s=0)
        self.stop_reading_scores()
        self.stop_reading_proposal()
        self.shutdown_metrics()

    def _tooltips(self) -> None:
        self.folder.tooltip = "The folder of images to go through"
        self.output.tooltip = (
            "Where the queue, autosaved edits and computed proposals are kept "
            "(default: <image folder>/napari_focus)"
        )
        self.recursive.tooltip = "Also queue the images in subfolders"
        self.pattern.tooltip = "Optional: only files matching this pattern, e.g. *_rgb.* or day1/*"
        self.references.tooltip = (
            "Optional: a folder of existing masks with the same file names to start from"
        )
        self.open_button.tooltip = "Queue the folder's images (resumes where you stopped)"
        self.layers_button.tooltip = "Queue the image layers open in napari"
        self.include_exported.tooltip = "Next/Previous also stop at images already exported"
        self.jump_to.tooltip = "Go to image number N of the queue (type it, then Return)"
        self.on_leave.tooltip = (
            "What happens to your edits when you leave an image: autosave = kept in the "
            "series folder (work/), shown again when you come back; ask = a question each "
            "time you leave an image (closing napari keeps them without asking)"
        )
        self.prefetch.tooltip = "Compute the next two proposals while you correct this one"
        self.rank_button.tooltip = "Put the images the model is least sure about first"

    def _on_model_settings(self, _value: Any = None) -> None:
        """The image on screen still waits for its proposal (e.g. the model could not be
        loaded): compute it with the new settings once they name a model."""
        self._load_declined = self._model_error = None
        if self.state is None or self._awaiting is None or self._awaiting != self._shown:
            return
        try:
            self.owner.model_key()
        except ValueError:
            return  # e.g. 'local checkpoint' chosen, its file not yet
        self._schedule()

    def cancel_model_load(self) -> None:
        """Cancel (footer) while the model of the proposals loads: the series goes on
        without proposals until Run loads a model or the model settings change."""
        key = self.prefetcher.loading
        if key is None:
            return
        self.prefetcher.cancel_load()
        self._load_declined = key
        self.reset_gave_up(DECLINED)
        self.owner.set_status(
            "cancelled loading the model: no proposals are computed; press Run to load it"
        )
        self.owner.update_enabled()

    def mark_presence(self, folder: Path) -> None:
        """Leave this widget's marker in the series folder (the last one's removed) and
        say when another napari window has the series open too."""
        self.leave_presence()
        self._presence = Presence(folder)
        others = self._presence.others_text()
        if others is not None:
            show_warning(
                f"FOCUS: this series is also open in {others}: both save into it, image by "
                "image, the later decision winning; close it there so that a click in one "
                "window does not undo a decision made in the other"
            )

    def leave_presence(self) -> None:
        if self._presence is not None:
            self._presence.leave()
            self._presence = None

    def takes_run(self, layer: Any) -> bool:
        """Run on the series image still waiting for its proposal (its model's loading
        cancelled, or failed): the series computes it, loading the model now, so that
        the mask is the series' own (autosaved, exported by Accept). False otherwise."""
        if self.state is None or self._shown is None or self._awaiting != self._shown:
            return False
        shown = self._image_layer_for(self._shown)
        if shown is None or layer is None or shown.name != layer.name:
            return False
        self._load_declined = self._model_error = None
        name = self.state.queue.item(self._shown).name
        self.owner.set_status(f"computing the proposal of {name}…")
        self._schedule()
        self.owner.update_enabled()
        return True

    def show_model_download(self) -> bool:
        """In the status line: the download of the proposals' model while it runs, then
        the loading stage after it. False once no model loads."""
        stage = self.prefetcher.loading_stage()
        shown = self.owner.status.value.startswith(DOWNLOADING)
        if stage is not None and (stage.startswith(DOWNLOADING) or shown):
            self.owner.set_status(stage)
        return stage is not None

    def _buttons(self) -> list[PushButton]:
        return [
            self.previous_button,
            self.next_button,
            self.accept_button,
            self.reject_button,
            self.skip_button,
            self.rank_button,
        ]

    # ----------------------------------------------------------- navigation
    def next(self) -> None:
        if not self._at_an_end(1):
            self._move(self._forward)

    def _forward(self, queue: Any) -> Any:
        return queue.next(include_exported=self.include_exported.value)

    def previous(self) -> None:
        if not self._at_an_end(-1):
            self._move(lambda queue: queue.previous(include_exported=self.include_exported.value),
                       -1)  # fmt: skip

    def _on_jump(self, number: int) -> None:
        if self.state is None or number - 1 == self.state.queue.index:
            return
        target = self.state.queue[number - 1]
        if target.status is Status.FAILED or target.missing:  # it cannot be shown: stay
            why = target.failure if target.status is Status.FAILED else "its file is missing"
            show_info(f"FOCUS: #{number} {target.name} cannot be shown: {why}")
            if self.state.queue.current is not None:  # the box shows this one again
                self._show_position(self.state.queue.current)
            return
        self._move(lambda queue: queue.jump(number - 1))

    def _move(self, step: Any, direction: int = 1, *, keep_edits: bool = True) -> None:
        if self.state is None or (keep_edits and not self.leave_current()):
            return
        if step(self.state.queue) is None:
            show_info(f"FOCUS: {self._end_text(direction)}")
        self.show_current(direction)
        # the image shown first; its status mark (a new proposal) saved the position too
        if self.state is not None and not self.state.position_saved():
            try:
                self.state.save()
            except OSError as error:
                self._error(self.close_guard.save_failure_text(error, "the series state"))


    def leave_current(self, wait: bool = False) -> bool:
        """Keep the user's edits of the shown image (autosave, written in the background,
        or ask); with ``wait`` (another series) until every autosave is written. False =
        stay (the edits could not be saved: they stay in the viewer)."""
        labels = self._proposal_labels()
        edited = self.state is not None and labels is not None and self._shown is not None
        edited = edited and is_edited(labels)
        if edited and self.on_leave.value == "ask":
            from . import dialogs

            edited = dialogs.ask_yes_no(
                self.native,
                f"Save your edits of '{labels.name}' before leaving?",
                default_yes=True,  # Return keeps the edits
            )
        if edited:
            self.close_guard.submit(labels)
        return self.close_guard.settle(self._shown if edited else None, wait)

    # ------------------------------------------------------------- display
    def _proposal_labels(self) -> Any:
        labels = series_layer(self.viewer, "labels")
        return (
            labels
            if labels is not None and labels.metadata.get(SERIES_KEY) == self._shown
            else None
        )

    @property
    def busy(self) -> bool:
        """A background job (opening, reading, prefetch, scoring, reading a proposal,
        autosave, export, taking a sample out of its split) is running."""
        export = self.owner.export_section
        jobs = (self.loader, self.reader, self.prefetcher, self.autosaves, export)
        reading = self.reading_scores or self.reading_proposal
        return any(job.busy for job in jobs) or reading or self.removing_sample

    @property
    def shown_key(self) -> str | None:
        """Queue key of the image on screen."""
        return self._shown

    @property
    def proposal_ready(self) -> bool:
        """The image on screen has its mask (proposal or saved mask) displayed."""
        return self._shown is not None and self._awaiting is None

    def _error(self, message: str) -> None:
        self.owner.set_status(f"error: {message}")
        show_error(f"FOCUS series: {message}")

    def _wait_note(self, message: str) -> None:
        """Nothing is wrong, the button acts once something ends: said, not as an error."""
        self.owner.set_status(message)
        show_info(f"FOCUS series: {message}")


__all__ = ["META_KEY", "SERIES_KEY", "SeriesSection", "provenance_of"]
