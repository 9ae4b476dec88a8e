"""The model's own proposal of a series image shown with another mask (its autosaved
edits, or its start mask), for **Reset to proposal** and for what **Accept** compares
(the export's provenance and the quality line). It comes from memory (the proposals'
cache, or the files read ahead with the image), else from the series folder, read in a
worker: a 24-MP stored proposal is about 50 MB, 80-90 ms to read. Mixed into
:class:`~napari_focus.gui.series_section.SeriesSection`."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ..mask_ops import Refinement, refine
from ..predictor import Prediction
from ..series import Status
from . import dialogs
from .proposal_layers import META_KEY, is_edited
from .series_layers import (
    PROVENANCE_KEY,
    ROLE_KEY,
    SERIES_KEY,
    START_KEY,
    lock_mask_layer,
    unlock_mask_layer,
)
from .workers import background

#: what Accept and Reset say when the shown image has no proposal and none is coming
NO_MODEL = "the model could not be loaded: {reason}"
DECLINED = "loading the model was cancelled; press Run to load it"


def _refinement(recorded: Any) -> Refinement | None:
    """The refinement an autosave recorded; None when it is the model's own mask."""
    try:
        refinement = Refinement(**recorded) if isinstance(recorded, dict) else None
    except TypeError:  # written by another version: the model's own mask
        return None
    return None if refinement == Refinement() else refinement


def as_shown(prediction: Any, refinement: Refinement | None) -> np.ndarray:
    """The model's mask as the user saw it: refined as recorded (worker thread)."""
    if refinement is None:
        return prediction.mask
    return refine(prediction.probability, prediction.mask, refinement)


def read_stored(store: Any, key: str, path: Any) -> tuple[Prediction, float] | None:
    """Worker-thread body: the proposal stored for ``key``, with its uncertainty."""
    stored = store.load(key, path)
    if stored is None:
        return None
    return Prediction(probability=stored.probability, mask=stored.mask), stored.uncertainty


class ReadOnce:
    """What reads a proposal, reading it once for both of Accept's workers (the
    export's, then the quality's)."""

    def __init__(self, read: Callable[[], Any]) -> None:
        self._read: Callable[[], Any] | None = read
        self._value: Any = None
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            if self._read is not None:
                self._value, self._read = self._read(), None
            return self._value


