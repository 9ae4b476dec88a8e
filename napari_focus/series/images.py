"""Reading a series image, or saying in words why it cannot be part of the series."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..io import read_image
from ..transforms import MIN_SIDE, check_image


class UnusableImageError(ValueError):
    """The file cannot be read, or is not one 2-D image; the message says which."""


def load_series_image(path: str | os.PathLike) -> np.ndarray:
    """The pixels of one series image (EXIF orientation applied): gray ``(H, W)``,
    ``(H, W, 1)``, RGB or RGBA, both sides at least ``MIN_SIDE``, of a type and with
    values that :func:`napari_focus.transforms.check_image` accepts (the model's input
    rule). Anything else (an unreadable file, a multi-plane TIFF, a speck, NaN pixels)
    raises :class:`UnusableImageError`."""
    path = Path(path)
    try:
        image = read_image(path)
    except MemoryError:  # of this moment: failed until the series is opened again
        raise UnusableImageError(
            f"{path.name}: the computer ran out of memory reading it; close other programs, "
            "then open the series again"
        ) from None
    except Exception as error:  # PIL and tifffile raise many kinds; each means unreadable
        said = str(error)  # the reading error names the file itself, mostly
        raise UnusableImageError(
            said if said.startswith(path.name) else f"cannot read {path.name}: {said}"
        ) from error
    shape = tuple(image.shape)
    if image.ndim == 3 and shape[-1] not in (1, 3, 4):
        raise UnusableImageError(
            f"{path.name} has {shape[0] if shape[0] < shape[-1] else shape[-1]} planes "
            f"(shape {shape}); a series takes single images (gray, RGB or RGBA): open a "
            "stack as a layer and press Run"
        )
    if image.ndim not in (2, 3):
        raise UnusableImageError(
            f"{path.name} has shape {shape}; a series takes single images (gray, RGB or RGBA)"
        )
    if min(shape[:2]) < MIN_SIDE:
        raise UnusableImageError(
            f"{path.name} is {shape[0]}x{shape[1]} pixels; FOCUS needs at least "
            f"{MIN_SIDE}x{MIN_SIDE}"
        )
    try:
        check_image(image)  # the model's own acceptance rule: what passes here can run
    except ValueError as error:
        raise UnusableImageError(f"{path.name}: {error}") from error
    return image[..., 0] if image.ndim == 3 and shape[-1] == 1 else image


def declared_pixels(path: str | os.PathLike) -> int | None:
    """Width times height times frames as the file's header declares them (nothing is
    decoded; a stack of small pages is read whole before it is refused), or None when
    the header cannot be read here (the full read says why)."""
    try:
        with Image.open(path) as image:
            frames = int(getattr(image, "n_frames", 1) or 1)
            return int(image.width) * int(image.height) * frames
    except Exception:  # PIL raises many kinds; the worker's full read reports the reason
        return None
