"""Series section of the FOCUS widget: go through a folder of images with proposals
computed ahead in the background (queue, resume and prefetch logic live in
:mod:`napari_focus.series`)."""

from __future__ import annotations

import time
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info, show_warning

from ..io import read_image
from ..predictor import FocusPredictor, Prediction
from ..quality import uncertainty
from ..series import (
    PrefetchCache,
    SeriesState,
    SeriesStateError,
    Status,
    export_record,
    find_reference_mask,
    load_or_create,
    needs_proposal,
)
from .fields import chosen_dir
from .job import JobResult, ModelKey, load_predictor, proposal_name
from .planes import current_plane_index, layer_planes

if TYPE_CHECKING:
    from .widget import FocusWidget

SERIES_KEY = "napari_focus_series"  # metadata: the queue key a layer shows
ROLE_KEY = "napari_focus_series_role"  # metadata: "image", "labels" or "probability"


def prefetch_job(
    key: ModelKey,
    predictor: FocusPredictor | None,
    jobs: list[tuple[str, int, Path | np.ndarray]],
) -> Generator[tuple, None, None]:
    """Background job: load the model if needed, then predict each queued image.

    Yields ``("model", predictor)`` once when it loaded one, then
    ``("prediction", item_key, ticket, prediction, seconds)`` or
    ``("failed", item_key, ticket, message)`` per image.
    """
    if predictor is None:
        try:
            predictor = load_predictor(key)
        except (ValueError, OSError, RuntimeError) as error:
            for item_key, ticket, _ in jobs:
                yield ("failed", item_key, ticket, str(error))
            return
        yield ("model", predictor)
    for item_key, ticket, path in jobs:
        start = time.perf_counter()
        try:
            image = read_image(path) if isinstance(path, Path) else path
            prediction = predictor.predict(image)
        except (ValueError, OSError, RuntimeError) as error:
            yield ("failed", item_key, ticket, str(error))
            continue
        yield ("prediction", item_key, ticket, prediction, time.perf_counter() - start)


