"""napari widgets and helpers (the only part of napari-focus that imports napari or Qt)."""
