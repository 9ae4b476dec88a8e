"""Pure-PyTorch FOCUS model: no napari, Qt, detectron2 or CLIP."""

from .config import FocusArchitecture, resolve_architecture
from .focus import FocusModel, build_model

__all__ = ["FocusArchitecture", "FocusModel", "build_model", "resolve_architecture"]
