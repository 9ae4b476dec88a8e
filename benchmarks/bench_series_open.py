"""Opening and saving a large labeling series (the work done on the GUI thread).

Makes a folder of N (empty) ``.png`` files, creates the series, gives every tenth item a
status, then times: reopening the series (scan, restore, migrate, save), one status
change (``SeriesState.mark``: hash the image, write the state file), the same after
another writer saved (the file is read and merged first), and creating a fresh one.
Images are never decoded by these steps, so empty files suffice.

    python benchmarks/bench_series_open.py --items 10000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from napari_focus.series import load_or_create
from napari_focus.series.queue import Status


def timed(call) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images = root / "images"
        images.mkdir()
        for i in range(args.items):
            (images / f"img_{i:06d}.png").touch()
        results: dict[str, list[tuple[float, float]]] = {
            "create": [], "reopen": [], "mark": [], "mark_merging": []
        }
        for repeat in range(args.repeat):
            output = root / f"series{repeat}"
            results["create"].append(timed(lambda out=output: load_or_create(out, images)))
            state = load_or_create(output, images)
            for item in list(state.queue)[::10]:
                state.queue.mark(item.key, Status.REJECTED)
            state.save()
            results["reopen"].append(timed(lambda out=output: load_or_create(out, images)))
            state = load_or_create(output, images)
            key = state.queue[1].key
            results["mark"].append(timed(lambda s=state, k=key: s.mark(k, Status.ACCEPTED)))
            if hasattr(state, "merged"):  # a second writer saved meanwhile: read and merge
                other = load_or_create(output, images)
                other.mark(state.queue[2].key, Status.SKIPPED)
                mark = timed(lambda s=state, k=state.queue[3].key: s.mark(k, Status.ACCEPTED))
                results["mark_merging"].append(mark)
        summary = {
            name: {
                "wall_s": [round(w, 3) for w, _ in runs],
                "cpu_s": [round(c, 3) for _, c in runs],
            }
            for name, runs in results.items()
        }
        print(json.dumps({"items": args.items, **summary}, indent=1))


if __name__ == "__main__":
    main()