class SeriesSection(Container):
    """Folder queue with Previous / Next / Accept / Reject / Skip, resume and prefetch."""

    def __init__(self, owner: FocusWidget) -> None:
        self.owner = owner
        self.viewer = owner.viewer
        self.state: SeriesState | None = None
        self.cache = PrefetchCache(capacity=4, lookahead=2)
        self.seconds: dict[str, float] = {}
        self.scores: dict[str, float] = {}  # uncertainty of every proposal computed
        self._worker = None
        self._shown: str | None = None
        self._pending_rank = False
        self._awaiting: str | None = None  # key whose proposal is being computed

        self.folder = FileEdit(label="image folder", mode="d")
        self.output = FileEdit(label="series folder", mode="d")
        self.recursive = CheckBox(text="include subfolders", value=False)
        self.pattern = LineEdit(label="glob (optional)")
        self.references = FileEdit(label="existing masks (optional)", mode="d")
        self.open_button = PushButton(text="Open folder")
        self.layers_button = PushButton(text="Queue the open image layers")
        self.include_exported = CheckBox(text="visit exported images too", value=False)
        self.position = Label(label="image", value="no series")
        self.previous_button = PushButton(text="◀ Previous", enabled=False)
        self.next_button = PushButton(text="Next ▶", enabled=False)
        self.accept_button = PushButton(text="Accept (export, next)", enabled=False)
        self.reject_button = PushButton(text="Reject", enabled=False)
        self.skip_button = PushButton(text="Skip", enabled=False)
        self.jump_to = SpinBox(label="go to #", min=1, max=1, value=1)
        self.on_leave = ComboBox(
            label="unsaved edits",
            choices=[("save to the series folder", "autosave"), ("ask", "ask")],
            value="autosave",
        )
        self.prefetch = CheckBox(text="compute the next proposals ahead", value=True)
        self.rank_button = PushButton(text="Order by uncertainty", enabled=False)
        self.quality = Label(label="quality", value="")
        super().__init__(
            widgets=[
                self.folder,
                self.output,
                self.recursive,
                self.pattern,
                self.references,
                Container(widgets=[self.open_button, self.layers_button], layout="horizontal"),
                self.include_exported,
                self.position,
                Container(widgets=[self.previous_button, self.next_button], layout="horizontal"),
                Container(
                    widgets=[self.accept_button, self.reject_button, self.skip_button],
                    layout="horizontal",
                ),
                self.jump_to,
                self.on_leave,
                self.prefetch,
                self.rank_button,
                self.quality,
            ],
            labels=True,
        )
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
        # closing napari (or deleting the layer) removes the mask: keep the edits first
        self.viewer.layers.events.removing.connect(self._on_layer_removing)

    # ------------------------------------------------------------------ open
    def open(self, folder: str | Path | None = None) -> None:
        """Queue the images of a folder (state in the series folder, default
        ``<folder>/napari_focus``), resuming where the last session stopped."""
        folder = Path(folder or self.folder.value)
        if not folder.is_dir():
            self._error(f"'{folder}' is not a folder of images")
            return
        output = chosen_dir(self.output.value) or folder / "napari_focus"
        self._start(
            lambda: load_or_create(
                output,
                folder,
                recursive=self.recursive.value,
                pattern=self.pattern.value.strip() or None,
            ),
            f"no images in '{folder}'",
        )

    def open_layers(self) -> None:
        """Queue the image layers open in the viewer (state in the series folder)."""
        output = chosen_dir(self.output.value)
        if output is None:
            self._error("choose a series folder to keep the queue of the open layers")
            return
        names = self.owner.image_layer_names()
        self._start(lambda: load_or_create(output, names=names), "no image layers are open")

    def _start(self, load: Any, empty_message: str) -> None:
        try:
            self.state = load()
        except (SeriesStateError, OSError, ValueError) as error:
            self._error(str(error))
            return
        if self.state.recovered_from:
            show_warning(f"FOCUS: unreadable series state moved to {self.state.recovered_from}")
        if not len(self.state.queue):
            self._error(empty_message)
            self.state = None
            return
        self.cache.clear()
        self._awaiting = None
        self.jump_to.max = len(self.state.queue)
        for button in self._buttons():
            button.enabled = True
        self.show_current()

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
        self._move(self._forward)

    def _forward(self, queue: Any) -> Any:
        return queue.next(include_exported=self.include_exported.value)

    def previous(self) -> None:
        self._move(lambda queue: queue.previous(include_exported=self.include_exported.value))

    def _on_jump(self, number: int) -> None:
        if self.state is not None and number - 1 != self.state.queue.index:
            self._move(lambda queue: queue.jump(number - 1))

    def _move(self, step: Any) -> None:
        if self.state is None or not self.leave_current():
            return
        if step(self.state.queue) is None:
            show_info("FOCUS: no further image in that direction")
        self.state.save()
        self.show_current()

    def leave_current(self) -> bool:
        """Keep the user's edits of the shown image (autosave, or ask); False = stay."""
        labels = self._proposal_labels()
        if self.state is None or labels is None or self._shown is None:
            return True
        if not self._edited(labels):
            return True
        if self.on_leave.value == "ask":
            from .widget import ask_yes_no

            if not ask_yes_no(self.native, f"Save your edits of '{labels.name}' before leaving?"):
                return True
        self.state.autosave(self._shown, np.asarray(labels.data) > 0)
        return True

    def _on_layer_removing(self, event: Any) -> None:
        labels = self._proposal_labels()
        if labels is None or self.state is None or self._shown is None:
            return
        if self.viewer.layers[event.index].name == labels.name and self._edited(labels):
            self.state.autosave(self._shown, np.asarray(labels.data) > 0)

    # ------------------------------------------------------------- display
    def show_current(self) -> None:
        """Show the current item: its image, and its proposal when one is ready.

        The series' layers are reused from one image to the next (new data, new
        names): removing napari layers costs a garbage collection each, which would
        make Next take a second even with the proposal ready.
        """
        state = self.state
        assert state is not None
        item = state.queue.current
        self._shown = item.key
        self._awaiting = None
        self.position.value = f"{state.queue.position_text()} {item.name} — {item.status}"
        self.jump_to.changed.disconnect(self._on_jump)
        self.jump_to.value = state.queue.index + 1
        self.jump_to.changed.connect(self._on_jump)

        if item.path is None:  # a queue of open layers: show that layer
            layer = self._image_layer_for(item.key)
            for queued in self.state.queue:
                if queued.key in self.viewer.layers:
                    self.viewer.layers[queued.key].visible = queued.key == item.key
        else:
            layer = self._show_image(item.key, item.name, item.path, read_image(item.path))
        self.owner.image.value = layer.name
        shape = layer_planes(layer).spatial_shape
        labels = self._series_layer("labels")
        if labels is not None:
            labels.metadata = {SERIES_KEY: item.key, ROLE_KEY: "labels"}
            labels.data = np.zeros(shape, np.uint8)
            labels.name = proposal_name(item.name, self.owner.task.value)
        probability = self._series_layer("probability")
        if probability is not None:
            probability.data = np.zeros(shape, np.float32)
            probability.name = f"{proposal_name(item.name, self.owner.task.value)} probability"

        start = self._starting_mask(item.key, item.path)
        if start is not None:
            self._show_mask(layer, start)
        elif (prediction := self.cache.get(item.key)) is not None:
            self._show_prediction(layer, item.key, prediction)
        else:
            self._awaiting = item.key
            self.owner.status.value = "computing the proposal…"
            self.cache.invalidate(item.key)  # e.g. evicted earlier: compute it again
        self._schedule()

    def _image_layer_for(self, key: str) -> Any:
        """The image layer showing queue item ``key``."""
        if self.state is not None and self.state.queue.item(key).path is None:
            return self.viewer.layers[key]
        return self._series_layer("image")

    def _source(self, key: str) -> Path | np.ndarray:
        """What a background job reads for item ``key``: a file, or the pixels of a layer
        (taken here, on the UI thread)."""
        assert self.state is not None
        item = self.state.queue.item(key)
        if item.path is not None:
            return item.path
        layer = self.viewer.layers[key]
        planes = layer_planes(layer)
        return planes.plane(current_plane_index(layer, tuple(self.viewer.dims.point), planes))

    def _series_layer(self, role: str) -> Any:
        return next(
            (layer for layer in self.viewer.layers if layer.metadata.get(ROLE_KEY) == role), None
        )

    def _tag(self, layer: Any, role: str, key: str) -> None:
        layer.metadata = {**layer.metadata, SERIES_KEY: key, ROLE_KEY: role}

    def _show_image(self, key: str, name: str, path: Path, image: np.ndarray) -> Any:
        rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
        layer = self._series_layer("image")
        if layer is not None and layer.rgb == rgb and layer.data.ndim == image.ndim:
            layer.data = image
            layer.name = name
            layer.reset_contrast_limits()
        else:
            if layer is not None:
                self.viewer.layers.remove(layer)
            layer = self.viewer.add_image(image, name=name, rgb=rgb)
        layer.metadata = {"path": str(path)}
        self._tag(layer, "image", key)
        return layer

    def _starting_mask(self, key: str, path: Path | None) -> np.ndarray | None:
        assert self.state is not None
        saved = self.state.load_autosaved(key)
        if saved is not None or path is None:
            return saved
        folder = chosen_dir(self.references.value)
        return find_reference_mask(path, folder) if folder and folder.is_dir() else None

    def _show_mask(self, layer: Any, mask: np.ndarray) -> None:
        data = np.asarray(mask).astype(np.uint8)
        labels = self._series_layer("labels")
        if labels is None:
            labels = self.viewer.add_labels(
                data,
                name=proposal_name(layer.name, self.owner.task.value),
                scale=layer.scale,
                translate=layer.translate,
            )
        else:
            labels.data = data
        labels.metadata = {"napari_focus_start": data.copy()}
        self._tag(labels, "labels", self._shown)
        labels.mode = "paint"
        self.owner.status.value = "loaded a saved mask"

    def _show_prediction(self, layer: Any, key: str, prediction: Prediction) -> None:
        assert self.state is not None
        model_key, predictor = self.owner.current_model()
        result = JobResult(
            predictor=predictor,
            key=model_key,
            indices=[()],
            probabilities=[prediction.probability],
            masks=[prediction.mask],
        )
        self.owner.show_result(result, layer, layer_planes(layer))
        name = proposal_name(layer.name, self.owner.task.value)
        self._tag(self.viewer.layers[name], "labels", key)
        self._tag(self.viewer.layers[f"{name} probability"], "probability", key)
        self._awaiting = None
        if self.state.queue.current.status is Status.PENDING:
            self.state.mark(key, Status.PROPOSED)
            self.position.value = f"{self.state.queue.position_text()} {layer.name} — proposed"

    def _proposal_labels(self) -> Any:
        labels = self._series_layer("labels")
        return (
            labels
            if labels is not None and labels.metadata.get(SERIES_KEY) == self._shown
            else None
        )

    @staticmethod
    def _edited(labels: Any) -> bool:
        state = labels.metadata.get("napari_focus")
        reference = state["proposal"] if state else labels.metadata.get("napari_focus_start")
        data = np.asarray(labels.data) > 0
        return bool(data.any()) if reference is None else not np.array_equal(data, reference > 0)

    # ------------------------------------------------------------- prefetch
    def _schedule(self) -> None:
        """Start computing the current image and the next ones, if nothing runs."""
        if self.state is None or self._worker is not None:
            return
        queue = self.state.queue
        current = queue.current.key if queue.current else None
        shown_pending = current is not None and self._awaiting == current

        def wanted(item: Any) -> bool:
            if item.key == current:  # shown with a saved mask: no proposal needed
                return shown_pending
            return self.prefetch.value and needs_proposal(item)

        jobs = self.cache.schedule(queue, wanted=wanted)
        if not jobs:
            return
        sources = [(k, ticket, self._source(k)) for k, ticket in jobs]
        if not self._start_worker(sources, self._on_prefetched, self._on_prefetch_finished):
            self.cache.invalidate(*[k for k, _ in jobs])

    def _start_worker(self, jobs: list[tuple], on_yield: Any, on_finish: Any) -> bool:
        """Run :func:`prefetch_job` over ``jobs`` in a napari worker; False if the model
        settings are incomplete (the error is reported)."""
        try:
            key, predictor = self.owner.model_key(), self.owner.loaded_predictor()
        except ValueError as error:
            self._error(str(error))
            return False
        worker = thread_worker(prefetch_job, start_thread=False)(key, predictor, jobs)
        worker.yielded.connect(on_yield)
        worker.finished.connect(on_finish)
        self._worker = worker
        worker.start()
        return True

    def _on_prefetched(self, message: tuple) -> None:
        kind = message[0]
        if kind == "model":
            self.owner.adopt_predictor(self.owner.model_key(), message[1])
            return
        if kind == "failed":
            _, key, ticket, text = message
            self.cache.fail(key, ticket)
            self._error(f"{key}: {text}")
            return
        _, key, ticket, prediction, seconds = message
        self.seconds[key] = seconds
        self.scores[key] = uncertainty(prediction.probability)
        if self.cache.store(key, prediction, ticket) and key == self._awaiting:
            self._show_prediction(self._image_layer_for(key), key, prediction)

    def _on_prefetch_finished(self) -> None:
        self._worker = None
        if self._pending_rank:
            self._pending_rank = False
            self.order_by_uncertainty()
        else:
            self._schedule()

    @property
    def busy(self) -> bool:
        """A background job (prefetch or scoring) is running."""
        return self._worker is not None

    @property
    def shown_key(self) -> str | None:
        """Queue key of the image on screen."""
        return self._shown

    @property
    def proposal_ready(self) -> bool:
        """The image on screen has its mask (proposal or saved mask) displayed."""
        return self._shown is not None and self._awaiting is None

    # ------------------------------------------------------------ decisions
    def accept(self) -> None:
        """Export the shown image and its mask, record it, show quality, go on."""
        if self.state is None or self._shown is None:
            return
        labels = self._proposal_labels()
        if labels is None:
            self._error("the proposal is not ready yet")
            return
        result = self.owner.export_section.export()
        if result is None:
            return
        item = self.state.queue.item(self._shown)
        self.state.record_export(item.key, export_record(result))
        self.state.mark(item.key, Status.ACCEPTED)
        self.state.discard_autosaved(item.key)
        self._report_quality(labels, item.key, item.path)
        self._move(self._forward)

    def _report_quality(self, labels: Any, key: str, path: Path | None) -> None:
        """Metrics of the model's proposal against the ground truth (when a mask folder
        holds one) or else against the mask the user accepted."""
        state = labels.metadata.get("napari_focus")
        cached = self.cache.get(key)
        if state:
            probability = state["probability"]
        elif cached is not None:
            probability = cached.probability
        else:
            self.quality.value = "no model proposal to compare (started from a saved mask)"
            return
        folder = chosen_dir(self.references.value)
        reference = (
            find_reference_mask(path, folder) if path and folder and folder.is_dir() else None
        )
        against = "ground truth" if reference is not None else "your corrected mask"
        if reference is None:
            reference = np.asarray(labels.data) > 0
        try:
            from ..quality import mask_metrics

            metrics = mask_metrics(probability, reference)
        except ImportError as error:
            self.quality.value = str(error)
            return
        self.quality.value = (
            f"proposal vs {against}: IoU {metrics['iou']:.3f}, MAE {metrics['mae']:.3f}, "
            f"S {metrics['smeasure']:.3f}, E {metrics['emeasure_mean']:.3f}, "
            f"wF {metrics['wfmeasure']:.3f}, BER {metrics['ber']:.3f}"
        )

    def _mark_and_advance(self, status: Status) -> None:
        if self.state is None or self._shown is None:
            return
        self.state.mark(self._shown, status)
        self._move(self._forward)

    def order_by_uncertainty(self) -> None:
        """Most doubtful proposals first (:func:`napari_focus.quality.uncertainty`).

        Images without a proposal yet are computed first, in the background; the
        queue is reordered when all have a score.
        """
        if self.state is None:
            return
        missing = [item.key for item in self.state.queue if item.key not in self.scores]
        if not missing:
            self.state.queue.order_by(self.scores, descending=True)
            self.state.save()
            self.position.value = (
                f"{self.state.queue.position_text()} {self.state.queue.current.name}"
            )
            show_info(f"FOCUS: ordered {len(self.scores)} images by uncertainty")
            return
        if self._worker is not None:
            self._pending_rank = True
            return
        jobs = [(k, 0, self._source(k)) for k in missing]
        if self._start_worker(jobs, self._on_scored, self._on_rank_finished):
            self.owner.status.value = f"scoring {len(missing)} images…"

    def _on_scored(self, message: tuple) -> None:
        if message[0] == "model":
            self.owner.adopt_predictor(self.owner.model_key(), message[1])
        elif message[0] == "prediction":
            _, key, _, prediction, seconds = message
            self.seconds[key] = seconds
            self.scores[key] = uncertainty(prediction.probability)
        else:
            self._error(f"{message[1]}: {message[3]}")
            self.scores[message[1]] = float("nan")

    def _on_rank_finished(self) -> None:
        self._worker = None
        self.order_by_uncertainty()
        self._schedule()

    def _error(self, message: str) -> None:
        self.owner.status.value = f"error: {message}"
        show_error(f"FOCUS series: {message}")
