"""Fine-tuning step time and memory of FOCUS (large by default) on this machine.

One optimizer step = the training forward (every decoder prediction), the full set
criterion (12,544 points, all 10 predictions), backward and AdamW, on a random batch of
the preset's canvas. Weights are random (speed and memory do not depend on them). Each
configuration runs in a fresh process, alternating between them, so that their peak
memory figures are their own; wall time and process CPU time are reported per step
(the first step, which allocates, is reported apart).

    python benchmarks/bench_finetune.py --preset cpu --steps 3 --rounds 2
    python benchmarks/bench_finetune.py --compare checkpointing   # on vs off
    python benchmarks/bench_finetune.py --device cuda --preset gpu-xl --steps 6
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def one_run(args: argparse.Namespace) -> dict:
    import torch

    from napari_focus.model import build_model
    from napari_focus.training.criterion import SetCriterion, total_loss
    from napari_focus.training.forward import training_forward
    from napari_focus.training.matcher import Target
    from napari_focus.training.presets import PRESETS
    from napari_focus.training.setup import parameter_groups, prepare_for_training

    torch.manual_seed(0)
    preset = PRESETS[args.preset]
    canvas = args.canvas or preset.canvas
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    amp = preset.amp and cuda  # as `napari-focus train` runs it: float16 autocast, scaled
    model = build_model(args.size).to(device)
    trainable = prepare_for_training(
        model, preset.parts, checkpointing=args.checkpointing, backend="auto" if cuda else "torch"
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    optimizer = torch.optim.AdamW(parameter_groups(model, 1e-4, 0.1, 0.05))
    criterion = SetCriterion()
    fg = torch.zeros(canvas, canvas)
    fg[canvas // 4 : canvas // 2, canvas // 5 : canvas // 2] = 1
    target = Target(torch.tensor([0, 1], device=device), torch.stack([fg, 1 - fg]).to(device))
    images = torch.randn(preset.batch_size, 3, canvas, canvas, device=device)
    walls, cpus = [], []
    for _ in range(args.steps):
        wall, cpu = time.perf_counter(), time.process_time()
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            losses = criterion(training_forward(model, images), [target] * preset.batch_size)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total_loss(losses)).backward()
        scaler.step(optimizer)
        scaler.update()
        if cuda:
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {
        "size": args.size,
        "preset": preset.name,
        "canvas": canvas,
        "batch": preset.batch_size,
        "checkpointing": args.checkpointing,
        "trainable_parameters_M": round(
            sum(p.numel() for n, p in model.named_parameters() if n in set(trainable)) / 1e6, 1
        ),
        "threads": torch.get_num_threads(),
        "first_step_wall_s": walls[0],
        "step_wall_s": walls[1:],
        "step_cpu_s": cpus[1:],
        "peak_rss_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "amp": amp,
        "peak_gpu_GiB": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }


def gpu_note(runs: list[dict]) -> str:
    if runs[0]["peak_gpu_GiB"] is None:
        return ""
    peak = max(r["peak_gpu_GiB"] for r in runs)
    return f", peak GPU memory {peak:.1f} GiB, float16 autocast {runs[0]['amp']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="large")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--canvas", type=int)
    parser.add_argument("--steps", type=int, default=3, help="steps per run (first = warm-up)")
    parser.add_argument("--rounds", type=int, default=1, help="runs per configuration")
    parser.add_argument("--compare", choices=("checkpointing",), help="alternate on/off")
    parser.add_argument("--checkpointing", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_run(args)))
        return
    settings = [1, 0] if args.compare else [args.checkpointing]
    results: dict[int, list[dict]] = {s: [] for s in settings}
    for _ in range(args.rounds):
        for setting in settings:
            command = [sys.executable, __file__, "--child", "--size", args.size,
                       "--preset", args.preset, "--steps", str(args.steps),
                       "--checkpointing", str(setting), "--device", args.device]  # fmt: skip
            if args.canvas:
                command += ["--canvas", str(args.canvas)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[setting].append(json.loads(out.strip().splitlines()[-1]))
    for setting, runs in results.items():
        walls = [w for r in runs for w in r["step_wall_s"]]
        cpus = [c for r in runs for c in r["step_cpu_s"]]
        first = runs[0]
        print(
            f"FOCUS-{args.size} preset {first['preset']} ({first['trainable_parameters_M']} M "
            f"trainable), batch {first['batch']} x {first['canvas']} px, checkpointing "
            f"{'on' if setting else 'off'}, {first['threads']} threads: step "
            f"{statistics.median(walls):.1f} s wall (median of {len(walls)}; "
            f"{min(walls):.1f}-{max(walls):.1f}), {statistics.median(cpus):.1f} s CPU, "
            f"first step {statistics.median(r['first_step_wall_s'] for r in runs):.1f} s, "
            f"peak RSS {max(r['peak_rss_GiB'] for r in runs):.2f} GiB" + gpu_note(runs)
        )


if __name__ == "__main__":
    main()
