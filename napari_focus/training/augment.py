"""The official FOCUS training-time augmentation of one sample.

What the official dataset mapper (``focus_dataset_mapper``) applies, in its order:

1. shortest-edge resize to a side drawn from ``int(x * 0.1 * 256)`` for x in 5..20
   (128 ... 512), long side capped at 2048; image bilinear (PIL), labels nearest
   (torch's rule, :func:`resize_labels`);
2. a random crop of at most 640 x 640 (``RandomCrop_CategoryAreaConstraint`` with a
   single-category maximum area of 1.0, which never rejects a crop: a plain random
   crop);
3. the SSD colour augmentation (brightness, contrast, saturation, hue; each with
   probability 1/2, contrast first or last with probability 1/2; computed in BGR);
4. a horizontal flip with probability 1/2;
5. the result is put on a 512 x 512 canvas at the top left: smaller images are padded
   (image value 128, label 255 = ignore), larger ones are cut.

A smaller ``canvas`` (hardware presets) keeps steps 1, 3 and 4 as they are, so objects
keep the scale the model was trained at, and scales the crop with the canvas
(``crop = 640 * canvas / 512``): only the field of view shrinks.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image

from ..transforms import resized_shape
from .data import IGNORE

OFFICIAL_SHORT_SIDES: tuple[int, ...] = tuple(int(x * 0.1 * 256) for x in range(5, 21))
OFFICIAL_MAX_LONG_SIDE = 2048
OFFICIAL_CANVAS = 512
OFFICIAL_CROP = 640
PAD_VALUE = 128


@dataclass(frozen=True)
class AugmentConfig:
    canvas: int = OFFICIAL_CANVAS
    short_sides: tuple[int, ...] = OFFICIAL_SHORT_SIDES
    max_long_side: int = OFFICIAL_MAX_LONG_SIDE
    color: bool = True
    flip: bool = True

    @property
    def crop(self) -> int:
        return round(OFFICIAL_CROP * self.canvas / OFFICIAL_CANVAS)


def resize_labels(classes: np.ndarray, h: int, w: int) -> np.ndarray:
    """``classes`` resized to ``h x w`` as the official mapper resizes its label map: it
    reads the map as float64, which detectron2's ``ResizeTransform`` hands to torch's
    ``nearest`` (source row ``floor(i * in / out)``; torch's own float rounding decides
    the exact boundaries, so torch does it here too), not to PIL's, whose pixel-centre
    rule puts the labels half a pixel elsewhere."""
    labels = torch.from_numpy(classes.astype(np.float64))[None, None]
    resized = torch.nn.functional.interpolate(labels, (h, w), mode="nearest")
    return resized[0, 0].numpy().astype(np.uint8)


def augment(
    image: np.ndarray, classes: np.ndarray, rng: np.random.Generator, config: AugmentConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Augment ``(H, W, 3)`` uint8 RGB and its ``(H, W)`` uint8 classes; returns both on
    the ``canvas x canvas`` grid."""
    side = int(rng.choice(config.short_sides))
    h, w = resized_shape(*classes.shape, side, config.max_long_side)
    image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    classes = resize_labels(classes, h, w)

    crop_h, crop_w = min(config.crop, h), min(config.crop, w)
    top = int(rng.integers(0, h - crop_h + 1))
    left = int(rng.integers(0, w - crop_w + 1))
    image = image[top : top + crop_h, left : left + crop_w]
    classes = classes[top : top + crop_h, left : left + crop_w]

    if config.color:
        image = ssd_color(image, rng)
    if config.flip and rng.integers(2):
        image, classes = image[:, ::-1], classes[:, ::-1]
    return _on_canvas(image, config.canvas, PAD_VALUE), _on_canvas(classes, config.canvas, IGNORE)


def _on_canvas(array: np.ndarray, size: int, fill: int) -> np.ndarray:
    out = np.full((size, size, *array.shape[2:]), fill, dtype=array.dtype)
    h, w = min(size, array.shape[0]), min(size, array.shape[1])
    out[:h, :w] = array[:h, :w]
    return out


def _affine(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def ssd_color(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SSD photometric distortion (brightness +-32, contrast and saturation x[0.5, 1.5],
    hue +-18 of OpenCV's 180), each applied with probability 1/2."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if rng.integers(2):
        bgr = _affine(bgr, beta=rng.uniform(-32, 32))
    contrast_first = bool(rng.integers(2))
    if contrast_first:
        bgr = _contrast(bgr, rng)
    bgr = _hue(_saturation(bgr, rng), rng)
    if not contrast_first:
        bgr = _contrast(bgr, rng)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _contrast(bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _affine(bgr, alpha=rng.uniform(0.5, 1.5)) if rng.integers(2) else bgr


def _saturation(bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if not rng.integers(2):
        return bgr
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    hsv[:, :, 1] = _affine(hsv[:, :, 1], alpha=rng.uniform(0.5, 1.5))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def _hue(bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if not rng.integers(2):
        return bgr
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    shift = int(rng.integers(-18, 19))
    hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.int32) + shift) % 180).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def targets_from_classes(classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class binary masks of the classes present (ignore excluded), as the official
    mapper builds them: ``labels`` ``(T,)`` int64 and ``masks`` ``(T, H, W)`` bool."""
    labels = np.array([c for c in np.unique(classes) if c != IGNORE], dtype=np.int64)
    masks = np.stack([classes == c for c in labels]) if len(labels) else np.zeros(
        (0, *classes.shape), dtype=bool
    )
    return labels, masks
