"""Opening the current image of a series without decoding it on the GUI thread: a
worker reads files (the one to show first, then the neighbours of the shown one), the
GUI thread only puts the pixels into layers when they arrive, and only if the image
they belong to is still the one to show (mixed into
:class:`~napari_focus.gui.series_section.SeriesSection`).

While an image is being read, the previous image stays on screen with its mask locked
(not editable; its edits were kept when the user left it), and no image counts as
shown: Accept, Reject and Skip wait, so nothing is attached to the wrong image.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np
from napari.qt.threading import thread_worker

from ..series import Status
from ..series.images import UnusableImageError, declared_pixels, load_series_image
from ..series.item_files import ItemFiles, read_item_files
from ..series.prefetch import JobBoard
from ..series.resume import file_fingerprint
from .job import import_ahead_of_layers
from .series_layers import lock_mask_layer

#: images up to this size are decoded at once on the GUI thread (a few milliseconds,
#: less than a round trip through the worker would leave the old image on screen)
INLINE_READ_PIXELS = 1_000_000


def read_files(
    board: JobBoard, decoded: Callable[[str], np.ndarray | None]
) -> Generator[tuple, None, None]:
    """Worker body: per job ``(key, path, pixels or None, reason or None, fingerprint,
    files read along or None)``. The pixels of a file ``decoded`` already holds (the
    proposal's worker decoded it) are not decoded again: only its files are read."""
    import_ahead_of_layers()
    while (job := board.take()) is not None:
        key, _, (path, read_along) = job
        image, fingerprint = decoded(key), None
        if image is None:
            try:
                image = load_series_image(path)
            except UnusableImageError as error:
                board.done(key)
                yield (key, path, None, str(error), None, None)
                continue
            with contextlib.suppress(OSError):  # gone since: the state keeps the last one
                fingerprint = file_fingerprint(path)
        files = None
        with contextlib.suppress(OSError):  # then read on showing, as without a worker
            files = read_along()
        board.done(key)
        yield (key, path, image, None, fingerprint, files)


class ImageReader:
    """One worker at a time decoding series files, the most wanted first; results go to
    ``on_read`` on the GUI thread. :meth:`reset` (another series) drops whatever the
    running worker still reports."""

    def __init__(
        self, on_read: Callable[[tuple], None], decoded: Callable[[str], np.ndarray | None]
    ) -> None:
        self.on_read = on_read
        self.decoded = decoded
        self.board = JobBoard()
        self._worker: Any = None
        self._generation = 0

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def want(self, files: list[tuple[str, Path, Callable[[], ItemFiles]]]) -> None:
        """Read ``files`` (``(key, path, what reads its files in the series folder)``,
        most wanted first) instead of whatever was waiting; a file being read now is not
        read again (its result comes)."""
        running = self.board.running
        self.board.replace(
            [(key, 0, (path, along)) for key, path, along in files if key != running]
        )
        self._start()

    def reset(self) -> None:
        self.board.replace([])
        self.board = JobBoard()
        self._generation += 1

    def _start(self) -> None:
        if self._worker is not None or not self.board.pending():
            return
        generation = self._generation
        worker = thread_worker(read_files, start_thread=False)(self.board, self.decoded)
        worker.yielded.connect(lambda message: self._deliver(generation, message))
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()

    def _deliver(self, generation: int, message: tuple) -> None:
        if generation == self._generation:  # else: a file of a series left since
            self.on_read(message)

    def _on_finished(self) -> None:
        self._worker = None
        self._start()  # wanted while the last worker was leaving


class SeriesOpening:
    """The current item: shown at once when its pixels are at hand, else read first."""

    state: Any
    owner: Any
    viewer: Any
    decoded: Any
    reader: ImageReader
    prefetcher: Any
    cache: Any
    position: Any
    include_exported: Any
    _shown: str | None
    _awaiting: str | None
    _opening: tuple[str, int] | None  # (key, direction) of the image being read
    _locked_mode: str | None  # the paint mode of the mask locked meanwhile

    def show_current(self, direction: int = 1) -> None:
        """Show the current item: its image, and its proposal when one is ready. An
        item whose file cannot be used is marked ``failed`` (with the reason) and the
        next one in ``direction`` is shown instead. A large file not decoded yet is
        read by the worker first (:meth:`_on_read` shows it)."""
        state = self.state
        assert state is not None
        self._opening = None  # an image still being read is no longer wanted on screen
        for _ in range(len(state.queue)):
            item = state.queue.current
            if item.status is not Status.FAILED and not self._closed_layer(item):
                if not self._at_hand(item):
                    self._open_later(item, direction)
                    return
                try:
                    image = self._read(item)
                except UnusableImageError as error:
                    self._mark_unusable(item.key, str(error))
                else:
                    self._display(item, image)
                    return
            if not self._step_away(direction):
                break
        self._nothing_to_show()

    def _at_hand(self, item: Any) -> bool:
        """Pixels and series files read ahead, or a file small enough to read now."""
        if item.path is None or self.decoded.files(item.key) is not None:
            return True
        pixels = declared_pixels(item.path)
        return pixels is not None and pixels <= INLINE_READ_PIXELS

    def _read_along(self, item: Any) -> Callable[[], ItemFiles]:
        """What reads ``item``'s autosave, start mask, exported mask (an accepted one) and
        stored proposal in the worker (the proposal only when none is computed or
        computing)."""
        assert self.state is not None
        with contextlib.suppress(ValueError):  # no model chosen: no store to read
            self._use_model()  # the store of this series and model
        store = self.prefetcher.store
        if (
            store is None
            or store.folder.parent.parent != self.state.output_folder  # no model chosen yet
            or item.key in self.cache
            or item.key in self.cache.in_flight
        ):
            store = None
        autosave, key, path = self.state.autosave_path(item.key), item.key, item.path
        start_masks = self._start_masks_folder()
        accepted = item.status is Status.ACCEPTED
        exported = self.state.exported_mask_path(key) if accepted else None
        return lambda: read_item_files(autosave, store, key, path, start_masks, exported)

    def _read(self, item: Any) -> np.ndarray | None:
        """The item's pixels: decoded ahead, or (a small file) read now."""
        if item.path is None:
            return None
        decoded = self.decoded.get(item.key)
        return decoded if decoded is not None else load_series_image(item.path)

    def _step_away(self, direction: int) -> bool:
        """Move past an item that cannot be shown; False when no other item is left."""
        queue = self.state.queue
        for exported in (None, True):  # an accepted image rather than none at all
            stepped = (
                queue.next(include_exported=exported)
                if direction > 0
                else queue.previous(include_exported=exported)
            )
            if stepped is None:
                stepped = (
                    queue.previous(include_exported=exported)
                    if direction > 0
                    else queue.next(include_exported=exported)
                )
            if stepped is not None:
                return True
        return False

    def _nothing_to_show(self) -> None:
        self._shown = self._awaiting = None
        assert self.state is not None
        failed = [item.name for item in self.state.queue if item.status is Status.FAILED]
        names = ", ".join(failed[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
        gone = sum(item.missing for item in self.state.queue)
        why = f"{names} failed (the warnings said why)" if failed else ""
        if gone:
            why += f"{'; ' if why else ''}{gone} {'is' if gone == 1 else 'are'} missing"
        self.position.value = "no image of this series can be shown"
        self.owner.set_status(
            f"no image of this series can be shown: {why}; open another folder"
        )
        for button in self._buttons():  # nothing to decide on until an image is shown
            button.enabled = False
        self._buttons_off = True
        self.owner.update_enabled()

    def _open_later(self, item: Any, direction: int) -> None:
        """Have the worker read ``item``; the image on screen stays, its mask locked."""
        self._opening = (item.key, direction)
        self._shown = self._awaiting = None
        if self._locked_mode is None:
            self._locked_mode = lock_mask_layer(self.viewer)
        assert self.state is not None
        self.position.value = f"{self.state.queue.position_text()} {item.name} — opening…"
        self.owner.set_status(f"opening {item.name}…")
        self.owner.update_enabled()
        self.reader.want([(item.key, item.path, self._read_along(item))])

    @property
    def opening(self) -> str | None:
        """Queue key of the image being read to be shown next, if any."""
        return self._opening[0] if self._opening else None

    def _on_read(self, message: tuple) -> None:
        key, path, image, reason, fingerprint, files = message
        state = self.state
        try:
            if state is None or state.queue.item(key).path != path:
                return
        except KeyError:
            return  # of another queue than the one open now
        if fingerprint is not None:
            state.take_fingerprint(key, fingerprint)
        if image is not None:
            self.decoded.put(key, image, files)
        if self._opening is None or self._opening[0] != key or state.queue.current.key != key:
            return  # read ahead, or for an image the user has left since: kept, not shown
        direction = self._opening[1]
        if image is not None:
            self._opening = None
            self._display(state.queue.current, image)
            return
        self._mark_unusable(key, reason)
        if self._step_away(direction):
            self.show_current(direction)
        else:
            self._opening = None
            self._nothing_to_show()

    def _read_ahead(self) -> None:
        """Decode the images Next and Previous would show, and keep the shown one."""
        state = self.state
        if state is None or state.queue.current is None:
            return
        queue, exported = state.queue, self.include_exported.value
        ahead = queue.upcoming(2, include_exported=exported)  # the prefetch decodes these too
        near = [*ahead[:1], *queue.preceding(1, include_exported=exported)]
        kept = [queue.current.key, *(queue[i].key for i in [*near, *ahead])]
        self.decoded.neighbourhood(kept)
        computing = self.prefetcher.board.running  # decoded there; its pixels come along
        self.reader.want(
            [
                (item.key, item.path, self._read_along(item))
                for item in (queue[i] for i in near)
                if item.path is not None
                and not item.missing
                and item.status is not Status.FAILED
                and self.decoded.files(item.key) is None
                and (item.key in self.decoded or item.key != computing)
            ]
        )
