"""Image validation, conversion and the FOCUS test-time resize/normalise/pad."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .presets import InputPreset

if TYPE_CHECKING:  # torch is imported where it is used: the CLI's --help stays fast
    import torch

MIN_SIDE = 32
ACCEPTED = (
    "a 2-D (H, W) gray image or a 3-D (H, W, 1|3|4) gray/RGB/RGBA image, "
    "dtype uint8, uint16, another integer type, bool or float, at least 32x32 pixels, "
    "with finite values"
)


def check_image(image: np.ndarray) -> None:
    """Raise ValueError (naming what was received and what is accepted) unless
    :func:`to_rgb_uint8` can convert ``image``: the one acceptance rule shared by the
    model's input and the series' image reader."""
    _validated(image)


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Validate an image and convert it to ``(H, W, 3)`` uint8 RGB.

    Conversion rules:

    * gray is repeated into three channels; an alpha channel is dropped;
    * uint8 is used as is; uint16 is scaled by ``255 / 65535`` and rounded;
      bool maps to 0/255;
    * other integer types (int8-int64, uint32, uint64, a nested list of ints) as a
      float array of the same numbers (below): ``np.array(pixels)`` or
      ``image.astype(int)`` of an 8-bit picture keeps its picture, and one value
      above 255 (a pixel of 256) stretches the others a little, never darkens them;
    * float in ``[0, 1]`` is multiplied by 255; float in ``[0, 255]`` is taken
      as 8-bit intensities; any other float range is stretched linearly from
      its minimum to its maximum (a constant image outside ``[0, 255]`` has no
      range to stretch and is clipped to it); then rounded.

    Raises:
        ValueError: naming what was received and what is accepted.
    """
    array, channels = _validated(image)
    if array.dtype == np.uint8:
        u8 = array
    elif array.dtype == np.uint16:
        u8 = _uint16_to_uint8(array)
    elif array.dtype == np.bool_:
        u8 = array.astype(np.uint8) * 255
    else:  # other integers as a float array of the same numbers
        u8 = _float_to_uint8(array)

    if channels == 1:
        gray = u8 if u8.ndim == 2 else u8[..., 0]
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.ascontiguousarray(u8[..., :3])


def is_one_image(images: Any) -> bool:
    """Whether ``images`` is one 2-D image, or one with channels (``H x W x 1|3|4``),
    rather than a stack or a list of them."""
    shape = getattr(images, "shape", None)
    return shape is not None and (len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3, 4)))


def _validated(image: np.ndarray) -> tuple[np.ndarray, int]:
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # a tensor, perhaps on a GPU
        image = image.detach().cpu()
        if str(image.dtype) == "torch.bfloat16":  # a dtype NumPy does not have
            image = image.float()
    try:
        array = np.asarray(image)
    except ValueError:  # a ragged nested list
        raise ValueError(
            f"image is a ragged sequence ({type(image).__name__} whose rows differ in "
            f"length), not a rectangular array; expected {ACCEPTED}"
        ) from None
    received = f"array of shape {array.shape} and dtype {array.dtype}"
    if array.size == 0:
        raise ValueError(f"empty image ({received}); expected {ACCEPTED}")
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        channels = array.shape[-1]
    elif array.ndim == 2:
        channels = 1
    else:
        raise ValueError(f"unsupported image layout ({received}); expected {ACCEPTED}")
    height, width = array.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"image is too small ({received}); expected {ACCEPTED}")
    kind = array.dtype.kind
    if kind not in "uifb":
        raise ValueError(f"unsupported dtype ({received}); expected {ACCEPTED}")
    if kind == "f" and not np.isfinite(array).all():
        raise ValueError(
            f"image holds NaN or infinite values ({received}); replace them with numbers "
            "(e.g. 0) or save the image without them"
        )
    return array, channels


def _uint16_to_uint8(array: np.ndarray) -> np.ndarray:
    return np.round(array.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)


