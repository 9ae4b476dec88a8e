"""The thread watching an Improve run, and napari closing while it trains.

The run trains in a process of its own (:mod:`napari_focus.training.process`); a napari
thread worker relays its progress. When napari closes, its window aborts the worker
(its running tasks are cancelled) and the worker would leave the run's generator where
it is. Instead the worker, on its way out, cancels the run and follows it to its end:
the training process stops within one model stage and saves the resume state of its
last completed step (no final weights are written); the end is said on stderr, the
window being gone. Python's exit waits for that, up to :data:`EXIT_WAIT_S`, so that the
worker never reports to Qt objects already deleted (it is not waited for while napari
closes: the worker's signals cannot be delivered while Qt destroys their widgets).
"""

from __future__ import annotations

import atexit
import sys
import threading
from collections.abc import Generator
from typing import Any

#: the longest Python's exit waits for a run to stop and save its resume state
EXIT_WAIT_S = 30.0


class TrainingWatch:
    """One run: :meth:`body` is the worker's function; the rest is thread-safe."""

    def __init__(self, config: Any, cancel: threading.Event) -> None:
        self.config, self.cancel = config, cancel
        self.done = threading.Event()  # the worker emitted its last signal
        self.aborted = False
        self.outcome: tuple | None = None  # what the worker returns, once ended
        self._lock = threading.Lock()
        self._closed = False
        self._run: Generator[Any, None, Any] | None = None

    def body(self) -> Generator[Any, None, tuple]:
        """The run's progress reports, then ``(result, None)`` or ``(None, the exception it
        ended with)``. A thread worker re-raises an exception it is handed as the return
        value (and drops a RuntimeError without finishing), so it goes in a tuple."""
        from ..training.process import train_in_subprocess

        self._run = train_in_subprocess(self.config, self.cancel)
        ended = yield from self._run
        return self._finish(ended)

    def attach(self, worker: Any) -> None:
        from qtpy.QtCore import Qt

        # direct: run in the worker's thread, even while the GUI thread closes napari
        worker.aborted.connect(self._follow_to_end, Qt.ConnectionType.DirectConnection)
        worker.finished.connect(self.done.set, Qt.ConnectionType.DirectConnection)

    def close(self) -> None:
        """napari closes (GUI thread): stop the run; Python's exit waits for the worker."""
        self.cancel.set()
        with self._lock:
            self._closed = True
            ended = self.outcome is not None
        if ended:
            self._tell()
        else:
            atexit.register(self.wait_at_exit)

    def wait_at_exit(self, timeout: float = EXIT_WAIT_S) -> None:
        if not self.done.wait(timeout):
            print(f"napari-focus: {describe_closed_run(self.config, None, ended=False)}",
                  file=sys.stderr, flush=True)  # fmt: skip

    def _follow_to_end(self) -> None:
        """The worker was aborted at a yield (worker thread): end the run here."""
        self.aborted = True
        self.cancel.set()
        if self._run is None or self.outcome is not None:
            return
        try:
            while True:
                next(self._run)
        except StopIteration as stop:
            self._finish(stop.value)

    def _finish(self, ended: Any) -> tuple:
        outcome = (None, ended) if isinstance(ended, BaseException) else (ended, None)
        with self._lock:
            self.outcome = outcome
            closed = self._closed
        if closed:
            self._tell()
        return outcome

    def _tell(self) -> None:
        result, error = self.outcome or (None, None)
        message = describe_closed_run(self.config, error or result, ended=True)
        print(f"napari-focus: {message}", file=sys.stderr, flush=True)


def describe_closed_run(config: Any, outcome: Any, *, ended: bool) -> str:
    """What became of a run napari closed on; ``outcome``: its result or exception."""
    work_dir = config.work_dir
    again = f"Improve with {config.out} under 'new weights' continues it"
    if not ended:
        return (
            f"napari closed while Improve was training {config.out.name}; the training "
            f"process is still saving its resume state in {work_dir} and exits after it. "
            + again
        )
    if isinstance(outcome, BaseException):
        return f"napari closed; the training of {config.out.name} had failed: {outcome}"
    if not outcome.cancelled:
        return f"napari closed after the training wrote {outcome.output}"
    if not outcome.started:
        return (
            f"napari closed while the base weights downloaded for {config.out.name}; the "
            "download continues from there with the next Improve"
        )
    if not outcome.saved:
        return (
            f"napari closed: Improve stopped training {config.out.name} before its first "
            "step was done, so nothing was saved; the next Improve starts it again"
        )
    return (
        f"napari closed: Improve stopped training {config.out.name} at step {outcome.step} "
        f"of {config.steps}; its resume state is kept in {work_dir}, no weights were "
        "written. " + again
    )
