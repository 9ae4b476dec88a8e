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
from ..spawning import main_script_not_rerun
from .proposal_layers import META_KEY
from .workers import background


def _stored_scores(store: Any, items: list[tuple[str, Any]]) -> dict[str, float]:
    """Worker-thread body: the uncertainty of each item's stored proposal, where there is
    one of this version of its image."""
    found = {}
    for key, path in items:
        score = store.uncertainty(key, path)
        if score is not None:
            found[key] = score
    return found


def _quality_in_a_process(
    pool: Any, name: str, proposal: Any, reference: Any, against: str
) -> str | None:
    """Worker-thread body: wait (GIL released) for the metrics computed in ``pool``; None
    when napari closed meanwhile (the pool was shut down). ``proposal``: the mask, None,
    or what reads it (here, off the GUI thread)."""
    from concurrent.futures import CancelledError
    from concurrent.futures.process import BrokenProcessPool

    try:
        if callable(proposal):
            proposal = proposal()
        with main_script_not_rerun():  # the submit starts the process; an unguarded script
            future = pool.submit(quality_text, name, proposal, reference, against)
        return future.result()
    except (CancelledError, BrokenProcessPool):
        return None
    except RuntimeError as error:
        if "shutdown" in str(error):  # napari closed: the pool takes no more work
            return None
        return f"{name}: the quality could not be computed ({error})"
    except Exception as error:  # an unreadable proposal, a reference of another size...
        return f"{name}: the quality could not be computed ({error})"


