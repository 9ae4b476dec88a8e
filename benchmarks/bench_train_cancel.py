"""Cancel latency of a fine-tuning run in its own process (the Improve tab's way).

Trains a small checkpoint on synthetic shapes in a spawned process, sets Cancel as the
report of ``--cancel-at`` arrives (default: the evaluation result after step 1, where a
user reading the figures presses it), and measures the wall and CPU seconds from Cancel
to the run's end, and what ran after it. Each ``--package`` is a folder holding a
``napari_focus`` package (this checkout, an older one from ``git archive``); they are
measured interleaved, one process per run:

    git archive <commit> napari_focus | tar -x -C /tmp/old
    python benchmarks/bench_train_cancel.py --package /tmp/old --package . --repeats 2

``--weights`` defaults to the tiny checkpoint built from the reference fixtures
(``FOCUS_REFERENCE``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one_run(weights: Path, cancel_at: str, steps: int, size: int) -> dict:
    sys.path.insert(0, str(HERE.parent / "tests"))
    import multiprocessing

    from synthetic_shapes import export_shapes

    from napari_focus.training import TrainConfig
    from napari_focus.training.process import train_in_subprocess

    tmp = Path(tempfile.mkdtemp(prefix="bench-cancel-"))
    export_shapes(tmp / "data", "duts-tr", 6, seed=3, size=size)
    config = TrainConfig(
        root=tmp / "data", layouts=("duts-tr",), out=tmp / "tuned.safetensors",
        weights=str(weights), steps=steps, device="cpu", preset="cpu", canvas=size,
    )  # fmt: skip
    cancel = threading.Event()
    run = train_in_subprocess(config, cancel)
    pressed, cpu_at_cancel, phase = None, 0.0, ""
    try:
        while True:
            report = next(run)
            label = f"{report.phase}:{report.step}" + (":done" if report.metrics else "")
            if pressed is None and label == cancel_at:
                (child,) = [p for p in multiprocessing.active_children()
                            if p.name == "napari-focus-training"]  # fmt: skip
                fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu_at_cancel = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                pressed, phase = time.perf_counter(), label
                cancel.set()
    except StopIteration as end:
        stopped = time.perf_counter()
        result = end.value
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = children.ru_utime + children.ru_stime
    log = config.work_dir / "training_log.csv"
    if isinstance(result, BaseException) or not log.is_file():
        raise RuntimeError(f"the run ended with {result!r}, without a log")
    with open(log) as handle:
        rows = [f"{r['step']}{r['kind'][0]}" for r in csv.DictReader(handle)]
    return {
        "cancelled_at": phase,
        "cancel_to_stop_s": round(stopped - pressed, 2) if pressed else None,
        "child_cpu_after_cancel_s": round(child_cpu - cpu_at_cancel, 2),
        "stopped_at_step": getattr(result, "step", repr(result)),
        "output_written": bool(getattr(result, "output", None)),
        "log": " ".join(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", action="append", required=True)
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--cancel-at", default="eval:1:done")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.weights, args.cancel_at, args.steps, args.size)))
        return
    weights = args.weights or tiny_weights()
    for repeat in range(args.repeats):
        for package in args.package:
            env = {**os.environ, "PYTHONPATH": str(Path(package).resolve())}
            line = subprocess.run(
                [sys.executable, __file__, "--one", "--package", package, "--weights",
                 str(weights), "--cancel-at", args.cancel_at, "--steps", str(args.steps),
                 "--size", str(args.size)],
                env=env, capture_output=True, text=True, check=True,
            ).stdout.strip().splitlines()[-1]  # fmt: skip
            print(f"run {repeat} {package}: {line}", flush=True)


def tiny_weights() -> Path:
    sys.path.insert(0, str(HERE.parent / "tests"))
    import torch
    from conftest import tiny_architecture, tiny_state_dict

    from napari_focus import FocusPredictor

    reference = Path(os.environ["FOCUS_REFERENCE"])
    architecture = tiny_architecture(reference, "tiny_mlp")
    state = tiny_state_dict(reference, "tiny_mlp")
    predictor = FocusPredictor.from_state_dict(state, "sod", architecture=architecture,
                                               device="cpu")  # fmt: skip
    path = Path(tempfile.mkdtemp(prefix="bench-cancel-")) / "tiny_mlp.safetensors"
    return predictor.save_inference_checkpoint(path, dtype=torch.float32)


if __name__ == "__main__":
    main()
