"""Decoded series images kept for display, bounded in count and bytes; no threads here,
but safe to read from the worker that computes proposals (one lock).

The widget keeps the image on screen and its neighbours (the previous one, the next
ones): Next and Previous then show pixels decoded ahead instead of decoding a file on
the GUI thread. When over a bound, images outside the neighbourhood go first, oldest
first; a 24-MP RGB image is 72 MB, so the default bounds hold four of them. With an
image go the files of the series folder read along with it (:mod:`.item_files`),
counted in its bytes and evicted with it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection

import numpy as np

from .item_files import ItemFiles

DECODED_IMAGES = 4
DECODED_BYTES = 400_000_000


class DecodedImages:
    """At most ``capacity`` images and ``max_bytes`` bytes (the image just put always
    stays, however large)."""

    def __init__(self, capacity: int = DECODED_IMAGES, max_bytes: int = DECODED_BYTES) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()  # oldest put first
        self._files: dict[str, ItemFiles] = {}
        self._keep: frozenset[str] = frozenset()

    def neighbourhood(self, keys: Collection[str]) -> None:
        """The keys evicted last (the image on screen and its neighbours)."""
        with self._lock:
            self._keep = frozenset(keys)

    def put(self, key: str, pixels: np.ndarray, files: ItemFiles | None = None) -> None:
        """Keep ``pixels`` (and the ``files`` read with them; without, the files kept
        for ``key`` stay)."""
        with self._lock:
            self._images[key] = pixels
            self._images.move_to_end(key)
            if files is not None:
                self._files[key] = files
            self._evict(protect=key)

    def files(self, key: str) -> ItemFiles | None:
        with self._lock:
            return self._files.get(key)

    def put_files(self, key: str, files: ItemFiles) -> None:
        """Replace the files kept with the pixels of ``key`` (none kept: ignored)."""
        with self._lock:
            if key in self._images:
                self._files[key] = files
                self._evict(protect=key)

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            return self._images.get(key)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._images

    def __len__(self) -> int:
        with self._lock:
            return len(self._images)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._images)

    def discard(self, key: str) -> None:
        with self._lock:
            self._images.pop(key, None)
            self._files.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._images.clear()
            self._files.clear()
            self._keep = frozenset()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._nbytes()

    def _nbytes(self) -> int:
        files = sum(entry.nbytes for entry in self._files.values())
        return files + sum(image.nbytes for image in self._images.values())

    def _evict(self, protect: str) -> None:
        def over() -> bool:
            return len(self._images) > self.capacity or self._nbytes() > self.max_bytes

        order = [k for k in self._images if k not in self._keep] + [
            k for k in self._images if k in self._keep
        ]
        for key in order:
            if not over():
                return
            if key != protect:
                del self._images[key]
                self._files.pop(key, None)
