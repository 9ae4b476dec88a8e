"""`napari-focus annotate`: napari with the FOCUS widget docked and images loaded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io import read_image


def add_image_file(viewer: Any, path: Path) -> Any:
    data = read_image(path)
    rgb = data.ndim == 3 and data.shape[-1] in (3, 4)
    return viewer.add_image(data, name=path.stem, rgb=rgb, metadata={"path": str(path)})


def open_viewer(paths: Sequence[Path] = (), *, show: bool = True) -> tuple[Any, Any]:
    """Create a viewer, dock the FOCUS widget, load ``paths``; returns (viewer, widget)."""
    import napari

    viewer = napari.Viewer(show=show)
    _, widget = viewer.window.add_plugin_dock_widget("napari-focus", "FOCUS")
    for path in paths:
        add_image_file(viewer, path)
    if len(viewer.layers):
        viewer.layers.selection.active = viewer.layers[0]
    return viewer, widget
