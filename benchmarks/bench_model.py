"""End-to-end FOCUS timing on CPU with random weights, against the machine's FLOP bound.

Reports seconds per image, peak RSS, the fp32 matmul rate measured in the same
run, the model's FLOP count (matmuls and convolutions counted by torch's
FlopCounterMode, plus attention, which it counts as 0 on CPU) and the ratio of
the measured time to the FLOP bound (FLOPs / matmul rate).

    python benchmarks/bench_model.py --size large --height 480 --width 640 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from napari_focus import FocusPredictor, build_model
from napari_focus.presets import input_preset
from napari_focus.transforms import normalize_and_pad, resize_rgb, resized_shape


def matmul_rate(n: int = 2048, seconds: float = 3.0) -> float:
    """Best sustained fp32 GEMM rate in FLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - start))
    return best


def random_model(size: str, seed: int = 0) -> torch.nn.Module:
    """FOCUS with deterministic random weights (speed does not depend on them)."""
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = build_model(size)
    model = model.to_empty(device="cpu")
    for name, tensor in model.state_dict().items():
        if name.endswith("running_var"):
            tensor.fill_(1.0)
        elif name.endswith(("running_mean", "num_batches_tracked")):
            tensor.zero_()
        elif name.endswith("bias") or ("norm" in name and name.endswith("weight")):
            tensor.fill_(0.0 if name.endswith("bias") else 1.0)
        else:
            tensor.normal_(0, 0.02)
    return model.eval()


def random_predictor(size: str, seed: int = 0, precision: str = "float32") -> FocusPredictor:
    return FocusPredictor(random_model(size, seed), "sod", device="cpu", precision=precision)


def model_flops(predictor: FocusPredictor, image: np.ndarray) -> int:
    """FlopCounterMode's count plus scaled-dot-product attention, which it counts as 0
    on CPU (4 * B * heads * Lq * Lk * head_dim per call)."""
    shape = resized_shape(*image.shape[:2], 512, 2048)
    x = normalize_and_pad(resize_rgb(image, shape), input_preset())
    attention = 0
    original = F.scaled_dot_product_attention

    def counting(q, k, v, *args, **kwargs):
        nonlocal attention
        attention += 4 * q.shape[:-2].numel() * q.shape[-2] * k.shape[-2] * q.shape[-1]
        return original(q, k, v, *args, **kwargs)

    counter = FlopCounterMode(display=False)
    F.scaled_dot_product_attention = counting
    try:
        with torch.inference_mode(), counter:
            predictor.model(x)
    finally:
        F.scaled_dot_product_attention = original
    return counter.get_total_flops() + attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="large", choices=("large", "giant"))
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--backend", default="auto", help="ms_deform_attn backend")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rate = matmul_rate()
    predictor = random_predictor(args.size)
    predictor.model.set_deform_attn_backend(args.backend)
    image = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), np.uint8)

    predictor.predict(image)  # warm-up: kernel build, allocator, caches
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        predictor.predict(image)
        times.append(time.perf_counter() - start)
    # peak RSS of loading + inference, before the FLOP counter's own bookkeeping
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    rate_after = matmul_rate()
    flops = model_flops(predictor, image)

    best, median = min(times), statistics.median(times)
    bound = flops / max(rate, rate_after)
    result = {
        "size": args.size,
        "image": f"{args.height}x{args.width}",
        "threads": args.threads,
        "backend": args.backend,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "seconds_per_image_best": round(best, 2),
        "seconds_per_image_median": round(median, 2),
        "peak_rss_gb": round(peak_rss, 2),
        "matmul_gflops": round(max(rate, rate_after) / 1e9, 1),
        "model_tflop": round(flops / 1e12, 3),
        "flop_bound_seconds": round(bound, 2),
        "ratio_to_flop_bound": round(best / bound, 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
