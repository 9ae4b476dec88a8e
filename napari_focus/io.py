"""Reading images (with a pixel limit, in their EXIF orientation) and writing
masks/probability maps atomically."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from .atomic import WriteError, atomic_write

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
TIFF_EXTENSIONS = (".tif", ".tiff")
__all__ = [
    "IMAGE_EXTENSIONS",
    "ORIENTATION_TAG",
    "TIFF_EXTENSIONS",
    "ImageTooLargeError",
    "ImageTooSmallError",
    "UnreadableImageError",
    "WriteError",
    "apply_orientation",
    "atomic_write",
    "check_image_file",
    "check_single_image",
    "failure_text",
    "file_orientation",
    "image_shape",
    "pixel_limit",
    "read_image",
    "write_mask",
    "write_probability",
]


MAX_PIXELS_ENV = "NAPARI_FOCUS_MAX_PIXELS"
#: PIL keeps its pixel limit in a global, lifted for one open at a time
_PIL_LIMIT_LOCK = threading.Lock()
ORIENTATION_TAG = 0x0112  # EXIF/TIFF Orientation: 1 = as stored, 2-8 = flipped/rotated


class ImageTooLargeError(ValueError):
    """An image file declares more pixels than the reader's limit (possibly a
    decompression bomb); it was refused before decoding."""


class UnreadableImageError(OSError):
    """An image file holds no image that can be read: it is empty, its contents are not
    an image format, or it is truncated. The message says which and what to do."""


_AGAIN = "copy the image again, or leave it out"


def _unreadable(path: Path, error: Exception) -> UnreadableImageError | None:
    """The plain-words error for a file that is not an image, truncated or not readable
    by this user (None for other errors, which keep their own message)."""
    text = str(error)
    if isinstance(error, PermissionError):  # or locked by another program (Windows)
        reason = (error.strerror or "permission denied").lower()
        return UnreadableImageError(
            f"{path.name} cannot be read ({reason}): make it readable for you, or move it "
            "out of the folder"
        )
    if isinstance(error, UnidentifiedImageError) or text.startswith("not a TIFF file"):
        what = "a TIFF" if path.suffix.lower() in TIFF_EXTENSIONS else "an image"
        return UnreadableImageError(
            f"{path.name} is not {what} file that can be read: its contents are in no image "
            f"format napari-focus reads, whatever its name says; {_AGAIN}"
        )
    if "truncated" in text.lower() or text.startswith("failed to read"):
        # the decoder's own words ("11 bytes not processed") tell the user nothing more
        return UnreadableImageError(
            f"{path.name} is truncated: the file ends before its image does (an "
            f"interrupted copy or download?); {_AGAIN}"
        )
    return None


class StackError(ValueError):
    """An image file holds a stack of planes where one picture was expected."""


class ImageTooSmallError(ValueError):
    """An image file's picture is smaller than FOCUS takes (either side below 32)."""


def check_single_image(image: np.ndarray, name: str) -> np.ndarray:
    """``image`` if it is one picture (gray, RGB or RGBA) of at least 32x32 pixels; a
    stack of planes (a multi-page TIFF) raises :class:`StackError`, a smaller picture
    :class:`ImageTooSmallError`, each naming the file ``name``, what is wrong and what
    to do."""
    from .transforms import MIN_SIDE

    planar = image.ndim == 3 and image.shape[-1] not in (1, 3, 4)
    if planar and image.shape[-1] <= 16 and image.shape[-1] < min(image.shape[:2]):
        # (H, W, C) of a few channels (two-channel gray + alpha, multispectral), no stack
        raise StackError(
            f"{name} has {image.shape[-1]} channels (array of shape {tuple(image.shape)}); "
            "FOCUS segments gray, RGB or RGBA images: save it with 1, 3 or 4 channels"
        )
    if planar or image.ndim > 3:
        planes = int(np.prod(image.shape[:-2])) if planar else int(np.prod(image.shape[:-3]))
        raise StackError(
            f"{name} holds {planes} planes (array of shape {tuple(image.shape)}), not one "
            "picture; FOCUS segments single images (gray, RGB or RGBA): save each plane "
            "as its own file, or open the stack in napari and run the widget on a plane"
        )
    if image.ndim >= 2 and min(image.shape[:2]) < MIN_SIDE:
        height, width = image.shape[:2]
        raise ImageTooSmallError(
            f"{name} is {width}x{height} pixels; FOCUS needs at least {MIN_SIDE}x{MIN_SIDE}"
        )
    return image


def failure_text(error: BaseException) -> str:
    """A failed image in one line, as every command says it: the message alone (the
    command line names no Python exception class), the exception's kind only when it
    has none, running out of memory in words (it was already retried alone when it
    failed in a batch)."""
    from .devices import memory_failure_text

    return memory_failure_text(error) or str(error).strip() or type(error).__name__