class SeriesDecisions:
    """Accept / Reject / Skip / Order by uncertainty (needs the SeriesSection state)."""

    state: Any
    owner: Any
    quality: Any
    scores: dict[str, float]
    cache: Any
    decoded: Any
    prefetcher: Any
    autosaves: Any
    _shown: str | None
    _resetting: str | None

    def accept(self) -> None:
        """Export the shown image and its mask (in a worker); when written: record it,
        show the quality line, go to the next image. A failed export keeps the mask."""
        if self.state is None or self._shown is None:
            return
        labels = self._proposal_labels()
        if self._nothing_to_accept(labels):
            return
        if self.owner.export_section.busy or self.removing_sample:
            return
        key = self._shown
        shown = self._image_layer_for(key)
        if shown is not None and self.owner.image.value != shown.name:
            # the image the series shows, whatever layer was clicked since; that resets
            # the sample name to the layer's, so an accepted image's own comes back
            self.owner.image.value = shown.name
            recorded = (self.state.queue.item(key).export or {}).get("name")
            if recorded:
                self.owner.export_section.sample_name.value = recorded
        state = labels.metadata.get(META_KEY)
        # a saved mask is shown: compare the model's own proposal, if it exists
        proposal = state["proposal"] if state else self.own_proposal(labels)[0]
        accepted = np.asarray(labels.data) > 0
        self.accept_button.enabled = False
        self.owner.export_section.export(
            on_done=lambda result: self._on_accept_exported(key, result, proposal, accepted)
        )

    def _nothing_to_accept(self, labels: Any) -> bool:
        """Before its proposal, the shown image is accepted only with a mask painted by
        hand; else say why there is none (True) and what to do."""
        name = self.state.queue.item(self._shown).name
        if self._resetting == self._shown:
            self._wait_note(
                f"the proposal of {name} is on its way (Reset to proposal): wait for it"
            )
            return True
        if labels is None and self._awaiting != self._shown:  # the user closed the layer
            self._error(
                f"the mask layer of {name} was closed: go to another image and back to "
                "show its mask again (any edits of it were kept), then Accept"
            )
            return True
        waiting = labels is None or self._awaiting == self._shown
        if not waiting or (labels is not None and np.asarray(labels.data).any()):
            return False
        by_hand = "" if labels is None else " Or paint its mask by hand, then Accept."
        reason = self.no_proposal_reason()
        if reason is None:
            self._wait_note(
                f"the proposal of {name} is still being computed: wait for it.{by_hand}"
            )
        else:
            self._error(f"{name} has no proposal to accept: {reason.rstrip('.')}.{by_hand}")
        return True

    def _on_accept_exported(
        self, key: str, result: Any, proposal: Any, accepted: np.ndarray
    ) -> None:
        self.accept_button.enabled = True
        if result is None or self.state is None:  # the mask stays as it is
            if self.state is not None:  # the footer says why, as the Export tab does
                outcome = self.owner.export_section.result_label.value.removeprefix("error: ")
                self.owner.set_status(f"{self.state.queue.item(key).name} not accepted: {outcome}")
            return
        item = self.state.queue.item(key)
        self.autosaves.forget(self.state, key)  # exported: its autosave goes, written or not
        try:
            self.state.record_accept(item.key, export_record(result))
        except OSError as error:
            self._error(self.close_guard.save_failure_text(error, "the series state"))
        self._report_quality(item, proposal, accepted)
        if self._shown == key:
            self._move(self._forward, keep_edits=False)

    def _report_quality(self, item: Any, proposal: Any, accepted: Any) -> None:
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
        if self.state is None or self._shown is None or self.removing_sample:
            return
        if status is Status.REJECTED and self._reject_accepted():
            return  # its sample is taken out of the split first
        try:
            self.state.mark(self._shown, status)
        except OSError as error:
            self._error(self.close_guard.save_failure_text(error, "the series state"))
        self._move(self._forward)

    def order_by_uncertainty(self) -> None:
        """Most doubtful proposals first (:func:`napari_focus.quality.uncertainty`).

        The scores of proposals stored earlier are read in a worker (0.25 ms each, seconds
        for a large series); images without a proposal yet are then computed in the
        background; the queue is reordered when all have a score.
        """
        if self.state is None or self.reading_scores:
            return
        self._use_model()
        unscored = self._unscored()
        store = self.prefetcher.store
        if store is None or not unscored:
            self._rank(unscored)
            return
        worker = background(_stored_scores, store, [(item.key, item.path) for item in unscored])
        worker.returned.connect(lambda found: self._on_stored_scores(worker, store, found))
        # a store that cannot be read: the model scores every image instead
        worker.errored.connect(lambda _error: self._on_stored_scores(worker, store, {}))
        worker.finished.connect(lambda: self._scores_read(worker))
        self._score_reader = worker
        self.rank_button.enabled = False
        self.owner.set_status(f"reading the stored scores of {len(unscored)} images…")
        worker.start()

    @property
    def reading_scores(self) -> bool:
        """The stored scores are being read for an ordering by uncertainty."""
        return getattr(self, "_score_reader", None) is not None

    def stop_reading_scores(self) -> None:
        """What the stored scores' reader still reports is not taken (napari closes,
        another series opens); it ends by itself after its last file."""
        self._score_reader = None

    def _scores_read(self, worker: Any) -> None:
        if getattr(self, "_score_reader", None) is worker:
            self._score_reader = None
            self.rank_button.enabled = self.state is not None

    def _on_stored_scores(self, worker: Any, store: Any, found: dict[str, float]) -> None:
        if getattr(self, "_score_reader", None) is not worker or self.state is None:
            return
        if self.prefetcher.store is not store:  # another model since: ask again
            self.owner.set_status("the model changed: press Order by uncertainty again")
            return
        self.scores.update(found)
        self._rank(self._unscored())

    def _unscored(self) -> list[Any]:
        assert self.state is not None
        return [
            item
            for item in self.state.queue
            if item.key not in self.scores
            and item.status is not Status.FAILED
            and not self._closed_layer(item)  # nor missing: not found, not unusable
        ]

    def _rank(self, unscored: list[Any]) -> None:
        """Order the queue once every image has a score, else compute the missing ones."""
        assert self.state is not None
        if not unscored:
            self._rank_wanted = False
            self.state.queue.order_by(self.scores, descending=True)
            try:
                self.state.save()
            except OSError as error:  # the order stays on screen; saved with the next change
                self._error(self.close_guard.save_failure_text(error, "the series state"))
            self._show_position(self.state.queue.current)
            self.owner.set_status(f"ordered {len(self.scores)} images by uncertainty")
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
