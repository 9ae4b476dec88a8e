"""The official checkpoint's download against a fake hub on 127.0.0.1 (no network):
throughput of napari-focus's resumable download against ``hf_hub_download``'s own,
interleaved, each into a fresh cache; then how long a cancel takes to stop a download
(from the moment another thread cancels to the moment the call raises), at a few random
points of a slow transfer.

    python benchmarks/bench_download.py --mb 256 --rounds 3 --cancels 8

CPU seconds are this process's (client and server threads together: the server's share
is the same for both clients).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.update(HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1",
                  HF_HUB_DISABLE_PROGRESS_BARS="1")  # fmt: skip

from test_download import FILENAME, REPO_ID, FakeHub

from napari_focus.checkpoint_hub import official_checkpoint
from napari_focus.run_control import Cancelled


def _timed(call) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def throughput(hub: FakeHub, rounds: int) -> None:
    from huggingface_hub import hf_hub_download

    results: dict[str, list[tuple[float, float]]] = {"napari-focus": [], "hf_hub_download": []}
    for _ in range(rounds):
        for name in results:  # interleaved
            with tempfile.TemporaryDirectory() as cache:
                if name == "napari-focus":
                    call = lambda: official_checkpoint(  # noqa: E731
                        "sod", "large", cache_dir=cache, progress=lambda _p: None)
                else:
                    call = lambda: hf_hub_download(  # noqa: E731
                        REPO_ID, FILENAME, cache_dir=cache, endpoint=hub.url)
                results[name].append(_timed(call))
    size = len(hub.payload) / 1e6
    for name, runs in results.items():
        walls = [wall for wall, _ in runs]
        cpus = [cpu for _, cpu in runs]
        print(f"{name:>16}: {size / statistics.median(walls):7.0f} MB/s (median wall "
              f"{statistics.median(walls):.2f} s, CPU {statistics.median(cpus):.2f} s; walls "
              f"{', '.join(f'{w:.2f}' for w in walls)})")  # fmt: skip


def cancel_latency(hub: FakeHub, cancels: int) -> None:
    hub.piece, hub.pause = 64 << 10, 0.01  # about 6 MB/s
    latencies = []
    for _ in range(cancels):
        with tempfile.TemporaryDirectory() as cache:
            stop, ended = threading.Event(), []

            def download(cache=cache, stop=stop, ended=ended) -> None:
                try:
                    official_checkpoint("sod", "large", cache_dir=cache, cancelled=stop.is_set,
                                        progress=lambda _p: None)  # fmt: skip
                except Cancelled:
                    ended.append(time.perf_counter())

            worker = threading.Thread(target=download)
            worker.start()
            time.sleep(random.uniform(0.5, 2.0))
            stop.set()
            cancelled_at = time.perf_counter()
            worker.join()
            latencies.append(ended[0] - cancelled_at)
    print(f"cancel -> download stopped ({cancels} cancels at random points, ~6 MB/s): median "
          f"{statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256, help="size of the served file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cancels", type=int, default=8)
    args = parser.parse_args()
    payload = random.Random(0).randbytes(args.mb << 20)
    with FakeHub(payload) as hub:
        os.environ["HF_ENDPOINT"] = hub.url
        throughput(hub, args.rounds)
        cancel_latency(hub, args.cancels)


if __name__ == "__main__":
    main()
