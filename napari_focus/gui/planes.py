"""Turning a napari Image layer into the 2-D planes FOCUS segments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..transforms import MIN_SIDE


class UnsupportedLayerError(ValueError):
    """The layer cannot be segmented; the message says why and what would work."""


@dataclass(frozen=True)
class LayerPlanes:
    """The highest-resolution data of an image layer seen as a stack of 2-D planes.

    ``spatial_shape`` is the layer shape without the RGB(A) channel axis:
    ``(..., H, W)``; every leading index addresses one plane.
    """

    data: Any
    rgb: bool
    spatial_shape: tuple[int, ...]

    @property
    def stack_shape(self) -> tuple[int, ...]:
        return self.spatial_shape[:-2]

    @property
    def is_stack(self) -> bool:
        return len(self.stack_shape) > 0 and int(np.prod(self.stack_shape)) > 1

    def all_indices(self) -> list[tuple[int, ...]]:
        return list(np.ndindex(self.stack_shape)) if self.stack_shape else [()]

    def plane(self, index: tuple[int, ...]) -> np.ndarray:
        return np.asarray(self.data[index] if index else self.data)

    def shown_by(self, layer: Any) -> bool:
        """Whether ``layer`` still holds these pixels (a series' Next gives its image
        layer those of another file)."""
        return (layer.data[0] if layer.multiscale else layer.data) is self.data


def layer_planes(layer: Any) -> LayerPlanes:
    """Describe an Image layer; raise :class:`UnsupportedLayerError` for anything else."""
    from napari.layers import Image

    if not isinstance(layer, Image):
        kind = type(layer).__name__
        raise UnsupportedLayerError(f"'{layer.name}' is a {kind} layer; FOCUS needs an Image layer")
    data = layer.data[0] if layer.multiscale else layer.data
    rgb = bool(layer.rgb)
    spatial = tuple(int(s) for s in (data.shape[:-1] if rgb else data.shape))
    if len(spatial) < 2:
        raise UnsupportedLayerError(f"'{layer.name}' has fewer than two spatial dimensions")
    if min(spatial[-2:]) < MIN_SIDE:
        raise UnsupportedLayerError(
            f"'{layer.name}' planes are {spatial[-2]}x{spatial[-1]} pixels; FOCUS needs at least "
            f"{MIN_SIDE}x{MIN_SIDE}"
        )
    if np.dtype(data.dtype).kind not in "uifb":
        raise UnsupportedLayerError(f"'{layer.name}' has dtype {data.dtype}; expected numbers")
    return LayerPlanes(data=data, rgb=rgb, spatial_shape=spatial)


def current_plane_index(layer: Any, world_point: tuple[float, ...], planes: LayerPlanes) -> tuple:
    """Index of the plane the viewer shows now (clipped to the layer's extent)."""
    if not planes.stack_shape:
        return ()
    data_point = layer.world_to_data(world_point)
    leading = data_point[: len(planes.stack_shape)]
    return tuple(
        int(np.clip(round(float(v)), 0, n - 1))
        for v, n in zip(leading, planes.stack_shape, strict=True)
    )
