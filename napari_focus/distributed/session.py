"""Starting Ray for a run: which cluster, and how much of Ray's own logging reaches the
terminal."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

#: Ray's loggers that speak on the terminal while a run starts and goes on
RAY_LOGGERS = ("ray", "ray.data")
#: Ray core's note, at error level, on every actor Ray Data starts: its actors take their
#: settings as objects of the store and may be restarted. Those objects belong to this
#: process and live as long as the run, so the restart it warns of cannot fail here
#: (https://github.com/ray-project/ray/issues/53727).
CONSTRUCTOR_NOTE = b"has constructor arguments in the object store and max_restarts > 0"


def init_ray(ray: Any, address: str | None, quiet: bool) -> None:
    """Connect this process to the run's cluster: ``address``, else the Ray job's
    (``RAY_ADDRESS``), else a new local instance. ``quiet``: Ray's start-up lines (the
    instance started, token authentication) only if they are errors, and the workers'
    output (Ray's notes on the actors it stops) not forwarded here."""
    options: dict[str, Any] = {}
    if quiet:  # the workers' own output too: the run's errors come back as its rows
        options = {"logging_level": logging.ERROR, "log_to_driver": False}
    on_sigterm = signal.getsignal(signal.SIGTERM)
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # the embedded default: a new local instance, never someone else's
        ray.init(address="local", include_dashboard=False, **options)
    else:  # the given cluster, or the one of the Ray job this runs in
        ray.init(address=address, **options)
    # Ray core installs its own SIGTERM handler (a stack dump, then abort): keep the
    # caller's, which stops the run in order
    if callable(on_sigterm) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)


@contextlib.contextmanager
def quiet_ray() -> Iterator[None]:
    """While the run goes on, Ray's loggers say errors only, and Ray core's note on Ray
    Data's actors (:data:`CONSTRUCTOR_NOTE`) is kept off this process's stderr; every
    other line written there passes."""
    import ray.data  # noqa: F401  (configures its loggers on import: before the levels)

    before = {}
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        before[name] = logger.level
        logger.setLevel(logging.ERROR)
    try:
        with _without_stderr_lines(CONSTRUCTOR_NOTE):
            yield
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def _without_stderr_lines(marker: bytes) -> Iterator[None]:
    """Drop the lines containing ``marker`` from what this process writes to file
    descriptor 2 (Ray core writes there itself, not through Python)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no stderr to filter
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pass_on() -> None:
        pending = b""
        while chunk := os.read(read_end, 65536):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if marker not in line)
            with contextlib.suppress(OSError):  # keep reading: writers must never block
                os.write(saved, kept)
        with contextlib.suppress(OSError):
            os.write(saved, b"" if marker in pending else pending)

    thread = threading.Thread(target=pass_on, name="napari-focus-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer closes: the thread reads to the end
        thread.join(timeout=5)
        os.close(read_end)
        os.close(saved)
