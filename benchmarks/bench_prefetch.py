"""Time from Next to a proposal on screen in the FOCUS series workflow, prefetch on vs off.

Runs napari (needs a display: use `xvfb-run -a`) with FOCUS-L random weights on the
CPU over a folder of 480x640 images. After opening the series it waits as a user
would while correcting the first image (until the background work is idle), then
presses Next and measures until the new image's proposal is displayed.

    xvfb-run -a python benchmarks/bench_prefetch.py --size large --nexts 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import random_predictor
from gui_bench_support import wait


def make_folder(root: Path, count: int) -> Path:
    folder = root / "images"
    folder.mkdir()
    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    for i in range(count):
        image = Image.fromarray(sources[i % len(sources)]).convert("RGB").resize((640, 480))
        image.save(folder / f"image{i}.png")
    return folder


def run(prefetch: bool, weights: Path, folder: Path, nexts: int) -> list[float]:
    import napari

    viewer = napari.Viewer(show=False)
    _, widget = viewer.window.add_plugin_dock_widget("napari-focus", "FOCUS")
    widget.weights_source.value = "file"
    widget.weights_path.value = weights
    widget.device.value = "cpu"
    series = widget.series
    series.prefetch.value = prefetch
    series.output.value = folder.parent / f"series_{'on' if prefetch else 'off'}"
    series.open(folder)
    latencies = []
    for _ in range(nexts):
        wait(lambda: not series.busy)  # the user corrects the shown image meanwhile
        target = series.state.queue[series.state.queue.upcoming(1)[0]].key
        start = time.perf_counter()
        series.next()
        assert series.shown_key == target
        wait(lambda: series.proposal_ready)
        latencies.append(time.perf_counter() - start)
    wait(lambda: not series.busy)
    viewer.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="large", choices=("large", "giant"))
    parser.add_argument("--nexts", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        weights = random_predictor(args.size).save_inference_checkpoint(
            root / "random.safetensors", dtype=torch.float16
        )
        folder = make_folder(root, args.nexts + 3)
        on = run(True, weights, folder, args.nexts)
        off = run(False, weights, folder, args.nexts)
    result = {
        "size": args.size,
        "image": "480x640",
        "prefetch_on_seconds": [round(t, 3) for t in on],
        "prefetch_off_seconds": [round(t, 3) for t in off],
        "median_on": round(float(np.median(on)), 3),
        "median_off": round(float(np.median(off)), 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
