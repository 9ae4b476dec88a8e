"""The fastest float32 path for the model's linear layers on this CPU, chosen by measuring.

PyTorch's CPU ``F.linear`` goes through MKL's SGEMM, which is fast on Intel
processors but takes a slower code path on others (on a Zen 5 EPYC it reached
94-97 GFLOP per CPU-second against oneDNN's 211-223). oneDNN's inner product is
reachable through ``torch.ops.mkldnn._linear_pointwise`` with the model's own
dense weights: no second copy of the weights, and the results differ from MKL's
only by float32 rounding (summation order).

The choice is measured once per machine, on the matrix shapes of the model, and
kept in the cache folder keyed by processor, instruction set, torch version and
thread count. ``NAPARI_FOCUS_CPU_LINEAR`` = ``mkl`` or ``onednn`` forces a path
(``auto``, the default, measures).
"""

from __future__ import annotations

import json
import logging
import os
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .atomic import atomic_write_text

LOG = logging.getLogger(__name__)
ENV = "NAPARI_FOCUS_CPU_LINEAR"
PATHS = ("mkl", "onednn")
# oneDNN must beat MKL by this much: a noisy tie keeps PyTorch's default path
MIN_GAIN = 1.10
CACHE_NAME = "cpu-linear-path.json"


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` through oneDNN's inner product (float32, CPU, inference)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def machine_key() -> str:
    from .ops.toolchain import cpu_isa_tag, cpu_model

    return "|".join(
        (cpu_model(), cpu_isa_tag() or "-", torch.__version__, str(torch.get_num_threads()))
    )


def measure(shapes: list[tuple[int, int, int]], rounds: int = 3) -> dict[str, float]:
    """Best GFLOP per CPU-second of each path over ``(tokens, in, out)`` shapes,
    the paths interleaved so that both see the same load."""
    cases = []
    generator = torch.Generator().manual_seed(0)
    for m, k, n in shapes:
        x = torch.randn(1, m, k, generator=generator)
        w = torch.randn(n, k, generator=generator) * k**-0.5
        cases.append((x, w, torch.zeros(n), 2.0 * m * k * n))
    kernels: dict[str, Callable] = {"mkl": F.linear, "onednn": onednn_linear}
    seconds = dict.fromkeys(PATHS, 0.0)
    flops = sum(case[3] for case in cases)
    with torch.inference_mode():
        for name in PATHS:  # warm-up: oneDNN creates its primitives on the first call
            kernels[name](*cases[0][:3])
        best = dict.fromkeys(PATHS, float("inf"))
        for _ in range(rounds):
            for name in PATHS:
                start = time.process_time()
                for x, w, b, _ in cases:
                    kernels[name](x, w, b)
                best[name] = min(best[name], time.process_time() - start)
        for name in PATHS:
            seconds[name] = max(best[name], 1e-9)
    return {name: flops / seconds[name] / 1e9 for name in PATHS}


def _cache_file() -> Path:
    from .ops.build import cache_root

    return cache_root() / CACHE_NAME


def _read_cache() -> dict:
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _shapes_key(shapes: list[tuple[int, int, int]]) -> str:
    return " ".join("x".join(map(str, shape)) for shape in shapes)


def choose(shapes: list[tuple[int, int, int]], model: str | None = None) -> str:
    """``"mkl"`` or ``"onednn"`` for this machine and these ``(tokens, in, out)`` shapes:
    forced by ``$NAPARI_FOCUS_CPU_LINEAR``, else from the cache, else measured (about a
    second for FOCUS-L) and cached, with the name of the ``model`` they are of (the
    architecture's size name) for ``napari-focus doctor`` to say."""
    forced = os.environ.get(ENV, "auto").strip().lower()
    if forced in PATHS:
        return "mkl" if forced == "onednn" and not onednn_available() else forced
    if forced != "auto":
        raise ValueError(f"{ENV} must be auto, mkl or onednn, got {forced!r}")
    if not onednn_available():
        return "mkl"
    key = f"{machine_key()}|{_shapes_key(shapes)}"
    cached = _read_cache().get(key)
    if isinstance(cached, dict) and cached.get("path") in PATHS:
        return cached["path"]
    rates = measure(shapes)
    path = "onednn" if rates["onednn"] >= MIN_GAIN * rates["mkl"] else "mkl"
    LOG.info(
        "CPU linear path: %s (float32 GFLOP per CPU-second: MKL %.0f, oneDNN %.0f)",
        path,
        rates["mkl"],
        rates["onednn"],
    )
    entries = _read_cache()
    entries[key] = {"path": path, "gflops": {k: round(v, 1) for k, v in rates.items()}}
    if model is not None:
        entries[key]["model"] = model
    try:
        atomic_write_text(_cache_file(), json.dumps(entries, indent=1, sort_keys=True) + "\n")
    except OSError as error:  # a read-only cache only costs the measurement next time
        LOG.debug("could not cache the CPU linear path: %s", error)
    return path


def describe() -> str:
    """For ``napari-focus doctor``: the path this machine uses per model shape, and why."""
    forced = os.environ.get(ENV, "auto").strip().lower()
    if forced in PATHS:
        return f"CPU float32 linear layers: {forced} (set by {ENV})"
    if forced != "auto":
        return f"CPU float32 linear layers: {ENV}={forced!r} is invalid; use auto, mkl or onednn"
    if not onednn_available():
        return "CPU float32 linear layers: mkl (this torch has no oneDNN)"
    prefix = machine_key() + "|"
    lines = []
    for key, entry in sorted(_read_cache().items()):
        if key.startswith(prefix) and isinstance(entry, dict) and entry.get("path") in PATHS:
            rates = entry.get("gflops", {})
            measured = ", ".join(
                f"{k} {v:.0f}" for k, v in rates.items() if isinstance(v, int | float)
            )
            model = entry.get("model")
            of = f"the {model} model's linear shapes" if isinstance(model, str) else "shapes"
            lines.append(
                f"  {entry['path']} for {of} {key[len(prefix) :]} "
                f"(measured GFLOP per CPU-second: {measured})"
            )
    if not lines:
        return "CPU float32 linear layers: measured at the first model load (about a second)"
    return "\n".join([f"CPU float32 linear layers (cached in {_cache_file()}):", *lines])


class OneDNNForward:
    """``forward`` of one ``nn.Linear`` through oneDNN at float32 CPU inference, and
    through ``F.linear`` otherwise (gradients, autocast, other dtypes and devices, and
    ``torch.compile``, whose Inductor lowers oneDNN linears only for frozen weights).
    A class rather than a bound function so that a routed model still pickles. The
    layer holds this object, which holds the layer only weakly: a reference cycle would
    keep a released model's memory until a full garbage collection (0.3 s of napari's
    time, whichever thread runs it)."""

    def __init__(self, linear: nn.Linear) -> None:
        self._linear = weakref.ref(linear)

    def __reduce__(self) -> tuple:
        return (OneDNNForward, (self._linear(),))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        linear = self._linear()
        assert linear is not None, "called through its layer, which is alive"
        weight, bias = linear.weight, linear.bias
        if (
            torch.is_grad_enabled()
            or x.dtype != torch.float32
            or weight.dtype != torch.float32
            or not x.is_cpu
            or torch.is_autocast_enabled("cpu")
            or torch.compiler.is_compiling()
        ):
            return F.linear(x, weight, bias)
        return onednn_linear(x, weight, bias)


def route_linears(model: nn.Module, path: str) -> int:
    """Send every ``nn.Linear`` of ``model`` through ``path`` (weights untouched, so
    ``state_dict()`` and training are unaffected). Returns the number of layers."""
    count = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            if path == "onednn":
                module.forward = OneDNNForward(module)
            else:
                module.__dict__.pop("forward", None)
            count += 1
    return count
