"""Autosaved masks written off the GUI thread, in the order they were made.

Encoding a mask as PNG takes 0.2-0.5 s at 24 MP, so the widget copies the mask and
hands it to an :class:`AutosaveWriter`: one thread writes the jobs one after the other
(a later autosave of an image always lands after an earlier one), then reports each
result, written or failed, through :meth:`AutosaveWriter.take_done`. Only the files
of the autosave are written here (``work/<work name>.png`` and ``.json``); the series
state records them afterwards, on the thread that owns it
(:meth:`~napari_focus.series.state.SeriesState.record_autosave`).

The thread starts when a job comes and ends when none is left; it is no daemon, so
Python waits for a write under way before it exits.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..fs_text import json_text
from ..io import write_mask
from .merge import file_stamp


def write_autosave_files(path: Path, mask: np.ndarray, provenance: dict | None) -> Path:
    """Write an autosaved mask (``> 0`` = foreground) as a 0/255 PNG at ``path`` and,
    when given, where it came from beside it (``.json``); both atomic."""
    if provenance is not None:
        text = json_text(provenance, default=str)
        atomic_write_text(path.with_suffix(".json"), text)
    return write_mask(path, mask)


@dataclass(frozen=True, eq=False)
class AutosaveJob:
    key: str
    path: Path  # work/<work name>.png
    mask: np.ndarray  # a copy of the edited mask, ``> 0`` = foreground
    provenance: dict[str, Any] | None
    owner: Any  # the series state the autosave belongs to
    number: int  # order of submission: the highest of a key is its latest edits


@dataclass(frozen=True)
class AutosaveDone:
    job: AutosaveJob
    stamp: tuple[int, int, int] | None  # of the PNG written (inode, size, mtime)
    error: Exception | None  # None: written


class AutosaveWriter:
    """Writes :class:`AutosaveJob` s in submission order on one background thread;
    ``on_done`` is called (on that thread) after each job."""

    def __init__(self, on_done: Callable[[], None] = lambda: None) -> None:
        self.on_done = on_done
        self._lock = threading.Condition()
        self._jobs: deque[AutosaveJob] = deque()
        self._running: AutosaveJob | None = None
        self._done: list[AutosaveDone] = []
        self._thread: threading.Thread | None = None
        self._count = 0

    def submit(
        self, key: str, path: Path, mask: np.ndarray, provenance: dict | None, owner: Any
    ) -> AutosaveJob:
        with self._lock:
            self._count += 1
            job = AutosaveJob(key, path, mask, provenance, owner, self._count)
            self._jobs.append(job)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="napari-focus autosave", daemon=False
                )
                self._thread.start()
        return job

    @property
    def busy(self) -> bool:
        """A job waits, is being written, or its result was not taken yet."""
        with self._lock:
            return bool(self._jobs) or self._running is not None or bool(self._done)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every job submitted so far is written (or failed); False when
        ``timeout`` seconds passed first."""
        with self._lock:
            return self._lock.wait_for(
                lambda: not self._jobs and self._running is None, timeout
            )

    def take_done(self) -> list[AutosaveDone]:
        """The results since the last call, in submission order."""
        with self._lock:
            done, self._done = self._done, []
        return done

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._thread = None
                    self._lock.notify_all()
                    return
                job = self._running = self._jobs.popleft()
            try:
                path = write_autosave_files(job.path, job.mask, job.provenance)
                done = AutosaveDone(job, file_stamp(path), None)
            except Exception as error:  # any failure is reported to the user, never lost
                done = AutosaveDone(job, None, error)
            with self._lock:
                self._running = None
                self._done.append(done)
                self._lock.notify_all()
            with contextlib.suppress(RuntimeError):  # the widget it reports to is gone
                self.on_done()
