"""Reading images and writing masks/probability maps, atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
TIFF_EXTENSIONS = (".tif", ".tiff")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as a numpy array (gray, RGB or RGBA; uint8/uint16/float)."""
    path = Path(path)
    if path.suffix.lower() in TIFF_EXTENSIONS:
        array = tifffile.imread(path)
        # a single-plane file may carry leading singleton axes
        while array.ndim > 3 and array.shape[0] == 1:
            array = array[0]
        return array
    with Image.open(path) as image:
        if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
            image = image.convert(
                "RGBA" if "A" in image.mode or "transparency" in image.info else "RGB"
            )
        elif image.mode == "LA":
            image = image.convert("L")
        return np.array(image)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, then rename it into
    place, so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> Path:
    """Binary mask as 0/255 uint8, PNG or TIFF by the file extension."""
    data = np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8)
    if Path(path).suffix.lower() in TIFF_EXTENSIONS:
        return atomic_write(path, lambda tmp: tifffile.imwrite(tmp, data, compression="zlib"))
    return atomic_write(path, lambda tmp: Image.fromarray(data).save(tmp, format="PNG"))


def write_probability(path: str | os.PathLike, probability: np.ndarray) -> Path:
    """Probability map: float32 TIFF, or 8-bit PNG (``round(p * 255)``)."""
    prob = np.asarray(probability, dtype=np.float32)
    if Path(path).suffix.lower() in TIFF_EXTENSIONS:
        return atomic_write(path, lambda tmp: tifffile.imwrite(tmp, prob, compression="zlib"))
    data = np.round(np.clip(prob, 0, 1) * 255).astype(np.uint8)
    return atomic_write(path, lambda tmp: Image.fromarray(data).save(tmp, format="PNG"))
