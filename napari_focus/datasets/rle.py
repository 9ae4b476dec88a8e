"""COCO run-length encoding in numpy, as ``pycocotools.mask.encode`` writes it.

The official FOCUS preparation scripts store ``segmentation`` as a *compressed* RLE:
``{"size": [height, width], "counts": "<ascii string>"}``, runs counted in column-major
(Fortran) order starting with a run of zeros, and the counts packed in the COCO string
format (6-bit groups offset by 48, counts after the second stored as differences to the
count two places earlier). ``bbox`` is ``[x, y, width, height]`` as floats and ``area``
is the foreground pixel count as an int, which is what ``toBbox``/``area`` return.
"""

from __future__ import annotations

import numpy as np


def run_lengths(mask: np.ndarray) -> list[int]:
    """Column-major run lengths of a 2-D binary mask, beginning with a (maybe empty) 0-run."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts.insert(0, 0)
    return [int(c) for c in counts]


def counts_to_string(counts: list[int]) -> str:
    """Pack run lengths into the COCO compressed-RLE string."""
    out: list[str] = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: negative differences keep their sign
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def encode(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of a 2-D mask (nonzero = foreground), JSON-ready."""
    mask = np.asarray(mask)
    height, width = mask.shape
    return {"size": [int(height), int(width)], "counts": counts_to_string(run_lengths(mask))}


def bbox(mask: np.ndarray) -> list[float]:
    """``[x, y, width, height]`` of the foreground, ``[0, 0, 0, 0]`` when empty."""
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [
        float(cols[0]),
        float(rows[0]),
        float(cols[-1] - cols[0] + 1),
        float(rows[-1] - rows[0] + 1),
    ]


def area(mask: np.ndarray) -> int:
    return int(np.count_nonzero(mask))
