"""How long the napari GUI thread stalls during Run, Accept and a threshold drag, and how
soon Cancel stops a FOCUS forward.

Stalls: a 5 ms QTimer runs on the GUI thread; the longest gap between its ticks while
an action is under way is the longest time napari could not redraw or take input.
``gui_thread_hashing_ms``: the longest read-and-hash of an image file by the series
state on the GUI thread (none when the worker's fingerprint is reused). The
widget runs with the tiny reference checkpoint (``FOCUS_REFERENCE``; the GUI-thread
work does not depend on the model size) on a ``--megapixels`` RGB image. Accept is the
series' Accept: export, quality line, and showing the next image of the folder.

Cancel: FOCUS-L with random weights on the CPU, run as the widget runs it (a worker
thread with :func:`napari_focus.run_control.watch_model`); Cancel is pressed at
several points inside one forward and the time until the forward stops is measured.

``--navigation``, ``--autosave`` and ``--open-folder N`` measure the series' steps instead
(see :func:`navigation_stalls`, :func:`autosave_stalls`, :mod:`gui_open_stalls`);
``--compare-with OLD_TREE`` runs one of them on the old code and on this one,
alternately, in fresh processes.

    xvfb-run -a -s "-screen 0 1366x768x24" python benchmarks/bench_gui_stalls.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import random_predictor
from gui_bench_support import (
    StallMeter,
    camera_folder,
    compare,
    open_widget,
    record_gui_thread_decoding,
    record_gui_thread_file_work,
    record_gui_thread_hashing,
    tiny_checkpoint,
    wait,
)


def gui_stalls(megapixels: float, root: Path, noisy: bool = False) -> dict[str, float]:

    from napari_focus.gui import dialogs
    from napari_focus.gui.samples import astronaut

    dialogs.ask_yes_no = lambda _parent, _question: True
    hashing_on_gui = record_gui_thread_hashing()
    height = round((megapixels * 1e6 * 3 / 4) ** 0.5)
    width = height * 4 // 3
    base = Image.fromarray(astronaut()[0][0]).resize((width, height))
    if noisy:  # sensor noise: JPEG files as large as a camera's (about 18 MB at 24 MP)
        pixels = np.asarray(base).astype(np.int16)
        pixels += np.random.default_rng(0).integers(-40, 40, pixels.shape, dtype=np.int16)
        base = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    folder = root / "images"
    folder.mkdir()
    for i in range(3):
        base.rotate(i * 90 if i != 1 else 180).save(folder / f"image{i}.jpg", quality=92)

    viewer, widget = open_widget(tiny_checkpoint(root))
    series = widget.series
    series.open(folder)  # the next two proposals are computed ahead, as by default
    wait(lambda: series.proposal_ready and not series.busy)  # model loaded, image 0 shown

    result: dict[str, float] = {"megapixels": round(width * height / 1e6, 1)}
    result["image_file_mb"] = (folder / "image0.jpg").stat().st_size / 1e6
    with StallMeter() as meter:  # Run on the shown image: worker, then the new layers
        widget.run()
        wait(lambda: not widget.running)
        QApplication.instance().processEvents()
    result["run_ms"] = meter.longest_ms

    widget.official.value = False
    wait(lambda: widget.refine_section.idle)
    steps = iter(np.round(np.linspace(0.30, 0.70, 41), 2))
    drag = QTimer()
    drag.setInterval(25)  # a slider dragged over 40 steps in one second

    def step() -> None:
        value = next(steps, None)
        if value is None:
            drag.stop()
        else:
            widget.threshold.value = float(value)

    with StallMeter() as meter:
        drag.timeout.connect(step)
        drag.start()
        wait(lambda: not drag.isActive() and widget.refine_section.idle)
    result["threshold_drag_ms"] = meter.longest_ms

    widget.export_section.dataset_root.value = root / "datasets"
    widget.export_section.dataset_layout.value = "generic"
    shown = series.shown_key
    wait(lambda: not series.busy)  # image 1 computed ahead while the user corrected 0
    with StallMeter() as meter:  # export, quality, next image shown (its Run is apart)
        series.accept()
        wait(lambda: series.shown_key != shown and not series.busy)
        wait(lambda: not series.quality_pending)
    result["accept_ms"] = meter.longest_ms
    with StallMeter() as meter:  # the next image, its proposal computed ahead
        shown = series.shown_key
        series.next()
        wait(lambda: series.shown_key != shown and series.proposal_ready and not series.busy)
    result["next_ms"] = meter.longest_ms
    result["gui_thread_hashing_ms"] = max(hashing_on_gui, default=0.0)
    viewer.close()
    return result


def navigation_stalls(megapixels: float, root: Path, noisy: bool) -> dict[str, float]:
    """The first image of a folder, then Next, Next, Previous, Previous: the longest GUI
    stall (ms), the time until the image is on screen (ms), the time spent decoding
    files on the GUI thread (ms) and the CPU seconds of the process (all threads)
    during each. Proposals are computed ahead as by default; the
    background work settles between steps."""

    folder = camera_folder(root, megapixels, 4, noisy)
    viewer, widget = open_widget(tiny_checkpoint(root))
    series = widget.series
    result: dict[str, float] = {"image_file_mb": (folder / "image0.jpg").stat().st_size / 1e6}

    decoding_on_gui = record_gui_thread_decoding()

    def step(name: str, action: Any, key: str) -> None:
        cpu, start = time.process_time(), time.perf_counter()
        decoding_on_gui.clear()
        with StallMeter() as meter:
            action()
            wait(lambda: series.shown_key == key)
            shown = time.perf_counter()
            QApplication.instance().processEvents()
        result[f"{name}_stall_ms"] = meter.longest_ms
        result[f"{name}_shown_ms"] = (shown - start) * 1000
        result[f"{name}_cpu_s"] = time.process_time() - cpu
        result[f"{name}_gui_decoding_ms"] = sum(decoding_on_gui)
        wait(lambda: not series.busy)

    step("first_image", lambda: series.open(folder), "image0.jpg")
    step("next", series.next, "image1.jpg")
    step("next2", series.next, "image2.jpg")
    step("previous", series.previous, "image1.jpg")
    step("previous2", series.previous, "image0.jpg")
    viewer.close()
    return result


def autosave_stalls(megapixels: float, root: Path, noisy: bool) -> dict[str, float]:
    """Edits left and found again, with the series' files on disk: a first viewer
    computes and stores the proposals of three images (not measured); a second one opens
    the folder, an edit is painted on the first image, then **Next** (the edits
    autosaved, the next image's proposal read from the series folder), **Previous** (the
    autosaved edits shown again), a third viewer opens the folder (the first image with
    its autosave) and **Next** (a stored proposal). Per step: the longest GUI stall, ms
    until the image is shown, the process's CPU seconds until its background work is done
    (the autosave written), and ms of mask and proposal file work on the GUI thread."""
    folder = camera_folder(root, megapixels, 3, noisy)
    checkpoint = tiny_checkpoint(root)
    viewer, widget = open_widget(checkpoint)
    widget.series.open(folder)  # the proposals of all three, stored in the series folder
    wait(lambda: widget.series.proposal_ready and not widget.series.busy)
    viewer.close()

    file_work = record_gui_thread_file_work()
    result: dict[str, float] = {"image_file_mb": (folder / "image0.jpg").stat().st_size / 1e6}

    def step(name: str, series: Any, action: Any, key: str, done: Any = lambda: True) -> None:
        cpu, start = time.process_time(), time.perf_counter()
        file_work.clear()
        with StallMeter() as meter:
            action()
            wait(lambda: series.shown_key == key and series.proposal_ready)
            shown = time.perf_counter()
            wait(lambda: not series.busy and done())
            QApplication.instance().processEvents()
        result[f"{name}_stall_ms"] = meter.longest_ms
        result[f"{name}_shown_ms"] = (shown - start) * 1000
        result[f"{name}_cpu_s"] = time.process_time() - cpu
        result[f"{name}_gui_file_ms"] = sum(file_work)

    viewer, widget = open_widget(checkpoint)
    series = widget.series
    series.open(folder)
    wait(lambda: series.shown_key == "image0.jpg" and series.proposal_ready and not series.busy)
    labels = next(layer for layer in viewer.layers if layer.name.startswith("image0 ["))
    edited = np.asarray(labels.data).copy()
    height, width = edited.shape
    edited[height // 4 : height // 2, width // 4 : width // 2] = 1  # a stroke's worth
    labels.data = edited
    autosave = series.state.autosave_path("image0.jpg")
    step("leave_edited", series, series.next, "image1.jpg", autosave.is_file)
    step("back_to_edited", series, series.previous, "image0.jpg")
    viewer.close()
    viewer, widget = open_widget(checkpoint)
    series = widget.series
    step("reopen_edited", series, lambda: series.open(folder), "image0.jpg")
    step("next_stored", series, series.next, "image1.jpg")
    viewer.close()
    return result


def load_cancel(checkpoint: Path) -> dict[str, float]:
    """Run with FOCUS-L's checkpoint not loaded yet, Cancel pressed 1 s into the load:
    how long until Run can be pressed again, until the load's thread is done, and
    whether a model is still held afterwards (1 = yes)."""

    viewer, widget = open_widget(checkpoint)
    viewer.add_image(np.full((240, 320, 3), 128, np.uint8), name="gray")
    shared = widget.model_section.shared_model
    cpu, start = time.process_time(), time.perf_counter()
    widget.run()
    wait(lambda: shared.loading)  # the checkpoint is being read
    wait(lambda: time.perf_counter() - start > 1.0)
    pressed = time.perf_counter()
    with StallMeter() as meter:
        widget.cancel()
        wait(lambda: not widget.running)
        free = time.perf_counter()
        wait(lambda: not shared.loading)
        done = time.perf_counter()
        wait(lambda: time.perf_counter() - done > 0.5)  # what the job reports arrives
    result = {
        "usable_after_cancel_ms": (free - pressed) * 1000,
        "load_thread_done_after_cancel_s": done - pressed,
        "stall_ms": meter.longest_ms,
        "model_held_after": float(
            shared._predictor is not None or widget.current_model()[1] is not None
        ),
        "cpu_s": time.process_time() - cpu,
    }
    viewer.close()
    return result


def first_run(checkpoint: Path) -> dict[str, float]:
    """Run on a small image with the checkpoint not loaded yet, until its proposal is
    drawn: the longest GUI stall of the whole first run (load, forward, first layers)."""
    viewer, widget = open_widget(checkpoint)
    viewer.add_image(np.full((240, 320, 3), 128, np.uint8), name="gray")
    cpu, start = time.process_time(), time.perf_counter()
    with StallMeter() as meter:
        widget.run()
        wait(lambda: not widget.running)
        wait(lambda: time.perf_counter() - start > 0.5)  # the first draw of the layers
    result = {
        "run_s": time.perf_counter() - start,
        "stall_ms": meter.longest_ms,
        "stalls_over_100ms": float((np.diff(meter.ticks) > 0.1).sum()),
        "cpu_s": time.process_time() - cpu,
    }
    viewer.close()
    return result


def focus_l_checkpoint(root: Path) -> Path:
    predictor = random_predictor("large")
    return predictor.save_inference_checkpoint(root / "focus_l.safetensors", dtype=torch.float32)


def cancel_latency(points: list[float]) -> list[float]:
    """Seconds from Cancel to the forward stopping, Cancel pressed ``points`` s in."""
    from napari_focus.run_control import Cancelled, RunControl, watch_model

    predictor = random_predictor("large")
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    latencies = []
    for point in points:
        control = RunControl()
        stopped: list[float] = []

        def forward(control: RunControl = control, stopped: list[float] = stopped) -> None:
            try:
                with watch_model(predictor.model, control):
                    predictor.predict(image)
            except Cancelled:
                stopped.append(time.perf_counter())

        thread = threading.Thread(target=forward)
        thread.start()
        time.sleep(point)
        pressed = time.perf_counter()
        control.cancel()
        thread.join()
        latencies.append(round(stopped[0] - pressed, 3) if stopped else float("nan"))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--noisy", action="store_true", help="photos with sensor noise")
    parser.add_argument("--cancel-at", type=float, nargs="*", default=[3.0, 8.0, 15.0])
    parser.add_argument("--explain", action="store_true", help="print what blocks the GUI")
    parser.add_argument(
        "--navigation", action="store_true", help="only the first image, Next and Previous"
    )
    parser.add_argument(
        "--autosave",
        action="store_true",
        help="only an edit left on the first image, autosaved, found again, reopened",
    )
    parser.add_argument(
        "--open-folder", type=int, metavar="N", help="only Open folder on N images, twice"
    )
    parser.add_argument(
        "--compare-with",
        metavar="TREE",
        help="a copy of the old code: --navigation (or --autosave) there and here, alternately",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--load-cancel",
        metavar="CHECKPOINT",
        help="only Cancel during the load of this checkpoint ('make': FOCUS-L, random "
        "weights, written to a temporary folder)",
    )
    parser.add_argument(
        "--first-run",
        metavar="CHECKPOINT",
        help="only the first Run with this checkpoint ('make' as for --load-cancel)",
    )
    args = parser.parse_args()
    StallMeter.explain = args.explain
    torch.set_num_threads(2)
    with_checkpoint = [
        (flag, value, measure)
        for flag, value, measure in (
            ("--load-cancel", args.load_cancel, load_cancel),
            ("--first-run", args.first_run, first_run),
        )
        if value
    ]
    if with_checkpoint:
        flag, value, measure = with_checkpoint[0]
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = focus_l_checkpoint(Path(tmp)) if value == "make" else Path(value)
            if args.compare_with:
                compare(__file__, args.compare_with, args.rounds, [flag, str(checkpoint)])
            else:
                print(json.dumps(measure(checkpoint), indent=1))
        return
    mode = "--autosave" if args.autosave else "--navigation"
    extra = ["--megapixels", str(args.megapixels)] + (["--noisy"] if args.noisy else [])
    if args.open_folder:
        mode, extra = "--open-folder", [str(args.open_folder)]
    if args.compare_with:
        compare(__file__, args.compare_with, args.rounds, [mode, *extra])
        return
    cpu0 = time.process_time()
    if args.open_folder:
        from gui_open_stalls import open_folder_stalls

        with tempfile.TemporaryDirectory() as tmp:
            stalls = open_folder_stalls(args.open_folder, Path(tmp))
        stalls["cpu_seconds"] = time.process_time() - cpu0
        print(json.dumps({k: round(v, 3) for k, v in stalls.items()}, indent=1))
        return
    if args.navigation or args.autosave:
        measure = autosave_stalls if args.autosave else navigation_stalls
        with tempfile.TemporaryDirectory() as tmp:
            stalls = measure(args.megapixels, Path(tmp), args.noisy)
        stalls["cpu_seconds"] = time.process_time() - cpu0
        print(json.dumps({k: round(v, 2) for k, v in stalls.items()}, indent=1))
        return
    with tempfile.TemporaryDirectory() as tmp:
        stalls = gui_stalls(args.megapixels, Path(tmp), args.noisy)
    cancels = cancel_latency(args.cancel_at) if args.cancel_at else []
    result = {
        **{k: round(v, 1) for k, v in stalls.items()},
        "cancel_pressed_at_s": args.cancel_at,
        "cancel_latency_s": cancels,
        "cpu_seconds": round(time.process_time() - cpu0, 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
