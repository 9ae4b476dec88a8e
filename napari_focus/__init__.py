"""napari-focus: FOCUS foreground segmentation for Python and napari.

The model classes are imported on first use, so that importing the package (and
running ``napari-focus --help``) does not load PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .presets import TASKS

if TYPE_CHECKING:
    from .model import FocusArchitecture, FocusModel, build_model
    from .predictor import FocusPredictor, Prediction

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

_LAZY = {
    "FocusArchitecture": "model",
    "FocusModel": "model",
    "build_model": "model",
    "FocusPredictor": "predictor",
    "Prediction": "predictor",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
