"""Reject on an image accepted before: its sample is in a training split, where Improve
trains on it. The user is asked whether to take it out of the split; Yes removes it (in
a worker: another export may hold the split's lock), then rejects the image and moves
on; No rejects it and says that the sample stays. Mixed into
:class:`~napari_focus.gui.series_section.SeriesSection`."""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_info

from ..datasets import ExportError, ExportWriteError, remove_sample, root_of_export
from ..series import Status
from . import dialogs
from .workers import background


class SeriesUnaccept:
    """Reject of an accepted image (needs the SeriesSection state)."""

    state: Any
    owner: Any
    native: Any
    reject_button: Any
    close_guard: Any
    _shown: str | None
    _error: Any
    _move: Any
    _forward: Any

    def _reject_accepted(self) -> bool:
        """Ask about the shown image's sample when it was accepted into a split; True
        when the rejection goes on in a worker (the caller does nothing more)."""
        item = self.state.queue.item(self._shown)
        record = item.export or {}
        if item.status is not Status.ACCEPTED or not record.get("name"):
            return False
        image = self.state.exported_mask_path(item.key, "image")
        root = root_of_export(str(record.get("layout", "")), image) if image else None
        if root is None:  # an export record of another form: nothing to point at
            return False
        sample, layout = record["name"], record["layout"]
        where = f"the {layout} split of {root}"
        question = (
            f"{item.name} was accepted: its sample '{sample}' is in {where}, and Improve "
            f"trains on it.\n\nTake '{sample}' out of the split?"
        )
        if not dialogs.ask_yes_no(self.native, question, default_yes=True):
            show_info(f"FOCUS series: {item.name} is rejected; '{sample}' stays in {where}")
            return False
        key, state = item.key, self.state  # another series may be open when it ends
        worker = background(remove_sample, root, layout, sample)
        worker.returned.connect(lambda _removed: self._taken_out(state, key))
        worker.errored.connect(lambda error: self._not_taken_out(state, sample, error))
        self._removing = worker
        self.reject_button.enabled = False
        self.owner.set_status(f"taking '{sample}' out of {where}…")
        worker.start()
        return True

    @property
    def removing_sample(self) -> bool:
        return getattr(self, "_removing", None) is not None

    def _taken_out(self, state: Any, key: str) -> None:
        """Recorded in the series it was asked in (saved into its folder), which moves
        on only if it is still the one shown."""
        self._removing = None
        self.reject_button.enabled = True
        try:
            state.record_taken_out(key)
        except OSError as error:
            self._error(self.close_guard.save_failure_text(error, "the series state"))
        if self.state is state and self._shown == key:
            self._move(self._forward)

    def _not_taken_out(self, state: Any, sample: str, error: BaseException) -> None:
        self._removing = None
        self.reject_button.enabled = True
        if isinstance(error, ExportWriteError) and "next export" in str(error):
            self._error(  # committed: the split no longer lists it
                f"'{sample}' was taken out of the split, but not all its files yet ({error}); "
                "press Reject again to record it"
            )
            return
        reason = str(error) if isinstance(error, ExportError | OSError) else repr(error)
        self._error(
            f"'{sample}' was not taken out of the split ({reason}); the image stays "
            "accepted: press Reject again to retry"
        )
