"""The series' three layers (image, mask, probability), reused from one image to the
next: removing napari layers costs a garbage collection each, which would make Next
take a second even with the proposal ready. The mask always lies above the image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .proposal_layers import keep_below, replace_labels_data

SERIES_KEY = "napari_focus_series"  # metadata: the queue key a layer shows
ROLE_KEY = "napari_focus_series_role"  # metadata: "image", "labels" or "probability"
START_KEY = "napari_focus_start"  # metadata: a saved mask the image started from
PROVENANCE_KEY = "napari_focus_provenance"  # metadata: where a saved mask came from


def series_layer(viewer: Any, role: str) -> Any:
    return next((layer for layer in viewer.layers if layer.metadata.get(ROLE_KEY) == role), None)


def tag(layer: Any, role: str, key: str) -> None:
    layer.metadata = {**layer.metadata, SERIES_KEY: key, ROLE_KEY: role}


def show_image(viewer: Any, key: str, name: str, path: Path, image: np.ndarray) -> Any:
    """Put ``image`` in the series' image layer (a new layer when gray/RGB changes),
    under the mask; the view is reset when the image size changes."""
    rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    layer = series_layer(viewer, "image")
    old_shape = tuple(layer.data.shape[:2]) if layer is not None else None
    if layer is not None and layer.rgb == rgb and layer.data.ndim == image.ndim:
        layer.data = image
        layer.name = name
        layer.reset_contrast_limits()
    else:
        if layer is not None:
            viewer.layers.remove(layer)
        layer = viewer.add_image(image, name=name, rgb=rgb)
    layer.metadata = {"path": str(path)}
    tag(layer, "image", key)
    above = [series_layer(viewer, "labels"), series_layer(viewer, "probability")]
    keep_below(viewer, layer, *[other for other in above if other is not None])
    if old_shape != tuple(image.shape[:2]):
        # fit this image alone: the mask layers still hold the previous image's shape
        viewer.reset_view(layers=[layer])
    return layer


def retarget_mask_layers(
    viewer: Any, key: str, shape: tuple[int, ...], name: str, *, clear: bool
) -> None:
    """Name the reused mask and probability layers for image ``key``; with ``clear``
    empty them (fresh undo), else the caller fills them at once (no extra redraw)."""
    labels = series_layer(viewer, "labels")
    if labels is not None:
        labels.metadata = {SERIES_KEY: key, ROLE_KEY: "labels"}
        if clear:
            replace_labels_data(labels, np.zeros(shape, np.uint8))
        labels.name = name
    probability = series_layer(viewer, "probability")
    if probability is not None:
        if clear:
            probability.data = np.zeros(shape, np.float32)
        probability.name = f"{name} probability"


def show_saved_mask(
    viewer: Any, image: Any, key: str, name: str, mask: np.ndarray, provenance: dict | None
) -> Any:
    """Show a saved mask (autosave or existing mask) as the starting point."""
    data = np.asarray(mask).astype(np.uint8)
    labels = series_layer(viewer, "labels")
    if labels is None:
        labels = viewer.add_labels(data, name=name, scale=image.scale, translate=image.translate)
    else:
        replace_labels_data(labels, data)
        labels.name = name
    metadata: dict[str, Any] = {START_KEY: data.copy()}
    if provenance:
        metadata[PROVENANCE_KEY] = provenance
    labels.metadata = metadata
    tag(labels, "labels", key)
    probability = series_layer(viewer, "probability")
    if probability is not None:  # the map of the image left must not stay under this name
        probability.data = np.zeros(data.shape, np.float32)  # (a saved mask has none)
    keep_below(viewer, image, labels)
    viewer.layers.selection.active = labels
    labels.mode = "paint"
    return labels


def lock_mask_layer(viewer: Any) -> str | None:
    """While the next image is read, the mask on screen (of the image left, its edits
    kept) takes no more strokes; returns the mode to give back with
    :func:`unlock_mask_layer` (None: nothing was locked)."""
    labels = series_layer(viewer, "labels")
    if labels is None or not labels.editable:
        return None
    mode = str(labels.mode)
    labels.editable = False
    return mode


def unlock_mask_layer(viewer: Any, mode: str | None) -> None:
    labels = series_layer(viewer, "labels")
    if labels is not None and not labels.editable:
        labels.editable = True
        if mode is not None:
            labels.mode = mode
