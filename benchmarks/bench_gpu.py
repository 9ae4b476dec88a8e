"""FOCUS on a CUDA GPU: precision agreement, end-to-end throughput, torch.compile and a
profile of one forward. Every part writes a JSON file and prints a Markdown table.

Parts (``--parts``, comma-separated):

* ``golden``: the official tiny cases at float32 / float16 / bfloat16, with the CUDA
  kernel and the PyTorch deformable-attention backend: max |probability - official|
  and final-mask agreement with the official float32 outputs.
* ``agreement``: FOCUS-L (or ``--sizes``) with random weights over scikit-image's
  bundled photos at three scales: float16 and bfloat16 against float32 (mask agreement,
  max and mean |probability difference|), and the CUDA kernel against the PyTorch
  backend in float32.
* ``throughput``: the pipelined ``predict`` (decode in worker threads, forward,
  post-processing, PNG masks written) over a folder of 512 x 683 JPEGs, at each
  batch size and precision; rounds interleave the configurations. Images/s, process
  CPU seconds per image, and peak GPU memory.
* ``compile``: the same with ``torch.compile`` at one batch size per precision
  (compile time reported apart).
* ``profile``: torch.profiler over one forward (FOCUS-L, batch 8): the top kernels.

    python benchmarks/bench_gpu.py --parts golden,agreement,throughput --out results/
    python benchmarks/bench_gpu.py --parts throughput --sizes giant --images 48
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import random_model

from napari_focus import FocusPredictor
from napari_focus.pipeline import Job, run_pipeline
from napari_focus.runtime import AUTO_HALF_MIN_AGREEMENT

PRECISIONS = ("float32", "float16", "bfloat16")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina", "camera", "moon", "coins")  # fmt: skip


def photos() -> dict[str, np.ndarray]:
    """scikit-image's bundled photos as RGB uint8 (grey ones repeated over 3 channels)."""
    from skimage import data

    out = {}
    for name in PHOTOS:
        try:
            image = getattr(data, name)()
        except Exception as error:  # a photo this scikit-image does not bundle
            print(f"skipping photo {name}: {error}", file=sys.stderr)
            continue
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        out[name] = np.ascontiguousarray(image[..., :3])
    return out


def rescaled(image: np.ndarray, scale: float) -> np.ndarray:
    h, w = image.shape[:2]
    size = (max(32, round(w * scale)), max(32, round(h * scale)))
    return np.array(Image.fromarray(image).resize(size, Image.BICUBIC))


def model_copies(size: str, precisions, device: str) -> dict[str, FocusPredictor]:
    """One random-weight model per precision, all with the same weights."""
    master = random_model(size)
    return {
        p: FocusPredictor(copy.deepcopy(master), "sod", device=device, precision=p)
        for p in precisions
    }


def compare(reference, other) -> dict[str, float]:
    diff = np.abs(reference.probability - other.probability)
    return {
        "mask_agreement": float((reference.mask == other.mask).mean()),
        "max_prob_diff": float(diff.max()),
        "mean_prob_diff": float(diff.mean()),
    }


def summarize(rows: list[dict]) -> dict[str, float | bool]:
    agreements = [r["mask_agreement"] for r in rows]
    return {
        "images": len(rows),
        "mean_agreement": float(np.mean(agreements)),
        "min_agreement": float(np.min(agreements)),
        # the bar a half type must meet on every image to be the CUDA default
        "meets_auto_bar": bool(np.min(agreements) >= AUTO_HALF_MIN_AGREEMENT),
        "max_prob_diff": float(np.max([r["max_prob_diff"] for r in rows])),
        "mean_prob_diff": float(np.mean([r["mean_prob_diff"] for r in rows])),
    }


