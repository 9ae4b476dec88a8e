"""Proposals of a series kept on disk, so going back never runs the model again.

``<series folder>/proposals/<model id hash>/<work name>.npz`` holds the probability map
(float16), the model's own mask (bit-packed) and the uncertainty score of one image, with
the image file's size and modification time: a changed image does not get a stale
proposal. The score is read without the map, so ranking a series reads a few bytes per
image instead of decoding every map. One subfolder per
model (task, weights, size, precision, TTA), so switching models never mixes them.
Proposals of image layers (no file) are not kept: a layer's name says nothing of its
pixels, so another image opened under the same name would get them.
"""

from __future__ import annotations

import hashlib
import math
import os
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..io import atomic_write
from ..quality import uncertainty
from .work_names import work_name

FOLDER = "proposals"
T = TypeVar("T")


def image_signature(path: Path | None) -> np.ndarray:
    """``[size, mtime_ns]`` of an image file (zeros for an in-memory layer)."""
    if path is None:
        return np.zeros(2, np.int64)
    stat = path.stat()
    return np.array([stat.st_size, stat.st_mtime_ns], np.int64)


@dataclass(frozen=True)
class StoredProposal:
    probability: np.ndarray  # float32 (H, W)
    mask: np.ndarray  # uint8 (H, W), 0/1
    uncertainty: float  # quality.uncertainty of the probability map the model gave


class ProposalStore:
    """Save and load the proposals of one model for the images of one series."""

    def __init__(self, series_folder: str | os.PathLike, model_id: str) -> None:
        digest = hashlib.sha256(model_id.encode()).hexdigest()[:12]
        self.folder = Path(series_folder) / FOLDER / digest
        self.model_id = model_id

    def path(self, key: str) -> Path:
        return self.folder / f"{work_name(key)}.npz"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def save(
        self,
        key: str,
        source: Path | None,
        probability: np.ndarray,
        mask: np.ndarray,
        score: float | None = None,
    ) -> Path:
        """Write atomically (call from a worker thread: a 24-MP map is ~50 MB). ``score``:
        the proposal's uncertainty, computed here when not given. Nothing is written for
        an image layer (``source`` None); returns the path either way."""
        if source is None:
            return self.path(key)
        packed = np.packbits(np.asarray(mask) > 0)
        if score is None:
            score = uncertainty(probability)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as handle:
                np.savez(
                    handle,
                    probability=np.asarray(probability, np.float16),
                    mask=packed,
                    shape=np.array(mask.shape, np.int64),
                    signature=image_signature(source),
                    uncertainty=np.float64(score),
                )

        return atomic_write(self.path(key), write)

    def load(self, key: str, source: Path | None) -> StoredProposal | None:
        """The proposal, or None when absent, unreadable or made from a different version
        of the image."""

        def maps(data: np.lib.npyio.NpzFile) -> tuple[np.ndarray, np.ndarray, float | None]:
            shape = tuple(int(s) for s in data["shape"])
            mask = np.unpackbits(data["mask"], count=int(np.prod(shape))).reshape(shape)
            return data["probability"].astype(np.float32), mask, _stored_score(data)

        loaded = self._read(key, source, maps)
        if loaded is None:
            return None
        probability, mask, score = loaded
        if score is None:  # written before scores were stored
            score = uncertainty(probability)
        return StoredProposal(probability, mask.astype(np.uint8), score)

    def uncertainty(self, key: str, source: Path | None) -> float | None:
        """The stored proposal's uncertainty without reading its maps (None as in
        :meth:`load`)."""
        found = self._read(key, source, lambda data: (_stored_score(data),))
        if found is None:
            return None
        if found[0] is None:
            stored = self.load(key, source)
            return None if stored is None else stored.uncertainty
        return found[0]

    def _read(self, key: str, source: Path | None, read: Callable[[Any], T]) -> T | None:
        """``read(npz)`` of the proposal of ``key`` if it was made from this version of
        the image; None when absent or unreadable."""
        path = self.path(key)
        if source is None or not path.is_file():  # an image layer's are never kept
            return None
        try:
            with np.load(path) as data:
                if not np.array_equal(data["signature"], image_signature(source)):
                    return None
                return read(data)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
            return None  # damaged (e.g. by a disk fault): computed again when needed


def _stored_score(data: np.lib.npyio.NpzFile) -> float | None:
    if "uncertainty" not in data.files:
        return None
    score = float(data["uncertainty"])
    return score if math.isfinite(score) else None
