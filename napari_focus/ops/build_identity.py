"""Where a compiled kernel's build lives and what identifies it: the per-user cache,
the torch variant, the compile flags and the hash of everything a build depends on
(sources, flags, compilers, torch, GPU architectures), which names its folder."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from .._paths import bundled_dir
from . import toolchain

SOURCES = {
    "cpu": ("msda_cpu.cpp",),
    "cuda": ("msda_cuda.cpp", "msda_cuda_kernel.cu"),
}
HEADERS = {"cpu": ("msda_checks.h",), "cuda": ("msda_checks.h", "msda_cuda_kernel.cuh")}


def cache_root() -> Path:
    """``$NAPARI_FOCUS_CACHE``, ``$XDG_CACHE_HOME/napari-focus`` or ``~/.cache/napari-focus``."""
    if env := os.environ.get("NAPARI_FOCUS_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "napari-focus"


def cache_problem(kind: str) -> str | None:
    """Why ``kind`` cannot be built into its :func:`build_directory` of the cache (None:
    it can be written there, or created)."""
    from ..atomic import WriteError, check_writable_folder

    folder = build_directory(kind)
    try:
        check_writable_folder(folder)
    except WriteError as error:
        return (f"the kernel cache cannot be written ({error.reason}; the build goes into "
                f"{folder}); set NAPARI_FOCUS_CACHE to a folder you can write")  # fmt: skip
    return None


def torch_variant() -> str:
    """``torch-<version>-<cpu|cuXYZ>``: a build is only valid for this pair."""
    version = torch.__version__.split("+")[0]
    cuda = torch.version.cuda
    return f"torch-{version}-{'cu' + cuda.replace('.', '') if cuda else 'cpu'}"


def extension_name(kind: str) -> str:
    return f"napari_focus_msda_{kind}"


def cuda_archs() -> list[str]:
    """The requested GPU architectures that the toolkit can compile for."""
    nvcc = toolchain.nvcc_path()
    supported = toolchain.supported_cuda_archs(nvcc) if nvcc else None
    kept, _ = toolchain.clamp_cuda_archs(toolchain.requested_cuda_archs(), supported)
    return kept


def build_tag(kind: str) -> str:
    if kind == "cpu":
        isa = toolchain.cpu_isa_tag()
        return f"native-{isa}" if isa else "generic"
    archs = [a.replace(".", "").replace("+PTX", "ptx") for a in cuda_archs()]
    return "sm" + "_".join(archs) if archs else "default"


def compile_flags(kind: str) -> dict[str, list[str]]:
    if sys.platform == "win32":
        cflags, ldflags = ["/O2", "/openmp"], []
    elif sys.platform == "darwin":
        cflags, ldflags = ["-O3"], []
    else:
        # at::parallel_for only spreads work over threads when compiled with
        # OpenMP; the library then shares the libgomp that torch already loaded.
        cflags, ldflags = ["-O3", "-fopenmp"], ["-fopenmp"]
        if kind == "cpu" and toolchain.cpu_isa_tag() is not None:
            cflags.append("-march=native")  # AVX2/AVX-512 halve the CPU kernel's time
    extra = toolchain.extra_cflags()
    flags = {"extra_cflags": cflags + extra, "extra_ldflags": ldflags}
    if kind == "cuda":
        flags["extra_cuda_cflags"] = ["-O3", *extra]
    return flags


def source_files(kind: str) -> list[Path]:
    sources = bundled_dir("ops")
    return [sources / name for name in (*SOURCES[kind], *HEADERS[kind])]


def build_key(kind: str) -> str:
    """Hash of what a build depends on: sources, flags, compilers, torch, GPU architectures."""
    digest = hashlib.sha256()
    for path in source_files(kind):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    parts = {
        "flags": compile_flags(kind),
        "cxx": toolchain.cxx_version(),
        "torch": [torch.__version__, getattr(torch.version, "git_version", "")],
    }
    if kind == "cuda":
        nvcc = toolchain.nvcc_path()
        parts["nvcc"] = toolchain.nvcc_version_line(nvcc) if nvcc else "none"
        parts["archs"] = cuda_archs()
    digest.update(json.dumps(parts, sort_keys=True).encode())
    return digest.hexdigest()[:8]


def build_directory(kind: str) -> Path:
    """``<cache>/ops/torch-<ver>-<cpu|cuXYZ>/napari_focus_msda_<kind>-<tag>-<key>``."""
    name = f"{extension_name(kind)}-{build_tag(kind)}-{build_key(kind)}"
    return cache_root() / "ops" / torch_variant() / name


def log_path(kind: str) -> Path:
    return build_directory(kind) / "build.log"


def library_path(kind: str) -> Path:
    suffix = ".pyd" if sys.platform == "win32" else ".so"
    return build_directory(kind) / f"{extension_name(kind)}{suffix}"
