"""`napari-focus annotate`: napari with the FOCUS widget docked; a folder opens as a
series (Previous / Next / Accept), image files open as layers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io import read_image


def add_image_file(viewer: Any, path: Path, data: np.ndarray | None = None) -> Any:
    """``path`` as an image layer (``data``: its pixels, when already read)."""
    if data is None:
        data = read_image(path)
    rgb = data.ndim == 3 and data.shape[-1] in (3, 4)
    return viewer.add_image(data, name=path.stem, rgb=rgb, metadata={"path": str(path)})


def open_viewer(
    paths: Sequence[Path] = (),
    *,
    folder: Path | None = None,
    show: bool = True,
    images: Sequence[np.ndarray] | None = None,
    model: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """Create a viewer and dock the FOCUS widget; open ``folder`` as a series (scanned
    in a worker: its first image shows once napari runs), or load ``paths`` as layers
    (``images``: their pixels, when already read). ``model``: values of the Model tab's
    fields by name (``task``, ``weights_path``...), set first. Returns
    ``(viewer, widget)``."""
    import napari

    from .triton_isolation import load_triton_isolated

    load_triton_isolated()  # before the canvas loads an OpenGL driver (and its LLVM)

    viewer = napari.Viewer(show=show)
    _, widget = viewer.window.add_plugin_dock_widget("napari-focus", "FOCUS")
    for name, value in (model or {}).items():
        getattr(widget.model_section, name).value = value
    if folder is not None:
        if show:  # the window takes its size first: the first image is fitted to it
            from qtpy.QtWidgets import QApplication

            QApplication.processEvents()
        widget.show_section("Series")
        widget.series.folder.value = folder
        widget.series.open(folder)
    for index, path in enumerate(paths):
        add_image_file(viewer, path, None if images is None else images[index])
    if paths and len(viewer.layers):
        viewer.layers.selection.active = viewer.layers[0]
    return viewer, widget


def close_on_signals(viewer: Any) -> tuple[Any, list[int], Callable[[], None]]:
    """Ctrl-C (SIGINT) and SIGTERM close napari as its window's close button does (the
    series asks about, or keeps, what is not saved yet). Returns the timer to keep, the
    signals received, and what closes napari once (call it when ``napari.run`` returns
    with a signal received: napari quits its loop on Ctrl-C with no close, then calls
    the handler). For SIGTERM, which napari leaves alone, the timer wakes Python every
    0.2 s, as Qt's loop gives it no chance to run a handler; the close itself waits for
    the loop, out of whatever napari was doing when the signal came."""
    import signal

    from qtpy.QtCore import QTimer

    received: list[int] = []
    closed: list[bool] = []

    def close_once() -> None:
        if not closed:
            closed.append(True)
            viewer.close()

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)
        QTimer.singleShot(0, close_once)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    timer = QTimer()
    timer.timeout.connect(lambda: None)  # Python runs between the timer's calls
    timer.start(200)
    return timer, received, close_once
