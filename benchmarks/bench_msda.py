"""Time napari-focus's compiled deformable-attention kernels against the PyTorch reference.

Shapes are the three deformable-attention calls of FOCUS-L at its 1024 x 1408
working size (batch 1, 4 sampling points, uniform random locations):

    python benchmarks/bench_msda.py [--threads 2] [--repeat 20]

On CUDA (when available) it also times float32 and bfloat16.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from napari_focus.ops import ms_deform_attn


@dataclass(frozen=True)
class Case:
    name: str
    queries: int
    heads: int
    head_dim: int
    levels: tuple[tuple[int, int], ...]
    points: int = 4


CASES = (
    Case("pixel decoder", 7392, 8, 32, ((16, 22), (32, 44), (64, 88))),
    Case("extractor", 7392, 16, 32, ((36, 50),)),
    Case("injector", 1800, 16, 32, ((64, 88), (32, 44), (16, 22))),
)


def make_inputs(case: Case, device: str, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(case.levels, dtype=torch.int64)
    areas = shapes.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    n_levels = len(case.levels)
    value = torch.randn(1, int(areas.sum()), case.heads, case.head_dim, generator=gen)
    locations = torch.rand(1, case.queries, case.heads, n_levels, case.points, 2, generator=gen)
    logits = torch.randn(1, case.queries, case.heads, n_levels * case.points, generator=gen)
    weights = logits.softmax(-1).view(1, case.queries, case.heads, n_levels, case.points)
    return [
        value.to(device, dtype),
        shapes.to(device),
        starts.to(device),
        locations.to(device, dtype),
        weights.to(device, dtype),
    ]


def median_ms(
    fns: dict[str, Callable[[], torch.Tensor]], repeat: int, cuda: bool
) -> dict[str, float]:
    """Median wall time of each function; runs are interleaved so that load from
    other processes on a shared machine hits every backend alike."""
    for fn in fns.values():
        for _ in range(2):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def run(device: str, dtype: torch.dtype, repeat: int) -> None:
    print(f"\n{device} {str(dtype).removeprefix('torch.')}")
    print("| shape | torch (ms) | compiled (ms) | speed-up | max abs diff |")
    print("|---|---:|---:|---:|---:|")
    for case in CASES:
        args = make_inputs(case, device, dtype)
        ms = median_ms(
            {
                "torch": lambda a=args: ms_deform_attn(*a, backend="torch"),
                "compiled": lambda a=args: ms_deform_attn(*a, backend=device),
            },
            repeat,
            device == "cuda",
        )
        diff = (
            (
                ms_deform_attn(*args, backend=device).float()
                - ms_deform_attn(*args, backend="torch").float()
            )
            .abs()
            .max()
            .item()
        )
        print(
            f"| {case.name} | {ms['torch']:.1f} | {ms['compiled']:.1f} | "
            f"{ms['torch'] / ms['compiled']:.1f}x | {diff:.1e} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per case")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    with torch.inference_mode():
        ms_deform_attn(*make_inputs(CASES[0], "cpu", torch.float32), backend="cpu")  # build
        run("cpu", torch.float32, args.repeat)
        if torch.cuda.is_available():
            print(f"GPU: {torch.cuda.get_device_name()}")
            for dtype in (torch.float32, torch.bfloat16):
                run("cuda", dtype, args.repeat)


if __name__ == "__main__":
    main()
