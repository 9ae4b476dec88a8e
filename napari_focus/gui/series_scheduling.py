"""Planning the series' background work from what is on screen, and taking its
results (mixed into :class:`~napari_focus.gui.series_section.SeriesSection`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari.utils.notifications import show_warning

from ..ops.build import BUILD_STARTED
from ..series import needs_proposal


class SeriesScheduling:
    """The image on screen first, then the next ones; results kept when they arrive."""

    state: Any
    owner: Any
    cache: Any
    prefetcher: Any
    scores: dict[str, float]
    seconds: dict[str, float]
    decoded: Any
    _awaiting: str | None
    _resetting: str | None
    _opening: Any
    _shown: str | None
    _model_error: Any
    _load_declined: Any
    _rank_wanted: bool

    def _use_model(self) -> Any:
        assert self.state is not None
        key = self.owner.model_key()
        if self.prefetcher.use_model(key, self.state.output_folder, self.owner.tta.value):
            self.scores.clear()  # another model's doubts do not rank this one's proposals
        return key

    def _schedule(self) -> None:
        """Plan the image on screen first, then the next ones; start the worker if idle.
        A computation already running goes on (its result is kept)."""
        if self.state is None:
            return
        try:
            key = self._use_model()
        except ValueError as error:
            self._error(str(error))
            return
        if key == self._model_error and self.owner.loaded_predictor() is None:
            # said once; tried again when the Model tab changes or Run loads the model
            current = self.state.queue.current
            if current is not None and self._awaiting == current.key:
                self.owner.set_status(
                    f"no proposal for {current.name}: the model could not be loaded (see "
                    "the error); change the Model tab or press Run to try again"
                )
            return
        if key == self._load_declined and self.owner.loaded_predictor() is None:
            current = self.state.queue.current  # the user cancelled loading this model
            if current is not None and self._awaiting == current.key:
                self.owner.set_status(
                    f"no proposal for {current.name}: loading the model was cancelled; "
                    "press Run to load it"
                )
            return
        queue = self.state.queue
        current = queue.current.key if queue.current else None
        store = self.prefetcher.store

        def wanted(item: Any) -> bool:
            if self._closed_layer(item):
                return False
            if store is not None and item.path is not None and store.has(item.key):
                return item.key == current and self._awaiting == current
            if item.key == current:  # shown with a saved mask: no proposal needed
                return self._awaiting == current
            return self.prefetch.value and needs_proposal(item)

        window = self.cache.window(queue)
        self.prefetcher.replan([k for k in window if wanted(queue.item(k))])
        jobs = self.cache.schedule(queue, wanted=wanted)
        if jobs:
            self.prefetcher.plan([(k, ticket, self._source(k)) for k, ticket in jobs])
        self.prefetcher.start(key, self.owner.loaded_predictor())

    def _on_prefetched(self, message: tuple) -> None:
        kind = message[0]
        if kind == "model":
            self.owner.adopt_predictor(message[2], message[1])  # kept for the key it was loaded for
        elif kind == "model_failed":
            self._model_error, self._model_error_text = message[2], message[1]
            self._error(message[1])
            self.reset_gave_up(self.no_proposal_reason() or message[1])
        elif kind == "compiling":
            if message[1] == self._awaiting:
                name = self.state.queue.item(message[1]).name if self.state else message[1]
                self.owner.set_status(
                    f"computing the proposal of {name}: first {BUILD_STARTED}, a minute or "
                    "two…"
                )
        elif kind in ("unusable", "failed"):
            _, key, ticket, text = message
            self.cache.fail(key, ticket)
            self.scores[key] = float("nan")
            if kind == "unusable":
                self._mark_unusable(key, text)
            else:
                self._error(f"{key}: {text}")
            if key == self._awaiting:
                self.owner.set_status(f"error: {text}")
            if key == self._resetting:
                self.reset_gave_up(text)
        else:
            _, key, ticket, prediction, seconds, score, decoded, fingerprint = message
            if fingerprint is not None and self.state is not None:
                self.state.take_fingerprint(key, fingerprint)
            if decoded is not None:
                self.decoded.put(key, decoded)
                if self._opening is None and self._shown is not None:
                    self._read_ahead()  # its series files, if it is a neighbour
            self.seconds[key] = seconds
            self.scores[key] = score
            if self.cache.store(key, prediction, ticket) and key == self._awaiting:
                layer = self._image_layer_for(key)
                if layer is not None:  # else closed while its proposal was computed
                    self._show_prediction(layer, key, prediction)

    def _mark_unusable(self, key: str, reason: str) -> None:
        assert self.state is not None
        try:
            self.state.mark_failed(key, reason)
        except OSError as error:
            self.state.queue.mark_failed(key, reason)
            self._error(self.close_guard.save_failure_text(error, "the series state"))
        named = reason.startswith(Path(key).name)  # "x.png is not an image file ..."
        said = f"{reason} (skipped)" if named else f"skipped {key}: {reason}"
        show_warning(f"FOCUS series: {said}")
        current = self.state.queue.current
        if current is not None and current.key == self._shown:  # its line counts the failed
            self._show_position(current)

    def _on_prefetch_idle(self) -> None:
        if self._rank_wanted:
            self.order_by_uncertainty()
        self._schedule()
