"""Distributed batch prediction on Ray Data (``pip install 'napari-focus[ray]'``).

- :func:`predict_dataset`: FOCUS over many images (files, folders, globs, lists, object
  store URIs) on a Ray cluster or a local Ray instance; masks written as
  ``napari-focus predict`` writes them, a results manifest (:mod:`.manifest`).
- :func:`write_ranking`, :func:`order_series`: the manifest as a ``napari-focus rank``
  CSV, and a labeling series in that order (:func:`image_folder_of`: the image folder
  both name images by).
- :mod:`.cli`: ``napari-focus predict ... --engine ray``.

Ray is imported only when a run starts.
"""

from __future__ import annotations

from .engine import DatasetRun, predict_dataset
from .manifest import (
    MANIFEST_NAME,
    RANKING_NAME,
    image_folder_of,
    order_series,
    ranking_rows,
    read_manifest,
    read_ranking,
    write_manifest,
    write_ranking,
)
from .resources import plan_resources

__all__ = [
    "MANIFEST_NAME",
    "RANKING_NAME",
    "DatasetRun",
    "image_folder_of",
    "order_series",
    "plan_resources",
    "predict_dataset",
    "ranking_rows",
    "read_manifest",
    "read_ranking",
    "write_manifest",
    "write_ranking",
]
