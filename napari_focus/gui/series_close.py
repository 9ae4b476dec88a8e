"""Nothing the user painted is lost: autosave with a message in the widget's words when
it fails, and a warning before napari closes with edits that cannot be saved."""

from __future__ import annotations

import sys
import weakref
from typing import Any

import numpy as np
from napari.utils.notifications import show_error
from qtpy.QtCore import QEvent, QObject

from .proposal_layers import META_KEY, is_edited
from .series_autosave import KEPT_IN_MEMORY
from .series_layers import PROVENANCE_KEY

#: how long closing napari waits for a cancelled proposal (one model stage: under 2 s
#: for FOCUS-L on a CPU) before the window goes
CLOSE_WAIT_S = 5.0
STILL_ON_SCREEN = (
    "Your edits are still in the viewer: free some space (or choose another series "
    "folder), then try again"
)
PROVENANCE_FIELDS = (
    "task", "weights_task", "size", "weights", "device", "tta", "refinement", "source_image"
)


def provenance_of(labels: Any) -> dict[str, Any] | None:
    """Where a mask came from (model, task, refinement), to keep through an autosave."""
    state = labels.metadata.get(META_KEY)
    if isinstance(state, dict):
        return {k: state.get(k) for k in PROVENANCE_FIELDS}
    saved = labels.metadata.get(PROVENANCE_KEY)
    return dict(saved) if isinstance(saved, dict) else None


class CloseGuard:
    """Autosaves for a series section; watches napari's main window for closing."""

    def __init__(self, section: Any) -> None:
        self.section = section
        self._filter: Any = None
        self.last_failure: str | None = None

    def save_failure_text(
        self, error: OSError, what: str, kept: str = STILL_ON_SCREEN, folder: Any = None
    ) -> str:
        if folder is None:
            state = self.section.state
            folder = state.output_folder if state else "the series folder"
        reason = getattr(error, "reason", None) or error.strerror or str(error)
        return f"could not save {what} in {folder}: {reason}. {kept}"

    def autosave(self, labels: Any) -> bool:
        """Save the shown mask's edits and wait for every autosave under way; False (and
        a message) when these edits, or others left earlier, cannot be saved."""
        self.submit(labels)
        return self.settle(self.section.shown_key, wait=True)

    def submit(self, labels: Any) -> None:
        """Have the shown mask's edits written in the background (copied here)."""
        section = self.section
        mask = np.asarray(labels.data) > 0
        section.autosaves.submit(
            section.state, section.shown_key, labels.name, mask, provenance_of(labels)
        )

    def settle(self, key: str | None, wait: bool) -> bool:
        """After leaving image ``key`` (None: its mask was not edited): with ``wait``, or
        while earlier autosaves failed, wait for the writes (the failed ones written
        again). False (and a message) when ``key``'s edits, or with ``wait`` any, are
        still not written; the edits stay on screen and in memory."""
        autosaves = self.section.autosaves
        if not wait and not autosaves.failed:
            return True
        failed = autosaves.flush()
        self.last_failure = None
        for edits in failed:
            text = autosaves.report(edits, self._kept(edits, key))
            self.last_failure = self.last_failure or text
        return not failed if wait else all(edits.key != key for edits in failed)

    def unsaved_labels(self) -> Any:
        labels = self.section._proposal_labels()
        if labels is None or self.section.state is None or self.section.shown_key is None:
            return None
        return labels if is_edited(labels) else None

    def on_layer_removing(self, event: Any) -> None:
        labels = self.unsaved_labels()
        removed = self.section.viewer.layers[event.index]
        # by name: the viewer proxy npe2 gives plugins wraps layers anew on each access
        if labels is not None and removed.name == labels.name and not self.autosave(labels):
            print(f"napari-focus: {self.last_failure}", file=sys.stderr)

    # --- closing napari -------------------------------------------------------------
    def install(self) -> None:
        """Watch the window the widget is docked in (once)."""
        if self._filter is not None:
            return
        window = self.section.native.window()
        if window is None or window is self.section.native:
            return
        self._filter = _CloseFilter(self)
        window.installEventFilter(self._filter)

    def allow_close(self) -> bool:
        """Save the edits before napari closes (and wait for those of the images left
        before); if that fails, ask whether to close."""
        labels = self.unsaved_labels()
        if labels is not None:
            self.submit(labels)
        failed = self.section.autosaves.flush()
        if not failed:
            self._stop_workers()
            return True
        from . import dialogs

        key = self.section.shown_key
        self.last_failure = self.section.autosaves.report(failed[0], self._kept(failed[0], key))
        names = ", ".join(f"'{edits.name}'" for edits in failed)
        question = f"{self.last_failure}.\n\nClose napari anyway and lose your edits of {names}?"
        if dialogs.ask_yes_no(self.section.native, question):
            self._stop_workers()
            return True
        show_error(f"FOCUS series: {self.last_failure}")
        return False

    def _kept(self, edits: Any, key: str | None) -> str:
        on_screen = edits.key == key and edits.state is self.section.state
        return STILL_ON_SCREEN if on_screen else KEPT_IN_MEMORY

    def on_undocked(self) -> None:
        """The widget left napari's window (the × of its dock): keep the shown image's
        edits and let go of the series, so that a FOCUS widget opened again finds them
        saved and no job of this one reports to it any more."""
        section = self.section
        labels = self.unsaved_labels()
        if labels is not None:
            self.submit(labels)
        for edits in section.autosaves.flush():  # the edits of every image left, written
            text = section.autosaves.report(edits, self._kept(edits, section.shown_key))
            print(f"napari-focus: {text}", file=sys.stderr)
        section.viewer.layers.events.removing.disconnect(self.on_layer_removing)
        self._filter = None  # deleted with its last reference: Qt then stops calling it
        section.loader.close(wait_s=0)  # a series still opening is shown nowhere
        if section.state is not None:
            self._stop_workers(wait_s=0)  # a cancelled proposal ends on its own
        section.state = None

    def _stop_workers(self, wait_s: float = CLOSE_WAIT_S) -> None:
        self.section.loader.close(wait_s)  # a series still opening: its scan stops
        self.section.reader.reset()  # a file still being read reports to nobody
        self.section.stop_reading_scores()
        self.section.stop_reading_proposal()
        self.section.prefetcher.close(wait_s=wait_s)
        self.section.shutdown_metrics()
        self.section.leave_presence()


class _CloseFilter(QObject):
    """Asks the guard before napari's main window closes."""

    def __init__(self, guard: CloseGuard) -> None:
        super().__init__()
        self.guard = guard

    def eventFilter(self, _watched: Any, event: Any) -> bool:
        if event.type() == QEvent.Type.Close and not self.guard.allow_close():
            event.ignore()
            return True
        return False


class UndockWatch(QObject):
    """Calls ``on_undocked`` once when ``widget`` leaves the dock it was put in: napari's
    × on a plugin dock takes the widget out (its parent becomes None), it is not closed."""

    def __init__(self, widget: Any, on_undocked: Any) -> None:
        super().__init__()  # held by the owner of ``on_undocked``: no cycle through Qt
        self.on_undocked = weakref.WeakMethod(on_undocked)
        self._docked = widget.parent() is not None
        widget.installEventFilter(self)

    def eventFilter(self, watched: Any, event: Any) -> bool:
        if event.type() == QEvent.Type.ParentChange:
            if watched.parent() is not None:
                self._docked = True
            elif self._docked:
                self._docked = False
                on_undocked = self.on_undocked()
                if on_undocked is not None:
                    on_undocked()
        return False
