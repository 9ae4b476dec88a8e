"""``bench_gui_stalls.py --open-folder N``: how long napari's GUI thread stalls while
the Series tab opens a folder of N images (scan, series state, the first image shown).

The folder holds N hard links to a few copies of one 480x640 JPEG (the scan and the
series state do not depend on the pixels). *create*: Open folder on a folder without a
series; *reopen*: Open folder again on the same folder (its state read, restored and
saved). Per step: the longest gap of the 5 ms timer until the first image is shown
(*stall*) and until it begins to be shown (*loading stall*: the series loaded), the time
from the click until the first image is on screen, the time spent loading the series
(``load_or_create``: scan, state read and saved) on the GUI thread, and the process's
CPU seconds (all threads)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from gui_bench_support import (
    StallMeter,
    open_widget,
    record_gui_thread_series_loading,
    tiny_checkpoint,
    wait,
)
from PIL import Image
from qtpy.QtWidgets import QApplication

LINKS_PER_FILE = 50_000


def image_folder(root: Path, items: int) -> Path:
    folder = root / "images"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    for i in range(items):
        if i % LINKS_PER_FILE == 0:  # a file system allows so many links to one file
            source = folder / f"img_{i:06d}.jpg"
            Image.fromarray(pixels).save(source, quality=90)
        else:
            os.link(source, folder / f"img_{i:06d}.jpg")
    return folder


def open_folder_stalls(items: int, root: Path) -> dict[str, float]:
    loading_on_gui = record_gui_thread_series_loading()
    folder = image_folder(root, items)
    viewer, widget = open_widget(tiny_checkpoint(root))
    series = widget.series
    series.prefetch.value = False
    settled = time.perf_counter() + 1.5  # napari's first draws of the window, not measured
    wait(lambda: time.perf_counter() > settled)
    result: dict[str, float] = {"items": items}
    showing: list[float] = []  # when the series, loaded, begins to show its first image
    show_current = type(series).show_current

    def timed_show(self: object, *args: object) -> None:
        showing.append(time.perf_counter())
        show_current(self, *args)

    type(series).show_current = timed_show
    for step in ("create", "reopen"):
        loading_on_gui.clear()
        cpu, start = time.process_time(), time.perf_counter()
        showing.clear()
        with StallMeter() as meter:
            series.open(folder)  # the old code: loaded and shown when it returns
            wait(lambda: showing and series.shown_key == "img_000000.jpg")
            shown = time.perf_counter()
            QApplication.instance().processEvents()
        ticks = np.asarray(meter.ticks)
        loading = np.minimum(ticks[1:], showing[0]) - ticks[:-1]  # the gaps, up to the show
        result[f"{step}_loading_stall_ms"] = float(loading.max()) * 1000
        result[f"{step}_stall_ms"] = meter.longest_ms
        result[f"{step}_shown_ms"] = (shown - start) * 1000
        result[f"{step}_gui_load_ms"] = sum(loading_on_gui)
        result[f"{step}_cpu_s"] = time.process_time() - cpu
        wait(lambda: not series.busy)
        series.state = None  # the same folder opened again, as a fresh widget would
    viewer.close()
    return result
