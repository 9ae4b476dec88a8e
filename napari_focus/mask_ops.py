"""Mask refinement after prediction: threshold and clean-up, no model call."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Refinement:
    """How a proposal is derived from the model output.

    threshold: ``None`` keeps the official final mask; a number in [0, 1]
        thresholds the foreground probability instead (``p > threshold``).
    fill_holes: fill background regions enclosed by foreground.
    min_size: remove foreground objects smaller than this many pixels (0 = off).
    keep_largest: keep only the largest foreground object.
    """

    threshold: float | None = None
    fill_holes: bool = False
    min_size: int = 0
    keep_largest: bool = False

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}")


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, count = ndimage.label(mask)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    return labels, sizes


def remove_small_objects(mask: np.ndarray, min_size: int) -> np.ndarray:
    if min_size <= 0 or not mask.any():
        return mask
    labels, sizes = _components(mask)
    return (sizes >= min_size)[labels] & mask


def keep_largest_object(mask: np.ndarray) -> np.ndarray:
    if not mask.any():
        return mask
    labels, sizes = _components(mask)
    return labels == int(np.argmax(sizes))


def refine_plane(
    probability: np.ndarray, official_mask: np.ndarray, refinement: Refinement
) -> np.ndarray:
    """One 2-D plane -> uint8 mask (1 = foreground)."""
    if refinement.threshold is None:
        mask = np.asarray(official_mask) > 0
    else:
        mask = np.asarray(probability) > refinement.threshold
    if refinement.fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    mask = remove_small_objects(mask, refinement.min_size)
    if refinement.keep_largest:
        mask = keep_largest_object(mask)
    return mask.astype(np.uint8)


def refine(
    probability: np.ndarray, official_mask: np.ndarray, refinement: Refinement
) -> np.ndarray:
    """Apply :func:`refine_plane` to every 2-D plane of ``(..., H, W)`` arrays."""
    probability = np.asarray(probability)
    official_mask = np.asarray(official_mask)
    if probability.shape != official_mask.shape:
        raise ValueError(
            f"probability {probability.shape} and mask {official_mask.shape} differ in shape"
        )
    if probability.ndim == 2:
        return refine_plane(probability, official_mask, refinement)
    out = np.empty(probability.shape, np.uint8)
    for index in np.ndindex(probability.shape[:-2]):
        out[index] = refine_plane(probability[index], official_mask[index], refinement)
    return out
