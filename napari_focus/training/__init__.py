"""Fine-tuning FOCUS on the corrected masks exported with :mod:`napari_focus.datasets`.

``train(TrainConfig(root, layouts, out, weights=...))`` reads the exported samples
(:mod:`.data`), augments them as the official training does (:mod:`.augment`), runs the
Mask2Former-style set criterion FOCUS trains with (:mod:`.criterion`, :mod:`.matcher`),
validates on held-out samples (:mod:`.validate`) and writes a ``.safetensors`` inference
checkpoint that :meth:`napari_focus.FocusPredictor.from_checkpoint` loads.

The names below are imported on first use, so that ``napari_focus.training.cli`` (the
``train`` subcommand's parser) loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": ".config",
    "DatasetError": ".data",
    "Sample": ".data",
    "TrainingDiverged": ".matcher",
    "collect_samples": ".data",
    "list_samples": ".data",
    "split_samples": ".data",
    "TrainProgress": ".outcome",
    "TrainResult": ".outcome",
    "train": ".loop",
    "PRESETS": ".presets",
    "HardwarePreset": ".presets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
