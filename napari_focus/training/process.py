"""Running :func:`~.loop.train` in a process of its own, for interactive hosts.

A training run is hours of Python-level work (augmentation, matching, metrics) between
the tensor operations; in a thread of a GUI process it competes with the GUI for the
interpreter lock and the viewer stutters. In a child process (started with ``spawn``,
so nothing of the host, Qt included, is inherited) the host only waits on a queue.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import queue
import threading
from collections.abc import Generator
from typing import Any

from ..spawning import main_script_not_rerun
from .config import TrainConfig


def train_in_subprocess(
    config: TrainConfig, cancel: threading.Event
) -> Generator[Any, None, Any]:
    """Yields the run's :class:`~.outcome.TrainProgress` reports; returns its
    :class:`~.outcome.TrainResult`, or the exception it ended with. Setting ``cancel``
    stops the run within one model stage, keeping the resume state of its last completed
    step (see :mod:`.loop`)."""
    context = multiprocessing.get_context("spawn")
    reports = context.Queue()
    stop = context.Event()
    # not a daemon: when the host exits mid-run (napari closed), Python waits for the
    # child to stop (within a model stage) and save its resume state, not killing it
    # mid-write
    child = context.Process(
        target=_child, args=(config, reports, stop), name="napari-focus-training", daemon=False
    )
    with main_script_not_rerun():  # a launch script without a __main__ guard
        child.start()
    # the host may abandon this generator at a yield (a GUI worker aborted as napari
    # quits): a thread of its own passes ``cancel`` on for as long as the child runs
    threading.Thread(
        target=_relay_cancel, args=(cancel, stop, child), name="napari-focus-training-cancel",
        daemon=True,
    ).start()  # fmt: skip
    outcome: Any = None
    try:
        while True:
            if cancel.is_set():
                stop.set()
            try:
                kind, payload = reports.get(timeout=0.1)
            except queue.Empty:
                if child.is_alive():
                    continue
                try:  # what it put just before it ended (its result) is still in the pipe
                    kind, payload = reports.get(timeout=1.0)
                except queue.Empty:
                    break
            if kind == "progress":
                yield payload
            else:
                outcome = payload
                break
    finally:  # also when the watcher goes away (the generator is closed)
        if child.is_alive() and outcome is None:
            stop.set()  # the child stops within a stage and saves its resume state
        drain_until_ended(child, reports, timeout=30)
    if outcome is None:
        outcome = RuntimeError(_unexpected_end(child.exitcode))
    return outcome


def drain_until_ended(child: Any, reports: Any, timeout: float) -> None:
    """Wait up to ``timeout`` seconds for ``child`` to end, reading (and dropping) what
    it still sends: a process exits only once its queue's pipe has taken all it put (a
    result of a long run's history is more than the pipe holds), and a host exiting
    waits for its child, so napari would never close."""
    import time

    deadline = time.monotonic() + timeout
    while child.is_alive() and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            reports.get(timeout=0.1)
    child.join(timeout=max(0.0, deadline - time.monotonic()))


def _unexpected_end(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        import signal

        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        killed = " (the system kills a process this way when memory runs out)"
        return (
            f"the training process was stopped by {name}"
            f"{killed if name == 'SIGKILL' else ''}"
        )
    return f"the training process ended unexpectedly (exit code {exitcode}); out of memory?"


def _relay_cancel(cancel: threading.Event, stop: Any, child: Any) -> None:
    while child.is_alive():
        if cancel.wait(0.2):
            stop.set()
            return


def _child(config: TrainConfig, reports: Any, stop: Any) -> None:
    import signal

    from .loop import train

    # Ctrl+C in the terminal reaches the whole process group: the host decides (napari
    # closing sets ``stop``), so the run stops within a stage and saves its resume state
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cancel = threading.Event()

    def relay() -> None:  # the run checks a thread event at every model stage
        stop.wait()
        cancel.set()

    threading.Thread(target=relay, name="napari-focus-training-stop", daemon=True).start()

    def progress(report: Any) -> None:
        reports.put(("progress", report))

    try:
        result: Any = train(config, progress=progress, cancel=cancel)
    except Exception as error:  # handed to the host, which reports it in words
        result = error
    try:
        pickle.dumps(result)
    except Exception:
        result = RuntimeError(f"{type(result).__name__}: {result}")
    reports.put(("result", result))
