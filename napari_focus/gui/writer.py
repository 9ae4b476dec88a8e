"""npe2 writer: a Labels layer as a 0/255 mask (PNG or TIFF by extension)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..io import TIFF_EXTENSIONS, write_mask


class MaskNotSaved(OSError):
    """The layer cannot be saved as a FOCUS mask under that name; the message says what
    to do. Not a ValueError: napari takes that from a writer it picked itself for "no
    writer found", which would hide the reason."""


def write_labels(path: str, data: Any, attributes: dict) -> list[str]:
    """Write ``data > 0`` as 0/255 uint8; 2-D for PNG, any dimensionality for TIFF.
    A layer of several labels that is not one of this plugin's masks is refused: napari
    offers this writer for every Labels layer saved as .png or .tif."""
    mask = np.asarray(data)
    target = Path(path)
    if target.suffix.lower() not in (".png", *TIFF_EXTENSIONS):
        # the save dialog confirmed replacing ``path``, not another file
        raise MaskNotSaved(
            f"a FOCUS mask is saved as .png or .tif, not as '{target.name}'; "
            "choose a file name ending in .png or .tif"
        )
    if mask.ndim != 2 and target.suffix.lower() == ".png":
        raise MaskNotSaved(
            f"a PNG holds one 2-D mask, but '{attributes.get('name', 'the layer')}' has shape "
            f"{mask.shape}; save it as .tif instead"
        )
    several = several_labels(mask)
    if several is not None and not _focus_layer(attributes):
        low, high = several
        raise MaskNotSaved(
            f"'{attributes.get('name', 'the layer')}' holds several labels (ids {low} to "
            f"{high}); a binary mask (0/255) has one foreground and would merge them. To keep "
            "the labels, save as .tif and choose the file type 'napari builtins labels' in "
            "the save dialog"
        )
    return [str(write_mask(target, mask))]


def several_labels(mask: np.ndarray) -> tuple[int, int] | None:
    """The lowest and highest label id of a mask holding more than one; else None."""
    if mask.dtype == np.bool_ or not mask.size:
        return None
    high = mask.max()
    if high <= 0:
        return None
    low = mask[mask > 0].min()
    return (int(low), int(high)) if low != high else None


def _focus_layer(attributes: dict) -> bool:
    """A layer of this plugin (a proposal, a series mask): every id > 0 is foreground,
    as when it is accepted or exported, whichever label the brush had."""
    metadata = attributes.get("metadata") or {}
    return any(str(key).startswith("napari_focus") for key in metadata)
