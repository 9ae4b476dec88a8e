"""Background workers of the widget, and callbacks that stop once Qt has deleted the
widget they report to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.qt.threading import thread_worker


def background(function: Callable[..., Any], *args: Any) -> Any:
    """A napari worker (not started yet) that calls ``function(*args)`` off the GUI
    thread. An exception goes only to the handlers connected to its ``errored`` signal:
    napari would also raise it again on the GUI thread, as an error with a traceback."""
    return thread_worker(function, start_thread=False, ignore_errors=True)(*args)


class WidgetLifetime:
    """Whether a Qt widget still exists: a handler wrapped by ``guard`` is skipped once
    the widget is deleted (a worker that ends after napari closed reports to nobody)."""

    def __init__(self, native: Any) -> None:
        self.alive = True
        native.destroyed.connect(lambda *_: self._deleted())

    def _deleted(self) -> None:
        self.alive = False

    def guard(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            return handler(*args) if self.alive else None

        return call
