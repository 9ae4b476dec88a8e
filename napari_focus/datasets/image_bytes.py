"""The bytes of an exported image file: the source file itself where that is safe,
else a fresh encoding.

An exported image never carries an EXIF Orientation other than 1. The official
training reads images with detectron2's ``read_image``, which turns the pixels by that
tag, while the exported mask is written in the frame of the exported array: a tagged
file would pair a turned image with an unturned mask (a size mismatch or a transposed
target). So a source file is copied only when its stored pixels are exactly the
exported ones and, if it is tagged, only when the tag can be dropped without touching
the pixels (JPEG: the EXIF/XMP segments are left out); otherwise the array is encoded
(PNG: lossless; JPEG: quality :data:`JPEG_QUALITY`, no chroma subsampling).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..io import file_orientation
from .errors import ExportError
from .layouts import Layout

JPEG_QUALITY = 95
JPEG_MAX_SIDE = 65500  # libjpeg's limit on either side
COPIED = "copied from the source file"
COPIED_WITHOUT_ORIENTATION = "copied from the source file without its EXIF/XMP metadata"
_APP1 = 0xE1  # JPEG segment holding EXIF or XMP (and with them the Orientation tag)


def check_encodable(shape: tuple[int, ...], spec: Layout) -> None:
    """Raise :class:`ExportError` when ``spec``'s image files cannot hold an image of
    ``shape`` (JPEG: at most :data:`JPEG_MAX_SIDE` pixels a side)."""
    height, width = shape[:2]
    if spec.image_format == "JPEG" and max(height, width) > JPEG_MAX_SIDE:
        raise ExportError(
            f"image of {height} x {width} pixels (H x W) is too large for layout "
            f"{spec.name}, whose images are JPEG files (at most {JPEG_MAX_SIDE:,} pixels a "
            "side); crop or split it, or export it into a PNG layout such as generic"
        )


def encode(array: np.ndarray, fmt: str) -> bytes:
    """``array`` encoded as ``fmt`` (``"PNG"`` or ``"JPEG"``), without metadata."""
    buffer = io.BytesIO()
    options: dict[str, Any] = {"quality": JPEG_QUALITY, "subsampling": 0} if fmt == "JPEG" else {}
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def encoding_of(fmt: str) -> str:
    """How :func:`encode` wrote an image, in the words of the provenance record."""
    return f"encoded as JPEG, quality {JPEG_QUALITY}" if fmt == "JPEG" else f"encoded as {fmt}"


def image_bytes(source: str | None, rgb: np.ndarray, spec: Layout) -> tuple[bytes, str]:
    """The exported image file's bytes for ``rgb`` and how they were made (the
    provenance record's ``image_file``)."""
    copied = _source_copy(source, rgb, spec)
    if copied is not None:
        return copied
    return encode(rgb, spec.image_format), encoding_of(spec.image_format)


def _source_copy(source: str | None, rgb: np.ndarray, spec: Layout) -> tuple[bytes, str] | None:
    if not source:
        return None
    try:
        data = Path(source).read_bytes()
        stored, orientation = _decode(data, spec.image_format, rgb.shape[:2])
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    if stored is None or not np.array_equal(stored, rgb):
        return None
    if orientation == 1:
        return data, COPIED
    if spec.image_format != "JPEG":
        return None  # PNG re-encodes losslessly
    stripped = without_app1(data)
    try:
        check, orientation = (
            _decode(stripped, spec.image_format, rgb.shape[:2]) if stripped else (None, 0)
        )
    except (OSError, ValueError):
        return None
    if orientation != 1 or check is None or not np.array_equal(check, rgb):
        return None
    return stripped, COPIED_WITHOUT_ORIENTATION


def _decode(data: bytes, fmt: str, shape: tuple[int, ...]) -> tuple[np.ndarray | None, int]:
    """Stored (not turned) RGB pixels and EXIF orientation; no pixels (and no decoding)
    if the file is not ``fmt`` or its stored size is not ``shape``, as for a turned
    photo."""
    with Image.open(io.BytesIO(data)) as img:
        if img.format != fmt or (img.height, img.width) != tuple(shape):
            return None, 1
        return np.asarray(img.convert("RGB")), file_orientation(img)


def without_app1(data: bytes) -> bytes | None:
    """A JPEG file's bytes with its APP1 (EXIF and XMP) segments left out, every other
    byte as it was (the compressed pixels are not touched); None if ``data`` is not a
    JPEG file this can walk."""
    if data[:2] != b"\xff\xd8":
        return None
    out, pos = bytearray(data[:2]), 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            out.append(0xFF)
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data
            out += data[pos:]
            return bytes(out)
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2 or pos + 2 + length > len(data):
            return None
        if marker != _APP1:
            out += data[pos : pos + 2 + length]
        pos += 2 + length
    return None
