"""napari-focus: FOCUS foreground segmentation for Python and napari."""

from .model import FocusArchitecture, FocusModel, build_model
from .predictor import FocusPredictor, Prediction
from .presets import TASKS

__version__ = "0.1.0"

__all__ = [
    "TASKS",
    "FocusArchitecture",
    "FocusModel",
    "FocusPredictor",
    "Prediction",
    "__version__",
    "build_model",
]
