"""The layers a proposal lives in: a Labels layer (the editable mask) and a hidden
probability Image, next to the image they belong to. Public napari API only."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from ..mask_ops import Refinement
from .job import JobResult, proposal_name
from .planes import LayerPlanes

META_KEY = "napari_focus"


def find_layer(viewer: Any, name: str) -> Any:
    return next((layer for layer in viewer.layers if layer.name == name), None)


def replace_labels_data(labels: Any, data: np.ndarray) -> None:
    """Give ``labels`` new data with a fresh undo history, so Ctrl+Z never pastes
    strokes made on the old data into the new one. (napari clears a Labels layer's
    history when it stops being editable; the mode is restored afterwards, and a layer
    locked meanwhile, e.g. while the next series image opens, stays locked.)"""
    mode, editable = labels.mode, labels.editable
    labels.data = data
    labels.editable = False
    if editable:
        labels.editable = True
        labels.mode = mode


def keep_below(viewer: Any, image: Any, *above: Any) -> None:
    """Move ``image`` under every layer of ``above`` (the mask must stay visible)."""
    layers = viewer.layers
    lowest = min((layers.index(layer) for layer in above if layer in layers), default=None)
    if lowest is not None and layers.index(image) > lowest:
        layers.move(layers.index(image), lowest)


def is_edited(labels: Any) -> bool:
    """Painted since the last proposal; without one, any painted pixel counts."""
    state = labels.metadata.get(META_KEY)
    if state is not None and np.array_equal(labels.data, state["proposal"]):
        return False  # the common case, in one pass (a 24-MP mask: a few ms)
    data = np.asarray(labels.data) > 0
    if state is None:
        start = labels.metadata.get("napari_focus_start")
        return bool(data.any()) if start is None else not np.array_equal(data, start > 0)
    return not np.array_equal(data, state["proposal"] > 0)


def proposal_metadata(
    result: JobResult,
    image_name: str,
    probability: np.ndarray,
    official: np.ndarray,
    mask: np.ndarray,
    refinement: Refinement,
) -> dict[str, Any]:
    """What a proposal's Labels layer carries: model provenance and the model output."""
    return {
        "task": result.key.task,
        # what its masks show: the task the weights were trained for, when they say
        "weights_task": getattr(result.predictor, "weights_task", None) or result.key.task,
        "size": result.predictor.architecture.size_name,
        "weights": result.key.weights_id,
        "device": str(result.predictor.device),
        "tta": result.tta,
        "source_image": image_name,
        "refinement": asdict(refinement),
        "probability": probability,
        "official_mask": official,
        "proposal": mask.copy(),
    }


def merged_outputs(
    labels: Any, result: JobResult, planes: LayerPlanes
) -> tuple[np.ndarray, np.ndarray]:
    """Probability and official mask of the whole layer: the new planes of ``result``
    written over what ``labels`` held for the others."""
    if result.indices == [()]:  # one 2-D image: the result is the whole layer, no copies
        return result.probabilities[0], result.masks[0]
    state = labels.metadata.get(META_KEY) if labels is not None else None
    if state is None or state["probability"].shape != planes.spatial_shape:
        probability = np.zeros(planes.spatial_shape, np.float32)
        official = np.zeros(planes.spatial_shape, np.uint8)
    else:
        probability, official = state["probability"].copy(), state["official_mask"].copy()
    for index, prob, mask in zip(result.indices, result.probabilities, result.masks, strict=True):
        probability[index] = prob
        official[index] = mask
    return probability, official


def put_proposal(
    viewer: Any, image: Any, name: str, mask: np.ndarray, metadata: dict[str, Any]
) -> Any:
    """Create or update the Labels layer ``name`` (above ``image``) and its hidden
    probability layer; returns the Labels layer, selected, in paint mode."""
    labels = find_layer(viewer, name)
    wrapped = {META_KEY: metadata}
    if labels is None:
        labels = viewer.add_labels(
            mask, name=name, scale=image.scale, translate=image.translate, metadata=wrapped
        )
    else:
        labels.metadata = {**labels.metadata, **wrapped}
        replace_labels_data(labels, mask)
    probability = metadata["probability"]
    prob_name = f"{name} probability"
    existing = find_layer(viewer, prob_name)
    if existing is not None:
        existing.data = probability
    else:
        existing = viewer.add_image(
            probability,
            name=prob_name,
            scale=image.scale,
            translate=image.translate,
            colormap="magma",
            contrast_limits=(0.0, 1.0),
            visible=False,
            metadata={META_KEY: {"probability_of": name}},
        )
    keep_below(viewer, image, labels, existing)
    viewer.layers.selection.active = labels
    labels.mode = "paint"
    labels.selected_label = 1
    return labels


__all__ = [
    "META_KEY",
    "find_layer",
    "is_edited",
    "keep_below",
    "merged_outputs",
    "proposal_metadata",
    "proposal_name",
    "put_proposal",
    "replace_labels_data",
]
