"""npe2 writer: a Labels layer as a 0/255 mask (PNG or TIFF by extension)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..io import TIFF_EXTENSIONS, write_mask


def write_labels(path: str, data: Any, attributes: dict) -> list[str]:
    """Write ``data > 0`` as 0/255 uint8; 2-D for PNG, any dimensionality for TIFF."""
    mask = np.asarray(data)
    target = Path(path)
    if target.suffix.lower() not in (".png", *TIFF_EXTENSIONS):
        # the save dialog confirmed replacing ``path``, not another file
        raise ValueError(
            f"a FOCUS mask is saved as .png or .tif, not as '{target.name}'; "
            "choose a file name ending in .png or .tif"
        )
    if mask.ndim != 2 and target.suffix.lower() == ".png":
        raise ValueError(
            f"a PNG holds one 2-D mask, but '{attributes.get('name', 'the layer')}' has shape "
            f"{mask.shape}; save it as .tif instead"
        )
    return [str(write_mask(target, mask))]