def pixel_limit() -> int | None:
    """The pixel limit of :func:`read_image`: ``$NAPARI_FOCUS_MAX_PIXELS`` if set (``0``
    = no limit), else PIL's ``Image.MAX_IMAGE_PIXELS`` (None there = no limit)."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if raw:
        try:
            value = int(float(raw))
        except ValueError:
            raise ValueError(
                f"{MAX_PIXELS_ENV}={raw!r} is not a number of pixels (0 = no limit)"
            ) from None
        if value < 0:
            raise ValueError(
                f"{MAX_PIXELS_ENV}={raw!r} is below 0 (a number of pixels; 0 = no limit)"
            )
        return value if value > 0 else None
    limit = Image.MAX_IMAGE_PIXELS
    return int(limit) if limit else None


def _check_pixels(path: Path, height: int, width: int, planes: int, limit: int | None) -> None:
    pixels = height * width * planes
    if limit is not None and pixels > limit:
        planes_text = f" x {planes} planes" if planes > 1 else ""
        raise ImageTooLargeError(
            f"{path.name}: {width} x {height}{planes_text} = {pixels:,} pixels is above the limit "
            f"of {limit:,} pixels (a damaged file or a decompression bomb?); not decoded. "
            f"Set {MAX_PIXELS_ENV} to raise the limit for a genuine large image."
        )


def read_image(
    path: str | os.PathLike, *, max_pixels: int | Literal["default"] | None = "default"
) -> np.ndarray:
    """Read an image file as a numpy array (gray, RGB or RGBA; uint8/uint16/float).

    The pixels come in the file's EXIF (or TIFF) orientation, as a photo viewer shows
    them and as detectron2's ``read_image`` (the official FOCUS training and demo)
    gives them: a phone photo stored sideways with Orientation 6 comes out upright.
    Files that declare more than ``max_pixels`` pixels (default: :func:`pixel_limit`;
    None = no limit) are refused with :class:`ImageTooLargeError` before decoding, PNG,
    JPEG, TIFF and every other format alike.
    """
    path = Path(path)
    limit = pixel_limit() if max_pixels == "default" else max_pixels
    with _said_plainly(path):
        return _read_image(path, limit)


def check_image_file(path: str | os.PathLike) -> None:
    """Raise what :func:`read_image` would for a file whose header already shows that it
    cannot be read (a link to nothing, empty, in no image format), decoding no pixels."""
    path = Path(path)
    with _said_plainly(path), contextlib.suppress(Image.DecompressionBombError):
        if path.suffix.lower() in TIFF_EXTENSIONS:
            tifffile.TiffFile(path).close()
        else:
            Image.open(path).close()  # the pixel limit is read_image's to apply


@contextlib.contextmanager
def _said_plainly(path: Path) -> Iterator[None]:
    """Reading ``path`` inside the block: a missing, empty, unknown, truncated or
    forbidden file raises in plain words (:func:`_unreadable`)."""
    try:
        _check_present(path)
    except PermissionError as error:  # in a folder one may list but not enter
        raise _unreadable(path, error) from error
    try:
        yield
    except (OSError, ValueError) as error:
        if isinstance(error, ImageTooLargeError | UnreadableImageError):
            raise
        plain = _unreadable(path, error)
        if plain is None:
            raise
        raise plain from error


def _check_present(path: Path) -> None:
    """Raise for a link to nothing, a loop of links or an empty file, in plain words."""
    if path.is_symlink() and not path.exists():
        try:
            os.stat(path)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{path.name} is a link to {os.readlink(path)!r}, which does not exist"
            ) from None
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            raise UnreadableImageError(
                f"{path.name} is a link that leads back to itself (a loop of links): point "
                "it at the image file"
            ) from None
    if path.stat().st_size == 0:
        raise UnreadableImageError(
            f"{path.name} is empty (0 bytes; an interrupted copy or download?): {_AGAIN}"
        )


def _read_image(path: Path, limit: int | None) -> np.ndarray:
    if path.suffix.lower() in TIFF_EXTENSIONS:
        return _read_tiff(path, limit)
    try:
        image_file = Image.open(path)
    except Image.DecompressionBombError as exc:  # above twice PIL's own limit
        pil_refuses = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        if limit is not None and limit <= pil_refuses:  # ours refuses it too
            raise ImageTooLargeError(
                f"{path.name}: more than {pil_refuses:,} pixels is above the limit of "
                f"{limit:,} pixels (a damaged file or a decompression bomb?); not decoded. "
                f"Set {MAX_PIXELS_ENV} to raise the limit for a genuine large image."
            ) from exc
        image_file = _open_beyond_pil_limit(path)  # a larger limit was asked for
    with image_file as image:
        _check_pixels(path, image.height, image.width, 1, limit)
        orientation = file_orientation(image)
        if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
            image = image.convert(
                "RGBA" if "A" in image.mode or "transparency" in image.info else "RGB"
            )
        elif image.mode == "LA":
            image = image.convert("L")
        return apply_orientation(np.array(image), orientation)


def _open_beyond_pil_limit(path: Path) -> Image.Image:
    """``Image.open`` without PIL's pixel check (the caller applies its own limit). PIL
    keeps that limit in a global, lifted for this call under a lock that orders the
    lifts; an ``Image.open`` in another thread meanwhile skips PIL's check too, and
    :func:`_check_pixels`, which every read applies, stands in for it."""
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def file_orientation(image: Image.Image) -> int:
    """The EXIF Orientation (1-8) of an open PIL image; 1 when absent or unreadable
    (Pillow also takes it from XMP ``tiff:Orientation`` when EXIF has none)."""
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # a damaged EXIF block must not make the image unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def image_shape(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image file as :func:`read_image` gives it (EXIF
    orientation applied), without keeping its pixels (PIL-readable formats; for a PNG
    without EXIF before its pixels, Pillow decodes it to look for a later chunk)."""
    with Image.open(path) as image:
        height, width = image.height, image.width
        return (width, height) if file_orientation(image) >= 5 else (height, width)


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """The stored pixels ``array`` (H, W[, C]) turned to how Orientation ``orientation``
    says to show them (the transposes of PIL's ``ImageOps.exif_transpose``)."""
    if orientation in (5, 6, 7, 8):
        array = np.swapaxes(array, 0, 1)  # transpose first: then one flip at most
    flips = {2: (1,), 3: (0, 1), 4: (0,), 6: (1,), 7: (0, 1), 8: (0,)}.get(orientation, ())
    if not flips and orientation != 5:
        return array
    return np.ascontiguousarray(np.flip(array, axis=flips) if flips else array)


