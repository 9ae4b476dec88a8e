"""What the user decides about the shown image of a series: Accept (export in a worker,
then the quality line, computed in a separate process), Reject, Skip, and ordering the queue
by uncertainty. Mixed into :class:`~napari_focus.gui.series_section.SeriesSection`."""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_info

from ..series import Status, export_record
from ..series.review import quality_text
from .proposal_layers import META_KEY


def _quality_in_a_process(pool: Any, *args: Any) -> str | None:
    """Worker-thread body: wait (GIL released) for the metrics computed in ``pool``; None
    when napari closed meanwhile (the pool was shut down)."""
    from concurrent.futures import CancelledError
    from concurrent.futures.process import BrokenProcessPool

    try:
        return pool.submit(quality_text, *args).result()
    except (CancelledError, BrokenProcessPool, RuntimeError):  # RuntimeError: shut down
        return None


class SeriesDecisions:
    """Accept / Reject / Skip / Order by uncertainty (needs the SeriesSection state)."""

    state: Any
    owner: Any
    quality: Any
    scores: dict[str, float]
    autosaves: Any
    _shown: str | None

    def accept(self) -> None:
        """Export the shown image and its mask (in a worker); when written: record it,
        show the quality line, go to the next image. A failed export keeps the mask."""
        if self.state is None or self._shown is None:
            return
        labels = self._proposal_labels()
        if labels is None:
            self._error("the proposal is not ready yet")
            return
        if self.owner.export_section.busy:
            return
        key = self._shown
        state = labels.metadata.get(META_KEY)
        if state:
            proposal = state["proposal"]
        else:  # a saved mask is shown: compare the model's own proposal, if it exists
            known = self._known_prediction(self.state.queue.item(key))
            proposal = known.mask if known is not None else None
        accepted = np.asarray(labels.data) > 0
        self.accept_button.enabled = False
        self.owner.export_section.export(
            on_done=lambda result: self._on_accept_exported(key, result, proposal, accepted)
        )

    def _on_accept_exported(
        self, key: str, result: Any, proposal: np.ndarray | None, accepted: np.ndarray
    ) -> None:
        self.accept_button.enabled = True
        if result is None or self.state is None:
            return  # the reason is on screen; the mask stays as it is
        item = self.state.queue.item(key)
        self.autosaves.forget(self.state, key)  # exported: its autosave goes, written or not
        try:
            self.state.record_accept(item.key, export_record(result))
        except OSError as error:
            self._error(self.close_guard.save_failure_text(error, "the series state"))
        self._report_quality(item, proposal, accepted)
        if self._shown == key:
            self._move(self._forward, keep_edits=False)

    def _report_quality(self, item: Any, proposal: np.ndarray | None, accepted: Any) -> None:
        reference = self._start_mask(item)
        against = "ground truth" if reference is not None else "your corrected mask"
        reference = accepted if reference is None else reference
        worker = thread_worker(_quality_in_a_process, start_thread=False)(
            self.metrics_pool(), item.name, proposal, reference, against
        )
        worker.returned.connect(self._show_quality)
        worker.finished.connect(lambda: self._quality_done(worker))
        self.quality.value = f"{item.name}: computing the quality…"
        self._quality_worker = worker  # kept alive until its line is shown
        worker.start()

    def _show_quality(self, text: str | None) -> None:
        if text is not None and getattr(self, "_metrics_pool", None) is not None:
            self.quality.value = text  # else napari closed: the widget is gone

    def _quality_done(self, worker: Any) -> None:
        if getattr(self, "_quality_worker", None) is worker:
            self._quality_worker = None

    def metrics_pool(self) -> Any:
        """One spawned process for the metrics, started on the first Accept."""
        pool = getattr(self, "_metrics_pool", None)
        if pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context("spawn")
            pool = self._metrics_pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
        return pool

    def shutdown_metrics(self) -> None:
        pool = getattr(self, "_metrics_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            self._metrics_pool = None

    @property
    def quality_pending(self) -> bool:
        return getattr(self, "_quality_worker", None) is not None  # until its line is shown

    def _mark_and_advance(self, status: Status) -> None:
        if self.state is None or self._shown is None:
            return
        try:
            self.state.mark(self._shown, status)
        except OSError as error:
            self._error(self.close_guard.save_failure_text(error, "the series state"))
        self._move(self._forward)

    def order_by_uncertainty(self) -> None:
        """Most doubtful proposals first (:func:`napari_focus.quality.uncertainty`).

        Images without a proposal yet are computed first, in the background; the
        queue is reordered when all have a score.
        """
        if self.state is None:
            return
        self._use_model()
        unscored = [
            item
            for item in self.state.queue
            if item.key not in self.scores
            and item.status is not Status.FAILED
            and not self._closed_layer(item)  # nor missing: not found, not unusable
        ]
        for item in list(unscored):
            score = self.prefetcher.stored_uncertainty(item.key, item.path)
            if score is not None:
                self.scores[item.key] = score
                unscored.remove(item)
        if not unscored:
            self._rank_wanted = False
            self.state.queue.order_by(self.scores, descending=True)
            self.state.save()
            self._show_position(self.state.queue.current)
            show_info(f"FOCUS: ordered {len(self.scores)} images by uncertainty")
            return
        self._rank_wanted = True
        jobs = [
            (item.key, ticket, self._source(item.key))
            for item in unscored
            if (ticket := self.cache.mark_in_flight(item.key)) is not None
        ]
        self.prefetcher.plan(self.prefetcher.board.pending() + jobs)
        self.owner.set_status(f"scoring {len(unscored)} images…")
        self.prefetcher.start(self.owner.model_key(), self.owner.loaded_predictor())
