"""`napari-focus predict` with the local engine against `--engine ray` (a local Ray
instance started by the command), same images, same model, interleaved.

Each configuration runs as a fresh command (what a user types) on a small and a large
folder; the difference gives the steady throughput (images/s) and the fixed cost
(start-up, model loading, first call). CPU seconds are summed over the command's whole
process tree (Ray's raylet, GCS and workers included), sampled every 0.2 s.

    python benchmarks/bench_distributed.py --small 4 --large 12
    python benchmarks/bench_distributed.py --weights focus_large_sod.safetensors --size large
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from PIL import Image
from skimage import data

SAMPLES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def make_images(folder: Path, count: int, height: int, width: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = Image.fromarray(getattr(data, SAMPLES[i % len(SAMPLES)])()).convert("RGB")
        image = image.resize((width, height), Image.BILINEAR).rotate(7 * i)
        image.save(folder / f"img_{i:04d}.jpg", quality=90)


def tiny_weights(folder: Path) -> Path:
    """The tiny golden model of the reference fixtures as a checkpoint file."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import _reference_dir, tiny_architecture, tiny_state_dict

    from napari_focus import FocusPredictor

    reference = _reference_dir()
    if reference is None:
        raise SystemExit("set FOCUS_REFERENCE, or pass --weights")
    arch, state = tiny_architecture(reference, "tiny_mlp"), tiny_state_dict(reference, "tiny_mlp")
    predictor = FocusPredictor.from_state_dict(state, "sod", architecture=arch, device="cpu")
    return predictor.save_inference_checkpoint(folder / "tiny.safetensors", dtype=torch.float32)


def run(command: list[str], threads: int | None = None) -> tuple[float, float]:
    """Wall seconds and CPU seconds of the command's process tree."""
    # Ray starts its workers at niceness 15; on a machine shared with other work that
    # alone would slow them, so they run at the local command's priority here
    env = dict(os.environ, RAY_worker_niceness="0")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    root = psutil.Process(process.pid)
    cpu: dict[int, float] = {}
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            tree = []
        for member in tree:
            try:
                times = member.cpu_times()
                cpu[member.pid] = times.user + times.system
            except psutil.Error:
                pass
        time.sleep(0.2)
    wall = time.perf_counter() - start
    if process.returncode not in (0,):
        raise RuntimeError(f"{command} failed:\n{process.stderr.read().decode()[-3000:]}")
    return wall, sum(cpu.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=4)
    parser.add_argument("--large", type=int, default=12)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--weights", help="checkpoint (default: the tiny golden model)")
    parser.add_argument("--size", help="architecture of --weights")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_distributed_"))
    weights = Path(args.weights) if args.weights else tiny_weights(work)
    for count in (args.small, args.large):
        make_images(work / f"images_{count}", count, args.height, args.width)
    model = ["--task", "sod", "--weights", str(weights), "--quiet"]
    if args.size:
        model += ["--size", args.size]
    one = ["--engine", "ray", "--cpus-per-worker", "1"]
    configs = {  # one torch thread per model everywhere: a shared machine punishes more
        "local CLI, 1 thread": ["--device", "cpu"],
        "ray, 1 worker x 1 CPU": [*one, "--num-workers", "1"],
        "ray, 2 workers x 1 CPU": [*one, "--num-workers", "2"],
    }
    results: dict[str, dict[int, list[tuple[float, float]]]] = {c: {} for c in configs}
    for repeat in range(args.repeats):
        for count in (args.small, args.large):
            for name, extra in configs.items():
                out = work / f"out_{repeat}_{count}_{abs(hash(name))}"
                command = [sys.executable, "-m", "napari_focus.cli", "predict"]
                command += [str(work / f"images_{count}"), "--out", str(out), *model, *extra]
                load = os.getloadavg()[0]
                wall, cpu = run(command, threads=1 if "local" in name else None)
                results[name].setdefault(count, []).append((wall, cpu))
                print(
                    f"{name:26s} {count:3d} images: {wall:6.1f} s wall, {cpu:6.1f} CPU-s, "
                    f"load {load:.1f}",
                    flush=True,
                )
    print("\n| engine | images/s (steady) | CPU-s / image | fixed cost s |")
    print("|---|---:|---:|---:|")
    summary = {}
    for name, by_count in results.items():
        small = min(by_count[args.small])
        large = min(by_count[args.large])
        rate = (args.large - args.small) / (large[0] - small[0])
        cpu_per_image = (large[1] - small[1]) / (args.large - args.small)
        fixed = small[0] - args.small / rate
        summary[name] = {"rate": rate, "cpu_per_image": cpu_per_image, "fixed": fixed}
        print(f"| {name} | {rate:.3f} | {cpu_per_image:.2f} | {fixed:.1f} |")
    print(json.dumps({"machine": os.uname().nodename, "cpus": os.cpu_count(), **summary}))


if __name__ == "__main__":
    main()
