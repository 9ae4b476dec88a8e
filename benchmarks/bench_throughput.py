"""Throughput of `predict` on CPU: end to end on a folder, against the fp32 FLOP bound,
and the bfloat16 fast mode's time and mask agreement.

FOCUS-L (or -G) with random weights; a folder of 480x640 JPEGs is decoded,
predicted and written as PNG masks. Wall time and CPU time (process time, all
threads) are reported side by side: on a shared machine the CPU seconds per
image are the stable figure. Comparisons are interleaved (A, B, A, B, ...).

Modes: ``serial`` (predict + write, one image at a time), ``pipeline`` (what
``napari-focus predict`` runs: the float32 CPU fast path, folded BatchNorms and
the measured linear path), ``plain`` (the pipeline with the unfolded model and
PyTorch's default MKL linears), ``onednn`` (the fast path with the linears forced
through oneDNN) and ``bfloat16`` (the opt-in fast mode).

    python benchmarks/bench_throughput.py --images 4 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from bench_model import model_flops, random_predictor
from PIL import Image

from napari_focus.cpu_linear import route_linears
from napari_focus.io import read_image, write_mask
from napari_focus.ops.toolchain import cpu_model
from napari_focus.pipeline import Job, run_pipeline


def machine() -> str:
    flags = set(Path("/proc/cpuinfo").read_text().split())
    wanted = ("avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni")
    return f"{cpu_model()}; {', '.join(f for f in wanted if f in flags)}; torch {torch.__version__}"


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def fp32_gemm_rate(seconds: float = 4.0) -> dict[str, float]:
    """Best fp32 GEMM FLOP per CPU-second (process time) of a few paths, interleaved."""
    m, k, n = 1801, 1024, 4096  # a FOCUS-L ViT MLP linear
    x, w, b = torch.randn(m, k), torch.randn(n, k) * 0.02, torch.randn(n)
    packed = torch.ops.mkldnn._reorder_linear_weight(w, m)
    a2, b2 = torch.randn(2048, 2048), torch.randn(2048, 2048)
    paths = {
        "linear (MKL)": (lambda: F.linear(x, w, b), 2 * m * k * n),
        "linear (oneDNN, prepacked)": (
            lambda: torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], ""),
            2 * m * k * n,
        ),
        "matmul 2048": (lambda: a2 @ b2, 2 * 2048**3),
    }
    best = dict.fromkeys(paths, 0.0)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for name, (fn, flops) in paths.items():
            _, _, cpu = timed(fn)
            best[name] = max(best[name], flops / cpu)
    return best


def make_folder(folder: Path, count: int, height: int, width: int) -> list[Path]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    paths = []
    for i in range(count):  # smooth shapes with texture: realistic JPEG decode cost
        cy, cx, r = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width, height / 4
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(np.float32)
        base = (
            rng.uniform(0, 255, 3) * (1 - blob[..., None])
            + rng.uniform(0, 255, 3) * blob[..., None]
        )
        noisy = base + rng.normal(0, 12, (height, width, 3))
        path = folder / f"img{i:03d}.jpg"
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def serial_run(predictor, jobs: list[Job]) -> None:
    for job in jobs:
        write_mask(job.mask, predictor.predict(read_image(job.source)).mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="large", choices=("large", "giant"))
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-fast", action="store_true", help="no bfloat16 mode")
    parser.add_argument("--skip-variants", action="store_true", help="no plain and oneDNN modes")
    args = parser.parse_args()

    print("machine:", machine())
    predictor = random_predictor(args.size)
    rates = fp32_gemm_rate()
    best_rate = max(rates.values())
    for name, rate in rates.items():
        print(f"fp32 GEMM {name}: {rate / 1e9:.0f} GFLOP per CPU-second")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sources = make_folder(folder, args.images, args.height, args.width)
        flops = model_flops(predictor, read_image(sources[0]))
        bound = flops / best_rate
        print(f"model: {flops / 1e12:.3f} TFLOP per image; fp32 bound {bound:.2f} CPU-s/image")
        print(f"linear path chosen at load: {predictor.cpu_linear_path}")
        runners = {"serial": predictor, "pipeline": predictor}
        if not args.skip_variants:
            plain = runners["plain"] = random_predictor(args.size)
            plain.model.backbone.cpu_fast_path = False
            route_linears(plain.model, "mkl")
            onednn = runners["onednn"] = random_predictor(args.size)
            route_linears(onednn.model, "onednn")
        if not args.skip_fast:
            runners["bfloat16"] = random_predictor(args.size, precision="bfloat16")
        for runner in {id(r): r for r in runners.values()}.values():
            runner.predict(read_image(sources[0]))  # warm-up

        results: dict[str, list[tuple[float, float]]] = {}
        agreement: dict[str, list[float]] = {}
        for round_ in range(args.rounds):
            for mode, runner in runners.items():
                out = folder / f"{mode}{round_}"
                jobs = [Job(s, out / f"{s.stem}.png") for s in sources]
                if mode == "serial":
                    _, wall, cpu = timed(lambda: serial_run(predictor, jobs))  # noqa: B023
                else:
                    _, wall, cpu = timed(
                        lambda: run_pipeline(runner, jobs, workers=args.workers)  # noqa: B023
                    )
                results.setdefault(mode, []).append((wall, cpu))
                print(
                    f"round {round_} {mode}: {len(jobs) / wall:.3f} images/s, "
                    f"{cpu / len(jobs):.2f} CPU-s/image",
                    flush=True,
                )
            for mode in runners:
                for s in sources:
                    a = np.array(Image.open(folder / f"serial{round_}" / f"{s.stem}.png"))
                    b = np.array(Image.open(folder / f"{mode}{round_}" / f"{s.stem}.png"))
                    agreement.setdefault(mode, []).append((a == b).mean())

    print("\nsummary (best / median over rounds):")
    for mode, runs in results.items():
        per_image = [cpu / args.images for _, cpu in runs]
        speed = [args.images / wall for wall, _ in runs]
        print(
            f"  {mode}: {max(speed):.3f} / {statistics.median(speed):.3f} images/s; "
            f"{min(per_image):.2f} / {statistics.median(per_image):.2f} CPU-s/image; "
            f"{min(per_image) / bound:.2f}x the fp32 FLOP bound"
        )
    for mode, shares in agreement.items():
        print(
            f"  {mode} vs serial masks: {100 * min(shares):.2f}-"
            f"{100 * max(shares):.2f} % of pixels equal"
        )


if __name__ == "__main__":
    main()