# ---------------------------------------------------------------------------- parts
def part_golden(args) -> dict:
    tests = Path(__file__).resolve().parents[1] / "tests"
    sys.path.insert(0, str(tests))
    from conftest import _reference_dir, tiny_architecture, tiny_state_dict
    from safetensors.torch import load_file

    reference = _reference_dir()
    if reference is None:
        raise SystemExit("golden: set FOCUS_REFERENCE to the shared focus-reference folder")
    rgb = np.array(Image.open(reference / "input.png").convert("RGB"))
    rows = []
    print("\n| case | precision | backend | max abs prob diff | final-mask agreement |")
    print("|---|---|---|---:|---:|")
    for case in ("tiny_mlp", "tiny_swiglu"):
        golden = load_file(reference / f"{case}_golden.safetensors")
        arch, state = tiny_architecture(reference, case), tiny_state_dict(reference, case)
        for precision in args.precisions:
            for backend in ("cuda" if args.device == "cuda" else "cpu", "torch"):
                predictor = FocusPredictor.from_state_dict(
                    {k: v.clone() for k, v in state.items()}, "sod", architecture=arch,
                    device=args.device, precision=precision,
                )  # fmt: skip
                predictor.model.set_deform_attn_backend(backend)
                result = predictor.predict(rgb)
                row = {
                    "case": case, "precision": precision, "backend": backend,
                    "max_prob_diff": float(
                        np.abs(result.probability - golden["sem_seg"][0].numpy()).max()
                    ),
                    "mask_agreement": float(
                        (result.mask == golden["final_mask"].numpy()).mean()
                    ),
                }  # fmt: skip
                rows.append(row)
                print(f"| {case} | {precision} | {backend} | {row['max_prob_diff']:.2e} | "
                      f"{row['mask_agreement'] * 100:.3f} % |")  # fmt: skip
    return {"rows": rows}


def part_agreement(args) -> dict:
    images = []
    for name, photo in photos().items():
        for scale in (0.6, 1.0, 1.7):
            images.append((f"{name}@{scale}", rescaled(photo, scale)))
    images = images[: args.max_images]
    result: dict = {"images": [name for name, _ in images]}
    for size in args.sizes:
        models = model_copies(size, args.precisions, args.device)
        reference = models["float32"]
        per: dict[str, list[dict]] = {p: [] for p in args.precisions if p != "float32"}
        per["torch backend (float32)"] = []
        for _, image in images:
            ref = reference.predict(image)
            for precision in args.precisions:
                if precision != "float32":
                    per[precision].append(compare(ref, models[precision].predict(image)))
            reference.model.set_deform_attn_backend("torch")
            per["torch backend (float32)"].append(compare(ref, reference.predict(image)))
            reference.model.set_deform_attn_backend("auto")
        result[size] = {name: summarize(rows) | {"rows": rows} for name, rows in per.items()}
        del models
        torch.cuda.empty_cache() if args.device == "cuda" else None
        print(f"\nFOCUS-{size}, random weights, {len(images)} images, against float32:")
        print("| variant | mean agreement | min agreement | max prob diff | mean prob diff |")
        print("|---|---:|---:|---:|---:|")
        for name, rows in per.items():
            s = summarize(rows)
            print(f"| {name} | {s['mean_agreement'] * 100:.3f} % | "
                  f"{s['min_agreement'] * 100:.3f} % | {s['max_prob_diff']:.2e} | "
                  f"{s['mean_prob_diff']:.2e} |")  # fmt: skip
    return result


def make_folder(folder: Path, count: int, height: int = 512, width: int = 683) -> list[Job]:
    """JPEGs cut from the bundled photos (real decode cost), one size: one padded size."""
    sources = list(photos().values())
    jobs = []
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        photo = sources[i % len(sources)]
        scale = max(height / photo.shape[0], width / photo.shape[1]) * (1 + 0.05 * (i % 3))
        big = rescaled(photo, scale)
        y, x = (big.shape[0] - height) // 2, (big.shape[1] - width) // 2
        path = folder / f"img{i:04d}.jpg"
        Image.fromarray(big[y : y + height, x : x + width]).save(path, quality=90)
        jobs.append(Job(path, folder / "masks" / f"img{i:04d}.png"))
    return jobs


def timed_run(predictor, jobs, batch_size: int, workers: int, device: str) -> dict:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    wall, cpu = time.perf_counter(), time.process_time()
    summary = run_pipeline(predictor, jobs, batch_size=batch_size, workers=workers)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if summary.failures:
        raise RuntimeError(f"{len(summary.failures)} images failed: {summary.failures[0]}")
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return {"wall_s": wall, "cpu_s": cpu, "images": len(jobs), "peak_GiB": peak}