def _float_to_uint8(array: np.ndarray) -> np.ndarray:
    values = array.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif low >= 0.0 and high <= 255.0:
        scaled = values
    elif high > low:  # halved first, so that a range wider than float64's max stays finite
        scaled = (values / 2 - low / 2) * (255.0 / (high / 2 - low / 2))
    else:  # constant image outside [0, 255]: nothing to stretch
        scaled = np.full_like(values, 0.0 if high < 0.0 else 255.0)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def resized_shape(height: int, width: int, short_side: int, max_long_side: int) -> tuple[int, int]:
    """Shortest-edge resize target ``(h, w)``: short side -> ``short_side``, long side capped.

    Raises:
        ValueError: for an aspect ratio so extreme that the short side would round to 0.
    """
    scale = short_side / min(height, width)
    new_h, new_w = height * scale, width * scale
    if max(new_h, new_w) > max_long_side:
        cap = max_long_side / max(new_h, new_w)
        new_h, new_w = new_h * cap, new_w * cap
    if min(new_h, new_w) < 0.5:
        short, long = sorted((height, width))
        raise ValueError(
            f"image of {height} x {width} pixels (H x W) is too elongated for the model: "
            f"with its long side scaled to {max_long_side} pixels its short side would be "
            f"{min(new_h, new_w):.2f} pixels; crop it or cut it into pieces no longer than "
            f"{int(2 * max_long_side)} times their short side (this one is {long / short:.0f}:1)"
        )
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_rgb(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of uint8 RGB with PIL (what FOCUS was evaluated with)."""
    if image.shape[:2] == shape:
        return image
    return np.array(Image.fromarray(image).resize((shape[1], shape[0]), Image.BILINEAR))


def normalize_and_pad(
    image: np.ndarray, preset: InputPreset, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """uint8 RGB ``(h, w, 3)`` -> ``(1, 3, H, W)`` float32, normalised, zero-padded
    bottom/right to multiples of ``preset.size_divisibility``."""
    import torch
    import torch.nn.functional as F

    x = _host_tensor(image).to(device).permute(2, 0, 1).float()
    mean = torch.tensor(preset.pixel_mean, device=x.device).view(3, 1, 1)
    std = torch.tensor(preset.pixel_std, device=x.device).view(3, 1, 1)
    x = (x - mean) / std
    div = preset.size_divisibility
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % div, (-w) % div
    return F.pad(x, (0, pad_w, 0, pad_h))[None]


@dataclass(frozen=True)
class PreparedView:
    """One model input prepared on the host: the resized image and its edges.

    resized: ``(h, w, 3)`` uint8 RGB after the shortest-edge resize.
    edges: ``(H, W, 3)`` uint8 BGR edge-injected image of the padded input
        (``H, W`` = ``h, w`` rounded up to the size divisibility).
    """

    resized: np.ndarray
    edges: np.ndarray

    @property
    def resized_hw(self) -> tuple[int, int]:
        return self.resized.shape[0], self.resized.shape[1]

    @property
    def padded_hw(self) -> tuple[int, int]:
        return self.edges.shape[0], self.edges.shape[1]


@functools.lru_cache(maxsize=8)
def _quantised_lut(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``(256, 3)`` uint8: what :func:`quantise_normalised` makes of each 8-bit value
    once normalised, computed with the same float32 operations as
    :func:`normalize_and_pad`, so the table is bit-identical to the tensor path."""
    import torch

    from .model.edge_prior import quantise_normalised

    values = torch.arange(256, dtype=torch.uint8).float()[:, None]
    normalised = (values - torch.tensor(mean)) / torch.tensor(std)
    return quantise_normalised(normalised).numpy()


def padded_shape(height: int, width: int, divisibility: int) -> tuple[int, int]:
    return height + (-height) % divisibility, width + (-width) % divisibility


def prepare_view(
    rgb: np.ndarray, short_side: int, max_long_side: int, preset: InputPreset
) -> PreparedView:
    """Resize and edge-inject one ``(H, W, 3)`` uint8 RGB image on the host.

    The edges equal :func:`~napari_focus.model.edge_prior.edge_injected_u8` of the
    normalised, padded tensor bit for bit: normalising and quantising a uint8 value
    is a per-channel table, and zero padding quantises to 0.
    """
    from .model.edge_prior import blend_canny_edges

    resized = resize_rgb(rgb, resized_shape(*rgb.shape[:2], short_side, max_long_side))
    h, w = resized.shape[:2]
    lut = _quantised_lut(tuple(preset.pixel_mean), tuple(preset.pixel_std))
    canvas = np.zeros((*padded_shape(h, w, preset.size_divisibility), 3), np.uint8)
    canvas[:h, :w] = lut[resized, np.arange(3)]
    return PreparedView(resized=resized, edges=blend_canny_edges(canvas))


def upload_views(
    views: list[PreparedView], preset: InputPreset, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Views of one padded size -> the model's ``images`` and ``edges`` on ``device``
    (uint8 goes over the bus; normalisation and padding happen on the device)."""
    import torch

    from .model.edge_prior import edges_to_float

    padded = views[0].padded_hw
    if any(view.padded_hw != padded for view in views):
        raise ValueError("upload_views needs views of one padded size")
    mean = _to_device(np.array(preset.pixel_mean, np.float32), device).view(3, 1, 1)
    std = _to_device(np.array(preset.pixel_std, np.float32), device).view(3, 1, 1)
    images = torch.zeros((len(views), 3, *padded), device=device)
    for i, view in enumerate(views):
        h, w = view.resized_hw
        x = _to_device(view.resized, device).permute(2, 0, 1).float()
        images[i, :, :h, :w] = (x - mean) / std
    edges = edges_to_float(_to_device(np.stack([view.edges for view in views]), device))
    return images, edges


def _host_tensor(array: np.ndarray) -> torch.Tensor:
    """``array`` as a CPU tensor sharing its memory, copied where it is read-only (a
    memory-mapped file: torch warns about tensors over memory it may not write)."""
    import torch

    array = np.ascontiguousarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = _host_tensor(array)
    if device.type == "cuda":  # pinned host memory: the copy does not block the host
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
