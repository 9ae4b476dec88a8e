"""What `napari-focus doctor` and the napari widget say about the compiled kernels."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch

from . import build as jit
from .toolchain import cpu_model


def _devices() -> list[str]:
    devices = [
        f"cpu: {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    ]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(i)
            devices.append(f"cuda:{i}: {torch.cuda.get_device_name(i)} (sm_{major}{minor})")
    return devices


def _kernel(kind: str, build_now: bool, load_cached: bool) -> dict[str, Any]:
    st = jit.state(kind)
    cached = jit.is_cached(kind)
    try_now = build_now or (load_cached and cached)  # loading a cached one compiles nothing
    if try_now and st.op is None and st.error is None and jit.unavailable_reason(kind) is None:
        with contextlib.suppress(jit.KernelUnavailableError):
            jit.load(kind)
    if st.op is not None:
        status = "loaded"
        how = f"built in {st.build_seconds:.1f} s" if st.built_now else "from the cache"
        detail = f"{how}; self-check against the PyTorch reference passed"
    elif st.error is not None:
        status, detail = "unavailable", st.error.reason
    elif (reason := jit.unavailable_reason(kind)) is not None:
        status, detail = "unavailable", reason
    elif cached:
        status, detail = "built", "in the cache; loads and self-checks on first use"
    else:
        status, detail = "not built", "builds on first use (or run `napari-focus doctor --build`)"
    log = jit.build_directory(kind) / "build.log"
    return {
        "status": status,
        "detail": detail,
        "self_check": st.self_check,
        "build_directory": str(jit.build_directory(kind)),
        "log": str(log) if log.exists() else None,
    }


def kernel_status(build_now: bool = False, load_cached: bool = False) -> dict[str, Any]:
    """Versions, devices, cache folder and per-kernel status (``status``: ``"loaded"``,
    ``"built"``, ``"not built"`` or ``"unavailable"``, with ``detail`` saying why;
    ``self_check``: ``"passed"``, ``"failed: <why>"`` or ``None`` when not run).

    ``build_now`` compiles missing kernels; ``load_cached`` loads and self-checks
    kernels already in the cache. Without either nothing is loaded (fast enough
    for a GUI thread)."""
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "devices": _devices(),
        "cache": str(jit.cache_root()),
        "kernels": {kind: _kernel(kind, build_now, load_cached) for kind in jit.KINDS},
    }


def doctor_report(build: bool = False) -> str:
    """Human-readable report; kernels in the cache are loaded and self-checked,
    ``build=True`` also compiles missing ones first."""
    info = kernel_status(build_now=build, load_cached=True)
    lines = [
        f"torch: {info['torch']}",
        f"CUDA (torch build): {info['cuda'] or 'none'}",
        "devices:",
        *(f"  {device}" for device in info["devices"]),
        f"kernel cache: {info['cache']}",
        "deformable-attention kernels:",
    ]
    for kind, kernel in info["kernels"].items():
        detail = f" - {kernel['detail']}" if kernel["detail"] else ""
        lines.append(f"  {kind}: {kernel['status']}{detail}")
        if Path(kernel["build_directory"]).is_dir():  # none where it cannot be built
            lines.append(f"    folder: {kernel['build_directory']}")
        if kernel["log"]:
            lines.append(f"    build log: {kernel['log']}")
    if not build and any(k["status"] == "not built" for k in info["kernels"].values()):
        lines.append("run `napari-focus doctor --build` to compile them now.")
    return "\n".join(lines)