def throughput(args, compiled: bool) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="focus-bench-"))
    results: dict = {}
    batch_sizes = args.compile_batch if compiled else args.batch_sizes
    for size in args.sizes:
        count = args.images if size == "large" else max(16, args.images // 2)
        jobs = make_folder(folder / size, count)
        models = model_copies(size, args.precisions, args.device)
        runs: dict[tuple, list[dict]] = {}
        compile_s: dict[tuple, float] = {}
        for precision, predictor in models.items():
            if compiled:
                predictor.compile(mode=args.compile_mode)
            for bs in batch_sizes:  # warm-up: allocations, kernel choice, compilation
                start = time.perf_counter()
                timed_run(predictor, jobs[: 2 * bs], bs, args.workers, args.device)
                compile_s[precision, bs] = time.perf_counter() - start
        for _ in range(args.rounds):
            for bs in batch_sizes:
                for precision, predictor in models.items():
                    run = timed_run(predictor, jobs, bs, args.workers, args.device)
                    runs.setdefault((precision, bs), []).append(run)
        print(
            f"\nFOCUS-{size}{' torch.compile' if compiled else ''}, {count} JPEGs 512x683, "
            f"{args.workers} reader threads, median of {args.rounds} interleaved rounds:"
        )
        print("| precision | batch | images/s | CPU s / image | peak GPU GiB |"
              + (" first (compile) s |" if compiled else ""))  # fmt: skip
        print("|---|---:|---:|---:|---:|" + ("---:|" if compiled else ""))
        table = []
        for (precision, bs), rs in runs.items():
            ips = statistics.median(r["images"] / r["wall_s"] for r in rs)
            cpu = statistics.median(r["cpu_s"] / r["images"] for r in rs)
            peak = max(r["peak_GiB"] for r in rs)
            row = {"precision": precision, "batch": bs, "images_per_s": ips,
                   "cpu_s_per_image": cpu, "peak_GiB": peak, "runs": rs,
                   "warmup_s": compile_s[precision, bs]}  # fmt: skip
            table.append(row)
            print(f"| {precision} | {bs} | {ips:.1f} | {cpu:.3f} | {peak:.2f} |"
                  + (f" {compile_s[precision, bs]:.0f} |" if compiled else ""))  # fmt: skip
        results[size] = table
        del models
        if args.device == "cuda":
            torch.cuda.empty_cache()
    return results


def part_profile(args) -> dict:
    from torch.profiler import ProfilerActivity, profile

    out = {}
    size = args.sizes[0]
    models = model_copies(size, args.precisions, args.device)
    image = rescaled(photos()["astronaut"], 1.0)
    image = np.ascontiguousarray(np.concatenate([image, image[:, :171]], axis=1))  # 512x683
    for precision, predictor in models.items():
        batch = args.profile_batch
        prepared = [predictor.prepare(image)] * batch
        for _ in range(2):
            predictor.predict_prepared(prepared, batch_size=batch)
        activities = [ProfilerActivity.CPU]
        if args.device == "cuda":
            activities.append(ProfilerActivity.CUDA)
            torch.cuda.synchronize()
        with profile(activities=activities) as prof:
            predictor.predict_prepared(prepared, batch_size=batch)
            if args.device == "cuda":
                torch.cuda.synchronize()
        key = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60)
        out[precision] = table
        print(f"\nFOCUS-{size} {precision}, batch {batch} of 512x683, one predict_prepared:")
        print(table)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="golden,agreement,throughput")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", default="large", help="comma-separated: large,giant")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--batch-sizes", default="1,4,8,16")
    parser.add_argument("--compile-batch", default="8")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--max-images", type=int, default=None, help="agreement: at most N")
    parser.add_argument("--profile-batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    args.sizes = args.sizes.split(",")
    args.precisions = args.precisions.split(",")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.compile_batch = [int(b) for b in args.compile_batch.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        print(f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}, {os.cpu_count()} CPUs")  # fmt: skip
    parts = {
        "golden": part_golden,
        "agreement": part_agreement,
        "throughput": lambda a: throughput(a, compiled=False),
        "compile": lambda a: throughput(a, compiled=True),
        "profile": part_profile,
    }
    for name in args.parts.split(","):
        start = time.perf_counter()
        result = parts[name](args)
        print(f"[{name}: {time.perf_counter() - start:.0f} s]", flush=True)
        (args.out / f"gpu_{name}_{'_'.join(args.sizes)}.json").write_text(
            json.dumps(result, indent=1, default=str)
        )


if __name__ == "__main__":
    main()
