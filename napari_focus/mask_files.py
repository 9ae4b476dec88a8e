"""What counts as foreground in a mask file: one rule for every reader of mask files.

FOCUS datasets ship 0/255 PNG masks, some with soft (anti-aliased) edges, a few as
JPEG with compression noise around 0 and 255. The official evaluation (FOCUS's
``metrics.py`` and PySODMetrics) binarizes ground truth with ``gt > 128``; the same
threshold is used here, on every scale a mask file may use:

* bool: as is;
* integers up to 255 (8-bit masks): ``> 128``;
* integers up to 65535 (16-bit masks): ``> 32896`` (128 on the 16-bit scale, x 257);
* integers that never exceed that threshold (0/1 masks, and label images of ids 1, 2,
  3, ... that napari and instance tools save, which would read as all background):
  ``> 0``, except in lossy files (JPEG, WebP), whose faint values are compression noise;
* floats in [0, 1]: ``> 0.5``; floats up to 255: ``> 128``;
* colour masks (RGB or RGBA): a pixel is foreground when any colour channel is, so a
  pure red ``(255, 0, 0)`` outline counts like a white one; where alpha varies,
  transparent pixels (alpha ``<= 128``) are background, and when the opaque pixels are
  all of one kind (all bright or all black) the shape is the transparency itself;
  gray masks with alpha (LA) are read as RGBA;
* palette images whose index 0 is black and whose colours are not grays (label images
  of VOC, CVAT, LabelMe: index 1 is a dark red ``(128, 0, 0)``): a pixel is foreground
  when its palette index is not 0, as those tools mean it; other palettes follow the
  colour rule.

Negative values, values above 65535 and NaN are refused: such a file is no mask.
Labels layers (label ids, ``> 0`` = foreground) are not mask files and do not use this.
"""

from __future__ import annotations

import os

import numpy as np

from .io import pixel_limit, read_image

FOREGROUND_ABOVE = 128
#: how a mask file is named after its image's stem (DUTS: ``<stem>.png``, others
#: ``<stem>_gt.png`` or ``<stem>_mask.png``), and the lossless formats masks come in
MASK_SUFFIXES = ("", "_gt", "_mask")
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")
#: lossy formats: their faint values are compression noise, never label ids
LOSSY_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".webp")
__all__ = ["FOREGROUND_ABOVE", "MASK_EXTENSIONS", "MASK_SUFFIXES", "binary_mask", "read_mask_file"]


def binary_mask(pixels: np.ndarray, *, label_ids: bool = True) -> np.ndarray:
    """bool ``(H, W)`` foreground of mask pixels (gray ``(H, W)``, ``(H, W, 1)`` or colour
    ``(H, W, 3|4)``) by the module's rule; ``label_ids=False`` (pixels of a lossy file,
    whose faint values are compression noise) keeps the threshold for masks that never
    pass it. Raises ValueError for anything else."""
    array = np.asarray(pixels)
    if array.ndim == 3 and array.shape[-1] == 4 and array.size:
        alpha = array[..., 3]
        if alpha.min() != alpha.max():  # transparent pixels are background
            opaque = _foreground(alpha, alpha, label_ids=False)  # alpha <= 128: see-through
            colour = np.logical_or.reduce(
                _foreground(array[..., :3], array, label_ids), axis=-1
            )
            inside = colour[opaque]
            if inside.any() and not inside.all():  # the colours draw the shapes
                return colour & opaque
            return opaque  # the shape is in the transparency
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        channels = array[..., : min(array.shape[-1], 3)]
        return np.logical_or.reduce(_foreground(channels, array, label_ids), axis=-1)
    if array.ndim != 2:
        raise ValueError(
            f"a mask must be 2-D (H, W) or a gray/colour image, got shape {array.shape}"
        )
    return _foreground(array, array, label_ids)


def read_mask_file(path: str | os.PathLike) -> np.ndarray:
    """The foreground of a mask file as a bool ``(H, W)`` array (EXIF orientation
    applied, as for images). Raises ValueError naming the file for a file that is no
    mask; OSError when it cannot be read."""
    try:
        indices = _label_indices(path)
        if indices is not None:
            return indices > 0
        rgba = _with_alpha(path)
        lossy = os.fspath(path).lower().endswith(LOSSY_EXTENSIONS)
        return binary_mask(rgba if rgba is not None else read_image(path), label_ids=not lossy)
    except ValueError as error:
        raise ValueError(f"{os.fspath(path)}: {error}") from error


def _with_alpha(path: str | os.PathLike) -> np.ndarray | None:
    """RGBA pixels of a gray-with-alpha (LA) file, upright (:func:`read_image` drops
    that alpha, which may hold the shape); None for any other file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            limit = pixel_limit()
            if image.mode not in ("LA", "La") or (
                limit is not None and image.width * image.height > limit
            ):
                return None
            return np.asarray(ImageOps.exif_transpose(image).convert("RGBA"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        return None


def _label_indices(path: str | os.PathLike) -> np.ndarray | None:
    """The palette indices of a palette image whose used colours are not all grays (a
    label image), upright as its EXIF orientation says; None for any other file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            limit = pixel_limit()
            if image.mode != "P" or (limit is not None and image.width * image.height > limit):
                return None  # read_image refuses one too large before decoding it
            upright = ImageOps.exif_transpose(image)
            indices = np.asarray(upright)
            palette = np.asarray(image.getpalette() or [], np.uint8).reshape(-1, 3)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        return None  # read_image says what is wrong with it, in its words
    used = palette[np.unique(indices)[np.unique(indices) < len(palette)]]
    grays = (used == used[:, :1]).all() if used.size else True
    black_first = len(palette) > 0 and not palette[0].any()  # index 0 = background
    return indices if black_first and not grays else None


def _foreground(values: np.ndarray, whole: np.ndarray, label_ids: bool = True) -> np.ndarray:
    if values.dtype == np.bool_:
        return values.copy()
    if values.size == 0:
        return np.zeros(values.shape, bool)
    if np.issubdtype(values.dtype, np.integer):
        low, high = int(whole.min()), int(whole.max())
        if low < 0 or high > 65535:
            raise ValueError(
                f"mask values run from {low} to {high}; a mask holds 0/1, 0-255 or 0-65535"
            )
        threshold = FOREGROUND_ABOVE if high <= 255 else FOREGROUND_ABOVE * 257
        if high <= 1 or (label_ids and high <= threshold):  # 0/1, or label ids (1, 2, ...)
            return values > 0
        return values > threshold
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(whole).all():
            raise ValueError("mask holds NaN or infinite values")
        low, high = float(whole.min()), float(whole.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"mask values run from {low:g} to {high:g}; a float mask holds 0-1 or 0-255"
            )
        return values > (0.5 if high <= 1 else FOREGROUND_ABOVE)
    raise ValueError(f"mask pixels of type {values.dtype} are not numbers")
