"""The edits of the images the user leaves, written off the GUI thread.

Leaving an edited image copies its mask (a few milliseconds) and hands it to an
:class:`~napari_focus.series.autosave_writer.AutosaveWriter`, which encodes and writes
it while the next image is shown. Until it is written the edits are *pending*: kept in
memory, and shown from there when the user comes back. When written, the series state
records them (on the GUI thread) and they become the image's read-ahead autosave, so
coming back later reads nothing from disk either.

A write that fails (e.g. a full disk) is said in the widget's words; its edits stay
pending (shown when the user goes back) and are written again whenever an image is left,
which then waits for it: an image whose own edits cannot be written is not left, as
when autosaves were written on the GUI thread. Closing napari, the dock or the series
waits for every write (:meth:`BackgroundAutosaves.flush`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, Signal, Slot

from ..series.autosave_writer import AutosaveWriter

#: what a failed autosave tells the user when the image has been left already
KEPT_IN_MEMORY = (
    "They are kept: go back to that image to see them. Free some space, then go on: they "
    "are written again when you leave an image"
)


@dataclass
class PendingEdits:
    """An image's latest edits not yet written to the series folder."""

    state: Any  # the SeriesState they belong to
    key: str
    name: str  # the mask layer's name, for messages
    mask: np.ndarray  # bool (H, W)
    provenance: dict[str, Any] | None
    number: int  # the writer's job number
    error: Exception | None = None  # the last write failed so


class _Relay(QObject):
    """Brings the writer's "done" from its thread to the GUI thread."""

    done = Signal()

    def __init__(self, receive: Any) -> None:
        super().__init__()
        self.receive = receive
        self.done.connect(self._deliver)  # queued: emitted on the writer's thread

    @Slot()
    def _deliver(self) -> None:
        self.receive()


class BackgroundAutosaves:
    """The autosaves of a series section: written in the background, pending until then."""

    def __init__(self, section: Any) -> None:
        self.section = section
        self._relay = _Relay(self.collect)
        self.writer = AutosaveWriter(self._relay.done.emit)
        self.pending: dict[str, PendingEdits] = {}

    @property
    def busy(self) -> bool:
        """A write waits, runs, or its result has not been taken yet."""
        return self.writer.busy

    @property
    def failed(self) -> list[PendingEdits]:
        return [edits for edits in self.pending.values() if edits.error is not None]

    def submit(self, state: Any, key: str, name: str, mask: np.ndarray, provenance: Any) -> None:
        """Write ``mask`` (bool, a copy) as the autosave of ``key`` in the background."""
        job = self.writer.submit(key, state.autosave_path(key), mask, provenance, state)
        self.pending[key] = PendingEdits(state, key, name, mask, provenance, job.number)

    def edits_of(self, state: Any, key: str) -> PendingEdits | None:
        """The pending edits of ``key`` in series ``state``, if any."""
        edits = self.pending.get(key)
        return edits if edits is not None and edits.state is state else None

    def collect(self, report: bool = True) -> None:
        """Take the writer's results (GUI thread): record the written autosaves in their
        series state; keep failed edits pending (with ``report``: say so)."""
        for done in self.writer.take_done():
            job = done.job
            edits = self.pending.get(job.key)
            latest = edits if edits is not None and edits.number == job.number else None
            if done.error is not None:
                if latest is not None:  # else newer edits are on their way
                    latest.error = done.error
                    if report:
                        self.report(latest)
                continue
            try:
                job.owner.record_autosave(job.key)
            except KeyError:
                pass  # no longer in the queue (reopened without it)
            except OSError as error:
                guard = self.section.close_guard
                self.section._error(guard.save_failure_text(error, "the series state"))
            if latest is not None:
                del self.pending[job.key]
                self._keep_as_read_ahead(job, done.stamp)
            section = self.section
            if job.owner is section.state and job.key == section.shown_key:
                section._show_position(section.state.queue.current)  # now "corrected"

    def flush(self, retry: bool = True) -> list[PendingEdits]:
        """Wait for every write (GUI thread); with ``retry``, write the failed edits once
        more. Returns the edits still not written (not reported: the caller says why)."""
        self.writer.wait()
        self.collect(report=False)
        if retry and self.failed:
            for edits in self.failed:
                self.submit(edits.state, edits.key, edits.name, edits.mask, edits.provenance)
            self.writer.wait()
            self.collect(report=False)
        return self.failed

    def forget(self, state: Any, key: str) -> None:
        """``key``'s edits went another way (exported): wait for its writes, drop them."""
        self.writer.wait()
        self.collect()
        if self.edits_of(state, key) is not None:
            del self.pending[key]

    def report(self, edits: PendingEdits, kept: str = KEPT_IN_MEMORY) -> str:
        """Say that ``edits`` could not be written; returns the message."""
        assert isinstance(edits.error, Exception)
        error = edits.error
        if not isinstance(error, OSError):
            error = OSError(str(error))
        text = self.section.close_guard.save_failure_text(
            error, f"your edits of '{edits.name}'", kept=kept, folder=edits.state.output_folder
        )
        self.section._error(text)
        return text

    def _keep_as_read_ahead(self, job: Any, stamp: Any) -> None:
        """The mask just written is what the image's autosave file holds now."""
        section = self.section
        files = section.decoded.files(job.key) if job.owner is section.state else None
        if files is not None:
            section.decoded.put_files(
                job.key,
                dataclasses.replace(
                    files,
                    autosave_read=True,
                    autosave=job.mask,
                    autosave_stamp=stamp,
                    provenance=job.provenance if job.provenance is not None else files.provenance,
                ),
            )
