"""Decoded series images kept for display, bounded in count and bytes; no threads here,
but safe to read from the worker that computes proposals (one lock).

The widget keeps the image on screen and its neighbours (the previous one, the next
ones): Next and Previous then show pixels decoded ahead instead of decoding a file on
the GUI thread. When over a bound, images outside the neighbourhood go first, oldest
first; a 24-MP RGB image is 72 MB, so the default bounds hold four of them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection

import numpy as np

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
        self._keep: frozenset[str] = frozenset()

    def neighbourhood(self, keys: Collection[str]) -> None:
        """The keys evicted last (the image on screen and its neighbours)."""
        with self._lock:
            self._keep = frozenset(keys)

    def put(self, key: str, pixels: np.ndarray) -> None:
        with self._lock:
            self._images[key] = pixels
            self._images.move_to_end(key)
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

    def clear(self) -> None:
        with self._lock:
            self._images.clear()
            self._keep = frozenset()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(image.nbytes for image in self._images.values())

    def _evict(self, protect: str) -> None:
        def over() -> bool:
            size = sum(image.nbytes for image in self._images.values())
            return len(self._images) > self.capacity or size > self.max_bytes

        order = [k for k in self._images if k not in self._keep] + [
            k for k in self._images if k in self._keep
        ]
        for key in order:
            if not over():
                return
            if key != protect:
                del self._images[key]