class SeriesProposal:
    """The shown image's model proposal when its mask came from elsewhere."""

    state: Any
    owner: Any
    viewer: Any
    cache: Any
    decoded: Any
    prefetcher: Any
    autosaves: Any
    scores: dict[str, float]
    _shown: str | None
    _awaiting: str | None
    _locked_mode: str | None
    _model_error: Any
    _load_declined: Any

    # ------------------------------------------------------------ accept
    def own_proposal(self, labels: Any) -> tuple[Any, bool]:
        """For Accept and Export of the shown image whose mask came from an autosave or
        a start mask: ``(proposal, made_from_it)``. ``proposal`` is the model's mask as
        it was shown (refined as the autosave recorded), what reads it in a worker, or
        None; ``made_from_it``: the mask shown was drawn from that proposal (an autosave
        of edits made on this model's proposal), so the export compares it."""
        if self.state is None or self._shown is None or self._proposal_labels() is not labels:
            return None, False
        start, store = labels.metadata.get(START_KEY), self.prefetcher.store
        memo = getattr(self, "_own_memo", None)
        if memo is not None and memo[0] == self._shown and memo[1] is start and memo[2] is store:
            return memo[3], memo[4]  # read once for the export and the quality line
        provenance = labels.metadata.get(PROVENANCE_KEY)
        provenance = provenance if isinstance(provenance, dict) else {}
        item = self.state.queue.item(self._shown)
        proposal = self._own_mask(item, _refinement(provenance.get("refinement")))
        made_from = self._same_model(provenance)
        self._own_memo = (self._shown, start, self.prefetcher.store, proposal, made_from)
        return proposal, made_from

    def _same_model(self, provenance: dict) -> bool:
        try:
            key = self.owner.model_key()
        except ValueError:
            return False
        return (
            provenance.get("task") == key.task
            and provenance.get("weights") == key.weights_id
            and bool(provenance.get("tta")) == bool(self.owner.tta.value)
        )

    def _own_mask(self, item: Any, refinement: Refinement | None = None) -> Any:
        """The model's own mask of ``item`` (refined with ``refinement``) when it is in
        memory, else what reads the one stored in the series folder in a worker."""
        try:
            self._use_model()  # proposals of other settings are not compared
        except ValueError:
            return None
        if self.cache.get(item.key) is not None or self._read_ahead_current(item):
            known = self._known_prediction(item)  # nothing read from disk here
            if known is None or refinement is None:
                return None if known is None else known.mask
            return ReadOnce(lambda: as_shown(known, refinement))
        store, key, path = self.prefetcher.store, item.key, item.path
        if store is None:
            return None

        def read() -> np.ndarray | None:
            found = read_stored(store, key, path)
            return None if found is None else as_shown(found[0], refinement)

        return ReadOnce(read)

    def no_proposal_reason(self) -> str | None:
        """Why no proposal is coming for the shown image (the model failed to load, its
        loading was cancelled, no model chosen); None when one is on its way."""
        try:
            key = self.owner.model_key()
        except ValueError as error:
            return str(error)
        if key == self._model_error and self.owner.loaded_predictor() is None:
            reason = getattr(self, "_model_error_text", None) or "choose other weights"
            return NO_MODEL.format(reason=reason)
        if key == self._load_declined and self.owner.loaded_predictor() is None:
            return DECLINED
        return None

    # ------------------------------------------------------------- reset
    @property
    def reading_proposal(self) -> bool:
        """The stored proposal is being read for Reset to proposal."""
        return getattr(self, "_reset_reader", None) is not None

    def stop_reading_proposal(self) -> None:
        """What the reader of a stored proposal still reports is not taken (napari
        closes, the widget is deleted); it ends by itself after its file."""
        self._reset_reader = None

    def reset_to_proposal(self, labels: Any) -> bool:
        """Reset to proposal on the series' mask of the shown image when it came from an
        autosave or a start mask: after one question, the model's proposal (from memory,
        read in a worker, or computed) replaces it and its autosave goes. False when
        ``labels`` is not such a mask."""
        if self.state is None or self._shown is None or self._proposal_labels() is not labels:
            return False
        item = self.state.queue.item(self._shown)
        if self._awaiting == item.key or self.reading_proposal:
            reason = self.no_proposal_reason() if self._awaiting == item.key else None
            if reason is not None:
                self._error(f"no proposal of {item.name} to reset to: {reason}")
            else:
                self.owner.set_status(f"the proposal of {item.name} is on its way")
            return True
        autosaved = item.autosaved or self.autosaves.edits_of(self.state, item.key) is not None
        if autosaved or is_edited(labels):
            question = f"Throw away your edits of '{labels.name}' and go back to the proposal?"
            kept = "kept your edits"
        else:
            question = f"Replace the start mask of '{labels.name}' with the model's proposal?"
            kept = "kept the start mask"
        if not dialogs.ask_yes_no(self.native, question):
            self.owner.set_status(kept)
            return True
        self._resetting = item.key
        with contextlib.suppress(ValueError):  # no model chosen: said when none is found
            self._use_model()  # the store of the model chosen now
        store = self.prefetcher.store
        if self.cache.get(item.key) is not None or self._read_ahead_current(item):
            prediction = self._known_prediction(item)  # nothing read from disk here
            if prediction is not None and self._fits(prediction):
                self._show_reset(item, prediction)
                return True
        elif store is not None:
            self._read_for_reset(item, store)
            return True
        self._compute_for_reset(item)
        return True

    def propose_shown_again(self) -> bool:
        """Other weights chosen: the shown image's proposal, if it is on screen as the
        model made it (no edits, no saved or start mask), is computed again with them,
        the mask locked meanwhile. False when the mask on screen stays."""
        if self.state is None or self._shown is None or self.reading_proposal:
            return False
        labels = self._proposal_labels()
        item = self.state.queue.item(self._shown)
        if labels is None or META_KEY not in labels.metadata or self._awaiting == item.key:
            return False
        if item.status is Status.ACCEPTED or self._image_layer_for(item.key) is None:
            return False
        if item.autosaved or self.autosaves.edits_of(self.state, item.key) is not None:
            return False
        if is_edited(labels):
            return False
        self.cache.invalidate(item.key)
        self._resetting = item.key  # a model that fails unlocks the mask, as for Reset
        self._compute_for_reset(item)
        return self._awaiting == item.key

    def _fits(self, prediction: Any) -> bool:
        labels = self._proposal_labels()
        return labels is not None and prediction.mask.shape == tuple(labels.data.shape[-2:])

    def _read_for_reset(self, item: Any, store: Any) -> None:
        worker = background(read_stored, store, item.key, item.path)
        worker.returned.connect(lambda found: self._on_reset_read(worker, item.key, found))
        worker.errored.connect(lambda _error: self._on_reset_read(worker, item.key, None))
        worker.finished.connect(lambda: self._reset_read_done(worker))
        self._reset_reader = worker
        self._lock_for_reset()
        self.owner.set_status(f"reading the proposal of {item.name}…")
        self.owner.update_enabled()
        worker.start()

    def _reset_read_done(self, worker: Any) -> None:
        if getattr(self, "_reset_reader", None) is worker:
            self._reset_reader = None

    def _on_reset_read(self, worker: Any, key: str, found: Any) -> None:
        if getattr(self, "_reset_reader", None) is not worker:
            return
        self._reset_reader = None
        if self.state is None or self._shown != key or getattr(self, "_resetting", None) != key:
            return  # the user went on meanwhile: the image shown then unlocked the mask
        item = self.state.queue.item(key)
        if found is not None and self._fits(found[0]):
            prediction, self.scores[key] = found
            ticket = self.cache.mark_in_flight(key)
            if ticket is not None:  # kept in memory, as a computed one
                self.cache.store(key, prediction, ticket)
            self._show_reset(item, prediction)
        else:
            self._compute_for_reset(item)

    def _compute_for_reset(self, item: Any) -> None:
        """No proposal stored: the model computes it, the mask locked meanwhile; when
        no model can, the button says so and the mask stays."""
        reason = self.no_proposal_reason()
        if reason is not None:
            self.reset_gave_up(reason)
            return
        if item.key not in self.cache.in_flight:  # else its result is on its way
            self.cache.invalidate(item.key)  # computed once, but its stored file is gone
        self._awaiting = item.key
        self._lock_for_reset()
        self.owner.set_status(f"computing the proposal of {item.name}…")
        self.owner.update_enabled()
        self._schedule()

    def reset_gave_up(self, reason: str) -> None:
        """No proposal comes for the reset under way (the model failed to load, its
        loading was cancelled, the image could not be segmented): the mask stays as it
        was, editable again, and the button says why."""
        key = getattr(self, "_resetting", None)
        if key is None or self.state is None or key != self._shown:
            return
        self._resetting = None
        if self._awaiting == key:
            self._awaiting = None  # the saved mask stays the one shown
        self.reset_shown(key)  # unlocked
        name = self.state.queue.item(key).name
        self._error(f"no proposal of {name} to reset to: {reason}")
        self.owner.update_enabled()

    def _lock_for_reset(self) -> None:
        if self._locked_mode is None:
            self._locked_mode = lock_mask_layer(self.viewer)

    def _show_reset(self, item: Any, prediction: Prediction) -> None:
        """Show the model's proposal instead of the saved mask; its autosave goes."""
        labels = self._proposal_labels()
        layer = self._image_layer_for(item.key)
        if labels is None or layer is None:
            return
        labels.metadata = {SERIES_KEY: item.key, ROLE_KEY: "labels"}  # no start mask now
        self._show_prediction(layer, item.key, prediction)

    def reset_shown(self, key: str) -> None:
        """A proposal is on screen for ``key`` (called by the display): finish a reset
        of it, if one was asked for: the mask unlocked, the autosave discarded."""
        if self._locked_mode is not None:
            unlock_mask_layer(self.viewer, self._locked_mode)
            self._locked_mode = None
        if getattr(self, "_resetting", None) != key or self.state is None:
            return
        self._resetting = None
        item = self.state.queue.item(key)
        self.autosaves.forget(self.state, key)
        try:
            if item.autosaved:
                self.state.discard_autosaved(key)
            if item.status is Status.CORRECTED:
                self.state.mark(key, Status.PROPOSED)
        except OSError as error:
            self._error(self.close_guard.save_failure_text(error, "the series state"))
        self._show_position(self.state.queue.current)
        labels = self._proposal_labels()
        name = labels.name if labels is not None else item.name
        self.owner.set_status(f"'{name}' reset to the proposal")