def _read_tiff(path: Path, limit: int | None) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ValueError(f"{path}: no image in this TIFF file")
        series = tif.series[0]
        shape = tuple(int(n) for n in series.shape)
        # colour samples stored plane after plane (PlanarConfiguration 2): one RGB image
        planar = len(shape) >= 3 and series.axes.endswith("SYX")
        if planar:
            shape = (*shape[:-3], shape[-2], shape[-1], shape[-3])
        spatial = shape[:-1] if len(shape) >= 3 and shape[-1] in (1, 3, 4) else shape
        if len(spatial) < 2:
            raise ValueError(f"{path}: TIFF image of shape {shape} is not 2-D")
        planes = int(np.prod(spatial[:-2], dtype=np.int64)) if len(spatial) > 2 else 1
        _check_pixels(path, spatial[-2], spatial[-1], planes, limit)
        # pages written one by one are series of one shape: a stack, not its first page
        pages = [s for s in tif.series if s.shape == series.shape and s.dtype == series.dtype]
        if len(pages) > 1:
            planes *= len(pages)
            _check_pixels(path, spatial[-2], spatial[-1], planes, limit)
            array = np.stack([page.asarray() for page in pages])
        else:
            array = tif.asarray()  # series 0, as tifffile.imread reads it
        if planar:
            array = np.moveaxis(array, -3, -1)
        tag = tif.pages.first.tags.get(ORIENTATION_TAG)
        orientation = int(tag.value) if tag is not None and planes == 1 else 1
    # a single-plane file may carry leading singleton axes
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3, 4)):
        return apply_orientation(array, orientation if 1 <= orientation <= 8 else 1)
    return array


def write_mask(
    path: str | os.PathLike, mask: np.ndarray, *, record: str | None = None, replace: bool = True
) -> Path:
    """Binary mask as 0/255 uint8, PNG or TIFF by the file extension. ``record``: an ASCII
    text kept in the file (:mod:`~napari_focus.mask_provenance`); ``replace=False``: an
    existing file stays (:class:`FileExistsError`)."""
    data = np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8)
    return _write_image(path, data, record, replace)


def write_probability(
    path: str | os.PathLike,
    probability: np.ndarray,
    *,
    record: str | None = None,
    replace: bool = True,
) -> Path:
    """Probability map: float32 TIFF, or 8-bit PNG (``round(p * 255)``)."""
    prob = np.asarray(probability, dtype=np.float32)
    if Path(path).suffix.lower() in TIFF_EXTENSIONS:
        return _write_image(path, prob, record, replace)
    data = np.round(np.clip(prob, 0, 1) * 255).astype(np.uint8)
    return _write_image(path, data, record, replace)


def _write_image(
    path: str | os.PathLike, data: np.ndarray, record: str | None, replace: bool
) -> Path:
    if Path(path).suffix.lower() in TIFF_EXTENSIONS:
        # metadata=None: the record is the only image description, not tifffile's shape
        how = {"description": record, "metadata": None} if record else {}
        return atomic_write(
            path,
            lambda tmp: tifffile.imwrite(tmp, data, compression="zlib", **how),
            replace=replace,
        )
    info = None
    if record:
        from PIL.PngImagePlugin import PngInfo

        from .mask_provenance import RECORD_KEY

        info = PngInfo()
        info.add_text(RECORD_KEY, record)
    image = Image.fromarray(data)
    return atomic_write(
        path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info), replace=replace
    )
