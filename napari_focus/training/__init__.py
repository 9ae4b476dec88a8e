"""Fine-tuning FOCUS on the corrected masks exported with :mod:`napari_focus.datasets`.

``train(TrainConfig(root, layouts, out, weights=...))`` reads the exported samples
(:mod:`.data`), augments them as the official training does (:mod:`.augment`), runs the
Mask2Former-style set criterion FOCUS trains with (:mod:`.criterion`, :mod:`.matcher`),
validates on held-out samples (:mod:`.validate`) and writes a ``.safetensors`` inference
checkpoint that :meth:`napari_focus.FocusPredictor.from_checkpoint` loads.
"""

from .config import TrainConfig
from .data import DatasetError, Sample, collect_samples, list_samples, split_samples
from .loop import TrainProgress, TrainResult, train
from .presets import PRESETS, HardwarePreset

__all__ = [
    "PRESETS",
    "DatasetError",
    "HardwarePreset",
    "Sample",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "collect_samples",
    "list_samples",
    "split_samples",
    "train",
]
