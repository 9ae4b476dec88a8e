"""The compilers behind the kernel builds: what is there, which versions, what they support.

Everything here runs the tools once per process at most (``--version``,
``--list-gpu-arch``) and never compiles; :mod:`napari_focus.ops.build` turns
the answers into a reason not to build, the architectures to build for and the
cache key of a build.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

# extra compiler flags for both kernels; part of the cache key
EXTRA_CFLAGS_ENV = "NAPARI_FOCUS_KERNEL_CFLAGS"


def cxx() -> str:
    return os.environ.get("CXX") or ("cl" if sys.platform == "win32" else "c++")


def cxx_path() -> str | None:
    command = cxx().strip()
    return shutil.which(shlex.split(command)[0]) if command else None


def cxx_install_hint() -> str:
    """How this platform's users usually get a C++ compiler (to follow "install one")."""
    if sys.platform == "darwin":
        return " with `xcode-select --install`"
    if sys.platform.startswith("linux"):
        return ", e.g. `sudo apt install g++` on Debian/Ubuntu,"
    return ""


def ninja_dir() -> str | None:
    """The bin folder of the ``ninja`` pip package, which may not be on PATH."""
    try:
        import ninja  # type: ignore[import-not-found]
    except ImportError:
        return None
    return getattr(ninja, "BIN_DIR", None)


@functools.cache
def _tool_version(command: tuple[str, ...]) -> str:
    """The first line a tool prints for ``--version`` (``"unknown"`` when it will not say)."""
    try:
        result = subprocess.run(
            [*command, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
    return next((line for line in lines if line), "unknown")


def cxx_version() -> str:
    return _tool_version(tuple(shlex.split(cxx()))) if cxx().strip() else "none"


def cpp_extension() -> Any:
    """``torch.utils.cpp_extension``, imported without its "No CUDA runtime is found"
    warning: a CUDA build of torch on a machine without a GPU (PyPI's default on
    Linux) says so on import, and the CPU kernel needs no CUDA runtime."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension as module
    finally:
        logger.setLevel(level)
    return module


def nvcc_path() -> Path | None:
    """``nvcc`` of the CUDA toolkit torch builds with (``CUDA_HOME``), if there is one."""
    cuda_home = cpp_extension().CUDA_HOME

    if cuda_home is None:
        return None
    nvcc = Path(cuda_home) / "bin" / ("nvcc.exe" if sys.platform == "win32" else "nvcc")
    return nvcc if nvcc.exists() else None


@functools.cache
def _nvcc_output(nvcc: str, flag: str) -> str:
    try:
        result = subprocess.run([nvcc, flag], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout + result.stderr


def nvcc_release(nvcc: Path) -> tuple[int, int] | None:
    """``(major, minor)`` of the CUDA toolkit an ``nvcc`` belongs to."""
    match = re.search(r"release (\d+)\.(\d+)", _nvcc_output(str(nvcc), "--version"))
    return (int(match.group(1)), int(match.group(2))) if match else None


def nvcc_version_line(nvcc: Path) -> str:
    lines = [line.strip() for line in _nvcc_output(str(nvcc), "--version").splitlines()]
    return next((line for line in reversed(lines) if line), "unknown")


def nvcc_problem(nvcc: Path, torch_cuda: str | None) -> str | None:
    """Why this ``nvcc`` cannot build kernels for this torch (``None``: it can)."""
    release = nvcc_release(nvcc)
    if release is None:
        return f"{nvcc} does not report a CUDA release (`nvcc --version`)"
    if torch_cuda is None:
        return None
    torch_major = int(torch_cuda.split(".")[0])
    if release[0] != torch_major:
        return (
            f"nvcc at {nvcc} is CUDA {release[0]}.{release[1]}, but this PyTorch was built "
            f"with CUDA {torch_cuda}; kernels must be compiled with a CUDA {torch_major}.x "
            "toolkit (install one and point CUDA_HOME at it)"
        )
    return None


def supported_cuda_archs(nvcc: Path) -> set[str] | None:
    """Compute capabilities this toolkit compiles for (``{"7.5", "8.0", ...}``)."""
    found = set()
    for number in re.findall(r"compute_(\d+)\b", _nvcc_output(str(nvcc), "--list-gpu-arch")):
        found.add(f"{number[:-1]}.{number[-1]}")
    return found or None


def requested_cuda_archs() -> list[str]:
    """``TORCH_CUDA_ARCH_LIST`` when set, else the compute capabilities of the visible GPUs."""
    if env := os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return [a for a in re.split(r"[;\s]+", env.strip()) if a]
    if not torch.cuda.is_available():
        return []
    caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    return [f"{major}.{minor}" for major, minor in caps]


def clamp_cuda_archs(
    requested: list[str], supported: set[str] | None
) -> tuple[list[str], list[str]]:
    """``(kept, dropped)``: the requested architectures the toolkit can compile for.

    Entries look like ``8.6``, ``9.0+PTX`` or ``9.0a``; named ones (``Ampere``)
    are kept for torch to expand. ``supported=None`` (unknown) keeps everything.
    """
    if supported is None:
        return list(requested), []
    kept, dropped = [], []
    for arch in requested:
        match = re.match(r"^(\d+)\.(\d+)", arch)
        if match is None or f"{match.group(1)}.{match.group(2)}" in supported:
            kept.append(arch)
        else:
            dropped.append(arch)
    return kept, dropped


def extra_cflags() -> list[str]:
    return shlex.split(os.environ.get(EXTRA_CFLAGS_ENV, ""))


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (as `lscpu` prints it on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def cpu_isa_tag() -> str | None:
    """A short hash of this CPU's instruction-set flags (Linux), for ``-march=native`` builds.

    The cache may sit in a home folder shared by machines with different CPUs;
    each instruction set then gets its own build instead of a crash.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in cpuinfo.splitlines():
        key, _, flags = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return hashlib.sha1(" ".join(sorted(flags.split())).encode()).hexdigest()[:8]
    return None


def unavailable_reason(kind: str) -> str | None:
    """Why ``kind`` cannot be built here, found without compiling anything (``None``: try it)."""
    if kind == "cuda":  # before the compiler: installing one would not help here
        if torch.version.cuda is None:
            return f"this PyTorch build ({torch.__version__}) has no CUDA support"
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible"
    if cxx_path() is None:
        program = shlex.split(cxx())[0] if cxx().strip() else ""
        where = "does not exist" if os.sep in program else "is not on PATH"
        return (
            f"no C++ compiler found ('{cxx()}' {where}; "
            f"install one{cxx_install_hint()} or set CXX)"
        )
    if ninja_dir() is None and shutil.which("ninja") is None:
        return "ninja is not installed (pip install ninja)"
    if kind == "cuda":
        nvcc = nvcc_path()
        if nvcc is None:
            return "nvcc (the CUDA toolkit) was not found; install it or set CUDA_HOME"
        if (problem := nvcc_problem(nvcc, torch.version.cuda)) is not None:
            return problem
        requested = requested_cuda_archs()
        kept, dropped = clamp_cuda_archs(requested, supported_cuda_archs(nvcc))
        if requested and not kept:
            release = nvcc_release(nvcc)
            toolkit = f"CUDA {release[0]}.{release[1]}" if release else str(nvcc)
            return (
                f"the {toolkit} toolkit cannot compile for the GPU architecture(s) "
                f"{', '.join(dropped)}; use a toolkit that supports them"
            )
    return None
