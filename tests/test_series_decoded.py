"""The bounded store of decoded series images, and what Previous would reach."""

from __future__ import annotations

import numpy as np

from napari_focus.series import ImageQueue, Status
from napari_focus.series.decoded import DecodedImages


def _image(megabytes: int) -> np.ndarray:
    return np.zeros(megabytes * 1_000_000, np.uint8)


def test_the_neighbourhood_is_evicted_last():
    decoded = DecodedImages(capacity=3, max_bytes=10**9)
    decoded.neighbourhood(["b", "c", "d"])
    for key in "abcd":
        decoded.put(key, _image(1))
    assert decoded.keys() == ["b", "c", "d"]  # "a", outside, went first
    decoded.neighbourhood(["d", "e"])
    decoded.put("e", _image(1))
    assert decoded.keys() == ["c", "d", "e"]  # then the oldest inside
    assert decoded.get("b") is None and "e" in decoded


def test_bytes_are_bounded_but_the_image_just_put_stays():
    decoded = DecodedImages(capacity=10, max_bytes=5_000_000)
    decoded.put("a", _image(2))
    decoded.put("b", _image(2))
    decoded.put("c", _image(2))
    assert decoded.keys() == ["b", "c"] and decoded.nbytes == 4_000_000
    decoded.put("huge", _image(8))
    assert decoded.keys() == ["huge"]
    decoded.clear()
    assert len(decoded) == 0


def test_preceding_is_what_previous_reaches():
    queue = ImageQueue.from_names([f"img{i}" for i in range(5)])
    queue.jump(4)
    queue.mark("img2", Status.ACCEPTED)
    assert queue.preceding(2, include_exported=True) == [3, 2]
    expected = []
    probe = ImageQueue.from_names([f"img{i}" for i in range(5)])
    probe.jump(4)
    probe.mark("img2", Status.ACCEPTED)
    while (item := probe.previous(include_exported=False)) is not None:
        expected.append(probe.keys().index(item.key))
    assert queue.preceding(5, include_exported=False) == expected
    assert queue.index == 4  # nothing moved
