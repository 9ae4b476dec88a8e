"""Background work of the series: computing proposals ahead, one image at a time, in
the order the user needs them (the plan lives in :mod:`napari_focus.series.prefetch`)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np

from ..ops.build import KINDS, first_build_ahead
from ..predictor import FocusPredictor, Prediction
from ..quality import uncertainty
from ..run_control import Cancelled, RunControl, watch_model
from ..series import PrefetchCache
from ..series.images import UnusableImageError, load_series_image
from ..series.prefetch import JobBoard
from ..series.proposal_store import ProposalStore
from ..series.resume import file_fingerprint
from .job import LOADING, ModelKey, gui_message, import_ahead_of_layers, load_alone
from .workers import background


def model_id(key: ModelKey, tta: bool = False) -> str:
    """What identifies a series proposal's model and TTA (the proposal store's folder)."""
    return f"{key.task}|{key.size}|{key.weights_id}|{key.precision}" + ("|tta" if tta else "")


def prefetch_job(
    key: ModelKey,
    predictor: FocusPredictor | None,
    board: JobBoard,
    store: ProposalStore | None,
    control: RunControl,
    tta: bool = False,
    load: Callable[[ModelKey, RunControl], FocusPredictor] = load_alone,
    read_ahead: Callable[[str], np.ndarray | None] = lambda _key: None,
) -> Generator[tuple, None, None]:
    """Load the model if needed, then take jobs from ``board`` until it is empty.

    Yields ``("model", predictor, key)`` once when it loaded one; per image
    ``("prediction", key, ticket, prediction, seconds, uncertainty, decoded image,
    file fingerprint)`` (the fingerprint is computed here, so the series state never
    reads and hashes the file on the GUI thread), ``("compiling", key)`` before the first
    image when the deformable-attention kernel will be compiled for it (a minute or two,
    once per machine), ``("unusable", key, ticket, reason)`` (the file cannot be part of
    the series) or ``("failed", key, ticket, reason)``;
    ``("model_failed", reason, key)`` when the model cannot be loaded. A file whose
    pixels ``read_ahead`` already holds (read ahead for display) is not decoded again.
    """
    if predictor is None:
        control.set_stage(f"{LOADING} {key.describe()}")
        try:
            predictor = load(key, control)
        except Cancelled:
            return  # SharedModel stops the read, or drops the model it ends with
        except (ValueError, OSError, RuntimeError) as error:
            yield ("model_failed", gui_message(error), key)
            return
        yield ("model", predictor, key)
    first = True
    while (job := board.take()) is not None:
        item_key, ticket, source = job
        start = time.perf_counter()
        path = source if isinstance(source, Path) else None
        control.set_stage("segmenting")
        if first and (kind := predictor.device.type) in KINDS and first_build_ahead(kind):
            yield ("compiling", item_key)
        first = False
        try:
            image = source if path is None else read_ahead(item_key)
            image = load_series_image(path) if image is None else image
        except UnusableImageError as error:
            yield ("unusable", item_key, ticket, str(error))
            continue
        try:
            with watch_model(predictor.model, control):
                prediction = predictor.predict(image, tta=tta)
            score = uncertainty(prediction.probability)  # here: a 24-MP map takes 0.5 s
        except Cancelled:
            return
        except Exception as error:  # out of memory, say: this image fails, the next goes on
            yield ("failed", item_key, ticket, gui_message(error))
            continue
        if store is not None:
            with contextlib.suppress(OSError):  # a full disk only costs a recomputation
                store.save(item_key, path, prediction.probability, prediction.mask, score)
        board.done(item_key)
        seconds = time.perf_counter() - start
        # the decoded file goes along, so showing it later costs the GUI no decoding
        decoded = image if path is not None else None
        fingerprint = None
        if path is not None:
            with contextlib.suppress(OSError):  # gone since: the state keeps the last one
                fingerprint = file_fingerprint(path)
        yield ("prediction", item_key, ticket, prediction, seconds, score, decoded, fingerprint)


def _until_done(left: threading.Event, *args: Any) -> Generator[tuple, None, None]:
    """:func:`prefetch_job`, setting ``left`` when it returns (cancelled, failed or done)."""
    try:
        import_ahead_of_layers()
        yield from prefetch_job(*args)
    finally:
        left.set()


class Prefetcher:
    """One worker at a time over a :class:`JobBoard`; results go to ``on_message``.

    Each worker takes jobs from the board it was started with; switching the model or
    the series (:meth:`use_model`) cancels the running worker, gives the next one a new
    board, and drops whatever the old one still reports (its model, proposals, failed
    files): nothing of another model or series reaches the shown one."""

    def __init__(
        self,
        cache: PrefetchCache,
        on_message: Callable[[tuple], None],
        load: Callable[[ModelKey, RunControl], FocusPredictor] = load_alone,
        decoded: Callable[[str], np.ndarray | None] = lambda _key: None,
    ) -> None:
        self.cache = cache
        self.load = load  # the widget's shared loader: Run and this never load twice
        self.decoded = decoded  # pixels read ahead for display, by queue key
        self.board = JobBoard()
        self.on_message = on_message
        self.on_idle: Callable[[], None] = lambda: None
        self._closed = False  # napari closes: the end of a worker is not reported
        self.on_loading: Callable[[], None] = lambda: None  # loading started or ended
        self.loading: ModelKey | None = None  # the model the running worker loads
        self._worker: Any = None
        self._control: RunControl | None = None
        self._model_id: str | None = None
        self._generation = 0  # bumped when the model or series changes
        self._left: threading.Event | None = None  # set once the worker has returned
        self.store: ProposalStore | None = None
        self.tta = False  # proposals with test-time augmentation

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def use_model(self, key: ModelKey, series_folder: Path, tta: bool = False) -> bool:
        """Forget results of another model, TTA setting or series before planning with
        ``key``; True when there were such results to forget."""
        ident = f"{model_id(key, tta)}|{series_folder}"
        if ident == self._model_id:
            return False
        self.cache.release(*[job[0] for job in self.board.replace([])])
        self.cache.clear()
        if self._control is not None:
            self._control.cancel()  # its forward is of the other model or series
        self.board = JobBoard()
        self._generation += 1
        self._set_loading(None)
        self._model_id = ident
        self.tta = tta
        self.store = ProposalStore(series_folder, model_id(key, tta))
        return True

    def plan(self, jobs: list[tuple[str, int, Any]]) -> None:
        """Put ``jobs`` (claimed, nearest first) ahead of whatever was planned before,
        release the claims no longer planned; the running computation goes on."""
        keys = {job[0] for job in jobs}
        kept = [job for job in self.board.pending() if job[0] not in keys]
        dropped = self.board.replace([*jobs, *kept])
        self.cache.release(*[job[0] for job in dropped])

    def replan(self, wanted_keys: list[str]) -> None:
        """Keep only the pending jobs of ``wanted_keys``, in that order."""
        order = {key: i for i, key in enumerate(wanted_keys)}
        pending = sorted(
            (job for job in self.board.pending() if job[0] in order), key=lambda j: order[j[0]]
        )
        self.cache.release(*[job[0] for job in self.board.replace(pending)])

    def start(self, key: ModelKey, predictor: FocusPredictor | None) -> None:
        if self._worker is not None or not self.board.pending():
            return
        self._closed = False  # a close napari then cancelled (its own question) is over
        self._control = RunControl()
        self._left = threading.Event()
        worker = background(
            _until_done, self._left, key, predictor, self.board, self.store, self._control,
            self.tta, self.load, self.decoded,
        )  # fmt: skip
        generation = self._generation
        worker.yielded.connect(lambda message: self._deliver(generation, message))
        worker.errored.connect(
            lambda error: self._deliver(generation, ("model_failed", gui_message(error), key))
        )
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()
        if predictor is None:
            self._set_loading(key)

    def loading_stage(self) -> str | None:
        """The stage of the model load under way (a download's progress), else None."""
        control = self._control
        return control.snapshot()[0] if self.loading is not None and control else None

    def _set_loading(self, key: ModelKey | None) -> None:
        if key != self.loading:
            self.loading = key
            self.on_loading()

    def cancel_load(self) -> None:
        """Give up the model being loaded: the proposals planned are dropped, and what
        the worker still reports (the model, once its read ends) is not taken."""
        if self.loading is None or self._control is None:
            return
        self._control.cancel()
        self.cache.release(*[job[0] for job in self.board.replace([])])
        self.board = JobBoard()
        self._generation += 1
        self._set_loading(None)

    def _deliver(self, generation: int, message: tuple) -> None:
        if generation == self._generation:  # else: of a model or series left since
            if message[0] in ("model", "model_failed"):
                self._set_loading(None)
            self.on_message(message)

    def _on_finished(self) -> None:
        self._worker, self._control = None, None
        self._set_loading(None)
        self.cache.release(*[job[0] for job in self.board.replace([])])
        if not self._closed:
            self.on_idle()

    def stop(self, wait_s: float = 0.0) -> None:
        """Cancel the running computation and drop the plan; with ``wait_s`` (napari
        closes) wait that long for the worker to leave the model, so it never reports
        to a widget Qt has deleted."""
        self.cache.release(*[job[0] for job in self.board.replace([])])
        self._set_loading(None)
        if self._control is not None:
            self._control.cancel()
            if wait_s > 0 and self._left is not None:
                self._left.wait(wait_s)

    def close(self, wait_s: float) -> None:
        """napari closes: :meth:`stop`, and nothing the worker still signals (its last
        results, its end) reaches the widget, which Qt deletes next."""
        self.stop(wait_s)
        self._generation += 1
        self._closed = True

    def load_stored(self, item_key: str, path: Path | None) -> tuple[Prediction, float] | None:
        """A proposal of this model saved on disk earlier, as a prediction with its
        uncertainty, or None."""
        stored = self.store.load(item_key, path) if self.store is not None else None
        if stored is None:
            return None
        return Prediction(probability=stored.probability, mask=stored.mask), stored.uncertainty
