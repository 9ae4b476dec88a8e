"""The quality line shown after Accept: how far the model's proposal was from the mask
the user accepted (or from the ground truth). No napari here: the widget runs it in a
separate process, because the metrics (scipy.ndimage inside PySODMetrics) hold the GIL
for long stretches on large images and would freeze napari from a thread."""

from __future__ import annotations

import numpy as np


def quality_text(
    name: str, proposal: np.ndarray | None, reference: np.ndarray, against: str
) -> str:
    """``"<name>: proposal vs <against>: IoU ..., MAE ..., S ..., E ..., wF ..., BER ..."``
    for the proposal as it was shown (after refinement)."""
    if proposal is None:
        return f"{name}: no model proposal to compare (it started from a saved mask)"
    try:
        from ..quality import mask_metrics

        metrics = mask_metrics((np.asarray(proposal) > 0).astype(np.float32), reference)
    except ImportError as error:
        return str(error)
    return (
        f"{name}: proposal vs {against}: IoU {metrics['iou']:.3f}, MAE {metrics['mae']:.3f}, "
        f"S {metrics['smeasure']:.3f}, E {metrics['emeasure_mean']:.3f}, "
        f"wF {metrics['wfmeasure']:.3f}, BER {metrics['ber']:.3f}"
    )
