"""Opening a series without freezing napari (mixed into
:class:`~napari_focus.gui.series_section.SeriesSection`).

**Open folder** (or **Queue open layers**) keeps the edits of the image on screen first,
on the GUI thread, then a worker scans the folder, reads (or repairs) the series state
and matches the autosaves and exports: on a network drive, or with 100,000 files, that
takes seconds. Meanwhile the status line counts the images found, both Open buttons
wait, and the footer's Cancel stops it. The series arrives on the GUI thread, which
alone replaces the layers.

One open at a time: another open asked for meanwhile (e.g. by `napari-focus annotate`)
stops the scan under way at its next count, and the later choice is the one opened;
what the earlier worker still reports is dropped. Closing the dock or napari drops it
too, and napari waits a moment for the worker to leave (:meth:`SeriesLoader.close`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import QTimer

from ..run_control import Cancelled, RunControl
from ..series import SeriesState, SeriesStateError, load_or_create
from .fields import chosen_dir
from .job import gui_message, import_ahead_of_layers
from .planes import UnsupportedLayerError, layer_planes
from .workers import background

#: how often the status line takes the count of images found while a series opens
STAGE_TICK_MS = 200

#: ``(series state, None)``, or ``(None, what went wrong, in the widget's words)``
Loaded = tuple[SeriesState | None, str | None]


def cannot_keep_text(error: OSError) -> str:
    """An :class:`OSError` while opening a series (e.g. images on a read-only drive)."""
    where = error.filename or "the series folder"
    return (
        f"cannot keep the series in {where}: {error.strerror or error}. Choose a "
        "'series folder' you can write to, then press Open folder again"
    )


def load_series(
    load: Callable[[Callable[[int], None]], SeriesState],
    control: RunControl,
    what: str,
    left: threading.Event,
) -> Loaded:
    """Worker body: ``load(found)``, ``found`` counting the images in ``control``'s stage
    and stopping the scan once ``control`` is cancelled. Sets ``left`` when it ends."""

    def found(count: int) -> None:
        control.check()
        control.set_stage(f"{what}: {count} images found…")

    try:
        import_ahead_of_layers()  # the first image's layers follow
        return load(found), None
    except Cancelled:
        return None, None  # nobody waits for it
    except (SeriesStateError, ValueError) as error:
        return None, str(error)
    except OSError as error:
        return None, cannot_keep_text(error)
    finally:
        left.set()


class SeriesLoader:
    """One worker at a time opening a series; the open asked for last is the one that
    reports (to its ``on_done``, on the GUI thread), and ``on_stage`` follows it."""

    def __init__(self, on_stage: Callable[[str], None], widget: Any = None) -> None:
        self.on_stage = on_stage
        self._worker: Any = None
        self._waiting: Callable[[], None] | None = None  # the open asked for, not started
        self._control: RunControl | None = None  # of the open wanted now
        self._left = threading.Event()  # the running worker ended its body
        self._left.set()
        self._closed = False
        self._shown_stage: str | None = None
        self._tick = QTimer(widget)  # deleted with the widget: never ticks after it
        self._tick.setInterval(STAGE_TICK_MS)
        self._tick.timeout.connect(self._show_stage)

    @property
    def busy(self) -> bool:
        """A worker runs (maybe one whose open was cancelled) or an open waits for it."""
        return self._worker is not None or self._waiting is not None

    @property
    def wanted(self) -> bool:
        """An open is under way, neither done nor cancelled."""
        return self._control is not None

    def load(
        self,
        load: Callable[[Callable[[int], None]], SeriesState],
        what: str,
        on_done: Callable[[SeriesState | None, str | None], None],
    ) -> None:
        """Open a series with ``load(found)`` in a worker (after the running one, which
        is cancelled); ``what`` says it in the status line ("opening <folder>")."""
        self._closed = False  # a close napari then cancelled (its own question) is over
        self.cancel()
        control = RunControl()
        control.set_stage(f"{what}…")
        self._control = control

        def deliver(result: Loaded) -> None:
            if self._control is control and not self._closed:
                self._control = None
                self._tick.stop()
                on_done(*result)

        def start() -> None:
            worker = background(load_series, load, control, what, self._left)
            worker.returned.connect(deliver)
            worker.errored.connect(lambda error: deliver((None, gui_message(error))))
            worker.finished.connect(self._on_finished)
            self._worker = worker
            self._left.clear()
            worker.start()

        self._waiting = start
        self._shown_stage = None
        self._show_stage()
        self._tick.start()
        self._start_waiting()

    def cancel(self) -> bool:
        """Stop the open under way (its scan stops at the next count; nothing it finds
        is shown). False when none was."""
        control, self._control = self._control, None
        self._waiting = None
        if control is not None:
            control.cancel()
        with contextlib.suppress(RuntimeError):  # when napari closes, Qt may have deleted it
            self._tick.stop()
        return control is not None

    def close(self, wait_s: float) -> None:
        """The widget goes: cancel, report nothing more, wait up to ``wait_s`` for the
        worker to leave."""
        self._closed = True
        self.cancel()
        self._left.wait(wait_s)

    def _start_waiting(self) -> None:
        if self._worker is None and self._waiting is not None:
            start, self._waiting = self._waiting, None
            start()

    def _on_finished(self) -> None:
        self._worker = None
        if not self._closed:
            self._start_waiting()  # asked for while the last worker was leaving

    def _show_stage(self) -> None:
        if self._control is None or self._closed:
            return
        stage = self._control.snapshot()[0]
        if stage != self._shown_stage:
            self._shown_stage = stage
            self.on_stage(stage)


class SeriesStarting:
    """Open folder and Queue open layers: the series loaded in a worker, then shown."""

    owner: Any
    viewer: Any
    state: Any
    loader: SeriesLoader
    close_guard: Any
    folder: Any
    output: Any
    recursive: Any
    pattern: Any
    references: Any
    open_button: Any
    layers_button: Any
    jump_to: Any
    cache: Any
    reader: Any
    decoded: Any
    scores: dict
    seconds: dict
    _awaiting: str | None
    _model_error: Any
    _load_declined: Any

    def open(self, folder: str | Path | None = None) -> None:
        """Queue the images of a folder (state in the series folder, default
        ``<folder>/napari_focus``), resuming where the last session stopped. Returns at
        once: the folder is scanned in a worker, the series shown when it is loaded
        (:attr:`loader` is busy until then)."""
        chosen = Path(folder) if folder else chosen_dir(self.folder.value)
        if chosen is None:
            self._error("choose an image folder first (image folder, then Open folder)")
            return
        if not chosen.is_dir():
            what = "does not exist" if not chosen.exists() else "is a file, not a folder"
            self._error(f"'{chosen}' {what}; choose a folder of images under 'image folder'")
            return
        output = chosen_dir(self.output.value) or chosen / "napari_focus"
        recursive, pattern = self.recursive.value, self.pattern.value.strip() or None
        start_masks = chosen_dir(self.references.value)  # inside the folder: no images

        def shown() -> None:  # the new series is on screen: the fields name it
            self.folder.value = chosen
            # the series folder in use, shown while its field is empty
            self.output.line_edit.native.setPlaceholderText(str(output.absolute()))

        self._start(
            lambda found: load_or_create(
                output,
                chosen,
                recursive=recursive,
                pattern=pattern,
                found=found,
                exclude=[start_masks] if start_masks is not None else [],
            ),
            f"opening {chosen}",
            f"no images in '{chosen}'",
            on_shown=shown,
        )

    def open_layers(self) -> None:
        """Queue the image layers open in the viewer (state in the series folder);
        returns at once, as :meth:`open`."""
        output = chosen_dir(self.output.value)
        if output is None:
            in_use = self.output.line_edit.native.placeholderText()  # the folder's series
            aside = f" ({in_use}, shown in grey, keeps the image folder's)" if in_use else ""
            self._error(
                "type a folder under 'series folder' to keep the queue of the open layers"
                f"{aside}, then press Queue open layers again"
            )
            return
        names, stacks, unusable = [], [], []
        for name in self.owner.image_layer_names():  # a series item is one picture
            try:
                stack = layer_planes(self.viewer.layers[name]).is_stack
            except UnsupportedLayerError as error:
                unusable.append(str(error))
                continue
            (stacks if stack else names).append(name)
        why = [*unusable]
        if stacks:
            why.insert(0, f"{', '.join(stacks)}: a series queues single images; for a "
                       "stack, choose it under 'image' in the Model tab and press Run")  # fmt: skip
        if why and not names:
            self._error(f"no open image layer can be queued: {'; '.join(why)}")
            return
        if why:
            show_info(f"FOCUS: left out of the queue: {'; '.join(why)}")
        self._start(
            lambda _found: load_or_create(output, names=names),
            f"opening the series of the {len(names)} open image layers in {output}",
            "no image layers are open",
        )

    def cancel_open(self) -> bool:
        """Cancel (footer) while a series opens: the one on screen stays. False when no
        series was opening."""
        if not self.loader.cancel():
            return False
        self._opening_ended()
        kept = "; the one shown stays" if self.state is not None else ""
        self.owner.set_status(f"cancelled opening the series{kept}")
        return True

    def _start(
        self, load: Any, what: str, empty_message: str, on_shown: Callable[[], None] | None = None
    ) -> None:
        if not self.leave_current(wait=True):
            return  # the edits on screen could not be saved: that image stays
        self.close_guard.install()  # closing napari meanwhile stops the worker
        self.open_button.enabled = self.layers_button.enabled = False
        self.loader.load(
            load, what, lambda state, error: self._loaded(state, error, empty_message, on_shown)
        )
        self.owner.update_enabled()  # Cancel stops it

    def _opening_ended(self) -> None:
        self.open_button.enabled = self.layers_button.enabled = True
        self.owner.update_enabled()

    def _loaded(
        self,
        state: SeriesState | None,
        error: str | None,
        empty_message: str,
        on_shown: Callable[[], None] | None = None,
    ) -> None:
        """The series loaded by the worker (GUI thread): show its current image (then
        ``on_shown``); a series not loaded leaves the one on screen, and its fields."""
        self._opening_ended()
        if error is not None:
            self._error(error)
            return
        assert state is not None
        if state.recovered_from:
            show_warning(f"FOCUS: unreadable series state moved to {state.recovered_from}")
        for text in state.unreadable:
            show_warning(f"FOCUS series: {text}")
        if state.unattached:
            shared = ", ".join(path.name for path in state.unattached)
            show_warning(
                f"FOCUS: {shared} in the series folder belonged to several images under the "
                "old file names; left in place, shown for none of them"
            )
        if not len(state.queue):
            self._error(empty_message)  # the series on screen, if any, stays
            return
        if not self.leave_current(wait=True):
            return  # edited while the series opened, and these edits cannot be saved
        self.state = state
        self.mark_presence(state.output_folder)
        if on_shown is not None:
            on_shown()
        self.cache.clear()
        self.reader.reset()
        self.stop_reading_scores()
        self.stop_reading_proposal()
        for kept in (self.decoded, self.scores, self.seconds):
            kept.clear()  # keyed by file name: another folder may have the same names
        self._awaiting = None
        self._model_error = self._load_declined = None
        # a shorter queue clamps the number of the image left, which is no jump here
        with self.jump_to.changed.blocked():
            self.jump_to.max = len(state.queue)
        for button in self._buttons():
            button.enabled = True
        self.close_guard.install()
        self.owner.set_status(f"opened the series: {len(state.queue)} images")
        exports = [item.export for item in state.queue if item.export]
        root = self.owner.export_section.follow_series(exports)
        if root is not None:
            layout = self.owner.export_section.dataset_layout.value
            show_info(f"FOCUS: Accept exports to {root} ({layout}) as last time (Export tab)")
        self.show_current()
