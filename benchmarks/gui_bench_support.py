"""What the GUI benchmarks share: the stall meter (a 5 ms timer on the GUI thread),
waiting while Qt runs, the widget on the tiny reference checkpoint, camera-like image
folders, recorders of file work done on the GUI thread, and running old and new code
alternately in fresh processes."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication


class StallMeter:
    """Longest gap between 5 ms timer ticks on the GUI thread while active. With
    ``explain``, a watchdog thread prints the GUI thread's stack during any stall
    longer than 0.15 s (to find what blocks it)."""

    explain = False

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        if self.explain:
            threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        import traceback

        main = threading.main_thread().ident
        reported = None
        while True:
            time.sleep(0.05)
            try:
                active = self.timer.isActive()
            except RuntimeError:  # the timer is gone: the benchmark ended
                return
            if active and self.ticks:
                last = self.ticks[-1]
                if time.perf_counter() - last > 0.15 and reported != last:
                    reported = last
                    stack = "".join(traceback.format_stack(sys._current_frames()[main]))
                    print(f"--- GUI thread stalled; it is in:\n{stack}", file=sys.stderr)

    def __enter__(self) -> StallMeter:
        self.ticks = [time.perf_counter()]
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.stop()
        self.ticks.append(time.perf_counter())

    @property
    def longest_ms(self) -> float:
        return float(np.max(np.diff(self.ticks))) * 1000


def wait(condition, timeout: float = 900.0) -> float:
    """Run Qt's events until ``condition()``; returns the seconds waited."""
    app = QApplication.instance()
    start = time.perf_counter()
    while not condition():
        app.processEvents()
        time.sleep(0.002)
        if time.perf_counter() - start > timeout:
            raise TimeoutError("gave up waiting")
    return time.perf_counter() - start


def tiny_checkpoint(root: Path) -> Path:
    from safetensors.torch import load_file

    from napari_focus import FocusPredictor

    reference = Path(os.environ.get("FOCUS_REFERENCE", "../shared/focus-reference"))
    spec = json.loads((reference / "cases.json").read_text())["tiny_mlp"]
    state = {
        **load_file(reference / "weights_edge.safetensors"),
        **load_file(reference / "tiny_mlp_weights.safetensors"),
    }
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    predictor = FocusPredictor.from_state_dict(
        state, "sod", architecture={**spec["preset"], **spec["head"]}, device="cpu"
    )
    return predictor.save_inference_checkpoint(root / "tiny.safetensors", dtype=torch.float32)


def open_widget(checkpoint: Path):
    """A shown viewer at 1366x768 with the FOCUS dock, set to ``checkpoint`` on the CPU."""
    import napari

    viewer = napari.Viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-focus", "FOCUS")
    widget.native.window().resize(1366, 768)
    widget.weights_source.value = "file"
    widget.weights_path.value = checkpoint
    widget.device.value = "cpu"
    return viewer, widget


def camera_folder(root: Path, megapixels: float, count: int, noisy: bool) -> Path:
    """``count`` JPEGs of ``megapixels`` (with ``noisy``: sensor noise, as large as a
    camera's files), each a different rotation or crop of the astronaut."""
    from napari_focus.gui.samples import astronaut

    height = round((megapixels * 1e6 * 3 / 4) ** 0.5)
    width = height * 4 // 3
    base = Image.fromarray(astronaut()[0][0]).resize((width, height))
    if noisy:
        pixels = np.asarray(base).astype(np.int16)
        pixels += np.random.default_rng(0).integers(-40, 40, pixels.shape, dtype=np.int16)
        base = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    folder = root / "images"
    folder.mkdir()
    for i in range(count):
        turned = base.rotate(180) if i % 2 else base
        turned = turned.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i >= 2 else turned
        turned.save(folder / f"image{i}.jpg", quality=92)
    return folder


def compare(script: str, old_tree: str, rounds: int, args: list[str]) -> None:
    """``script`` with ``args`` on the old and new code, alternately, each in a fresh
    process (``PYTHONPATH``); prints every run's JSON."""
    import subprocess

    new_tree = str(Path(__file__).resolve().parent.parent)
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for _ in range(rounds):
        for name, tree in (("old", old_tree), ("new", new_tree)):
            env = {**os.environ, "PYTHONPATH": tree}
            done = subprocess.run(
                [sys.executable, script, *args],
                env=env, capture_output=True, text=True, check=True, cwd=tree,
            )  # fmt: skip
            runs[name].append(json.loads(done.stdout[done.stdout.index("{") :]))
    print(json.dumps(runs, indent=1))


def record_gui_thread_decoding() -> list[float]:
    """Milliseconds of each image file decoded on the GUI thread (through
    ``napari_focus.io.read_image``, which every series read goes through)."""
    from napari_focus.series import images

    spent: list[float] = []
    images.read_image = _timed_on_gui_thread(images.read_image, spent)
    return spent


def record_gui_thread_hashing() -> list[float]:
    """Milliseconds of each read-and-hash of an image file the series state does on the
    GUI thread (a fingerprint reused from its size and time costs nothing)."""
    from napari_focus.series import state

    spent: list[float] = []
    original = state.file_fingerprint

    def timed(path: Path, known: dict | None = None) -> dict:
        start = time.perf_counter()
        result = original(path, known)
        if result is not known and threading.current_thread() is threading.main_thread():
            spent.append((time.perf_counter() - start) * 1000)
        return result

    state.file_fingerprint = timed
    return spent

def record_gui_thread_series_loading() -> list[float]:
    """Milliseconds of each series opening (``load_or_create``: the folder scanned, the
    series state read, restored and saved) run on the GUI thread, wherever the widget
    calls it from."""
    import importlib

    spent: list[float] = []
    for name in ("napari_focus.gui.series_section", "napari_focus.gui.series_start"):
        try:
            module = importlib.import_module(name)
        except ImportError:  # the code before the opening moved to its own module
            continue
        if hasattr(module, "load_or_create"):
            module.load_or_create = _timed_on_gui_thread(module.load_or_create, spent)
    return spent


def record_gui_thread_file_work() -> list[float]:
    """Milliseconds of each mask file encoded (PIL's ``save``) or read
    (``napari_focus.mask_files.read_image``) and of each stored proposal read
    (``ProposalStore.load``) on the GUI thread: the autosave and proposal file work of
    the series, whichever module calls it."""
    from PIL import Image as PILImage

    from napari_focus import mask_files
    from napari_focus.series.proposal_store import ProposalStore

    spent: list[float] = []
    PILImage.Image.save = _timed_on_gui_thread(PILImage.Image.save, spent)
    mask_files.read_image = _timed_on_gui_thread(mask_files.read_image, spent)
    ProposalStore.load = _timed_on_gui_thread(ProposalStore.load, spent)
    return spent


def _timed_on_gui_thread(original: Any, spent: list[float]) -> Any:
    """``original``, adding the milliseconds of each call on the GUI thread to ``spent``."""

    def call(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            if threading.current_thread() is threading.main_thread():
                spent.append((time.perf_counter() - start) * 1000)

    return call
