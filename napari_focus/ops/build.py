"""Just-in-time build of the compiled deformable-attention kernels.

The C++/CUDA sources ship with the package (``napari_focus._paths.bundled_dir("ops")``)
and are compiled with ``torch.utils.cpp_extension.load`` (ninja) on first use into
a per-user cache, one folder per torch version and CUDA variant::

    $NAPARI_FOCUS_CACHE/ops/torch-2.13.0-cpu/napari_focus_msda_cpu-native-cf269088/
    ~/.cache/napari-focus/ops/torch-2.13.0-cu128/napari_focus_msda_cuda-sm90/

The CPU kernel is compiled with ``-march=native`` on Linux, so its folder names
a hash of the CPU's instruction set; the CUDA one names the GPU architectures
(``TORCH_CUDA_ARCH_LIST`` when set, else those of the visible GPUs).

The CPU and CUDA kernels are separate libraries, so the CPU one builds without
nvcc. Each library registers ``torch.ops.napari_focus_<kind>.ms_deform_attn``.
A failed build is remembered for the rest of the process and never retried.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shlex
import shutil
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .._paths import bundled_dir

__all__ = [
    "KINDS",
    "KernelState",
    "KernelUnavailableError",
    "build_directory",
    "cache_root",
    "is_cached",
    "load",
    "state",
    "unavailable_reason",
]

KINDS = ("cpu", "cuda")

_SOURCES = {
    "cpu": ("msda_cpu.cpp",),
    "cuda": ("msda_cuda.cpp", "msda_cuda_kernel.cu"),
}


class KernelUnavailableError(RuntimeError):
    """A compiled kernel cannot be used; ``reason`` says why, ``log_path`` has the build log."""

    def __init__(self, kind: str, reason: str, log_path: Path | None) -> None:
        self.kind = kind
        self.reason = reason
        self.log_path = log_path
        log = f" Build log: {log_path}." if log_path is not None else ""
        super().__init__(
            f"the compiled {kind.upper()} deformable-attention kernel is "
            f"unavailable: {reason}.{log}"
        )


@dataclass
class KernelState:
    """What this process knows about one kernel."""

    kind: str
    op: Callable[..., torch.Tensor] | None = None
    error: KernelUnavailableError | None = None
    build_seconds: float | None = None
    warned: bool = False


_STATES = {kind: KernelState(kind) for kind in KINDS}
_LOCK = threading.Lock()


def state(kind: str) -> KernelState:
    return _STATES[kind]


def cache_root() -> Path:
    """``$NAPARI_FOCUS_CACHE``, ``$XDG_CACHE_HOME/napari-focus`` or ``~/.cache/napari-focus``."""
    if env := os.environ.get("NAPARI_FOCUS_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "napari-focus"


def torch_variant() -> str:
    """``torch-<version>-<cpu|cuXYZ>``: a build is only valid for this pair."""
    version = torch.__version__.split("+")[0]
    cuda = torch.version.cuda
    return f"torch-{version}-{'cu' + cuda.replace('.', '') if cuda else 'cpu'}"


def _cuda_arch_list() -> str:
    """The architectures to compile for: ``TORCH_CUDA_ARCH_LIST`` or the visible GPUs."""
    if env := os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return env
    caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    return ";".join(f"{major}.{minor}" for major, minor in caps)


def extension_name(kind: str) -> str:
    return f"napari_focus_msda_{kind}"


@functools.cache
def _cpu_isa_tag() -> str | None:
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


def _build_tag(kind: str) -> str:
    if kind == "cpu":
        isa = _cpu_isa_tag()
        return f"native-{isa}" if isa else "generic"
    arch = (
        _cuda_arch_list()
        if torch.cuda.is_available()
        else os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    )
    archs = [a.replace(".", "").replace("+PTX", "ptx") for a in arch.replace(" ", ";").split(";")]
    return "sm" + "_".join(a for a in archs if a) if any(archs) else "default"


def build_directory(kind: str) -> Path:
    """``<cache>/ops/torch-<ver>-<cpu|cuXYZ>/napari_focus_msda_<kind>-<isa or arch tag>``."""
    return cache_root() / "ops" / torch_variant() / f"{extension_name(kind)}-{_build_tag(kind)}"


def _log_path(kind: str) -> Path:
    return build_directory(kind) / "build.log"


def _cxx() -> str:
    return os.environ.get("CXX") or ("cl" if sys.platform == "win32" else "c++")


def unavailable_reason(kind: str) -> str | None:
    """Why ``kind`` cannot be built here, found without compiling anything (``None``: try it)."""
    cxx = _cxx()
    if shutil.which(shlex.split(cxx)[0] if cxx.strip() else "c++") is None:
        return f"no C++ compiler found ('{cxx}' is not on PATH; install one or set CXX)"
    if _ninja_dir() is None and shutil.which("ninja") is None:
        return "ninja is not installed (pip install ninja)"
    if kind == "cuda":
        if torch.version.cuda is None:
            return f"this PyTorch build ({torch.__version__}) has no CUDA support"
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible"
        from torch.utils.cpp_extension import CUDA_HOME

        nvcc = "nvcc.exe" if sys.platform == "win32" else "nvcc"
        if CUDA_HOME is None or not (Path(CUDA_HOME) / "bin" / nvcc).exists():
            return "nvcc (the CUDA toolkit) was not found; install it or set CUDA_HOME"
    return None


def _ninja_dir() -> str | None:
    """The bin folder of the ``ninja`` pip package, which may not be on PATH."""
    try:
        import ninja  # type: ignore[import-not-found]
    except ImportError:
        return None
    return getattr(ninja, "BIN_DIR", None)


def _compile_flags(kind: str) -> dict[str, list[str]]:
    if sys.platform == "win32":
        cflags, ldflags = ["/O2", "/openmp"], []
    elif sys.platform == "darwin":
        cflags, ldflags = ["-O3"], []
    else:
        # at::parallel_for only spreads work over threads when compiled with
        # OpenMP; the library then shares the libgomp that torch already loaded.
        cflags, ldflags = ["-O3", "-fopenmp"], ["-fopenmp"]
        if kind == "cpu" and _cpu_isa_tag() is not None:
            cflags.append("-march=native")  # AVX2/AVX-512 halve the CPU kernel's time
    flags = {"extra_cflags": cflags, "extra_ldflags": ldflags}
    if kind == "cuda":
        flags["extra_cuda_cflags"] = ["-O3"]
    return flags


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (POSIX; elsewhere torch's own lock only)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _build_environment(kind: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in ("PATH", "TORCH_CUDA_ARCH_LIST")}
    ninja_dir = _ninja_dir()
    if ninja_dir:
        os.environ["PATH"] = ninja_dir + os.pathsep + os.environ.get("PATH", "")
    if kind == "cuda":
        os.environ["TORCH_CUDA_ARCH_LIST"] = _cuda_arch_list()
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _warning_lines(caught: list[warnings.WarningMessage]) -> str:
    return "".join(f"warning: {w.message}\n" for w in caught)


def _compile(kind: str) -> Callable[..., torch.Tensor]:
    from torch.utils import cpp_extension

    sources_dir = bundled_dir("ops")
    build_dir = build_directory(kind)
    build_dir.mkdir(parents=True, exist_ok=True)
    log = _log_path(kind)
    with _file_lock(build_dir.parent / f"{build_dir.name}.lock"), _build_environment(kind):
        # torch's own lock file survives a build that was killed, and then
        # makes every later build wait forever; all napari-focus builders hold
        # the lock above, so a leftover one here is stale.
        (build_dir / "lock").unlink(missing_ok=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                cpp_extension.load(
                    name=extension_name(kind),
                    sources=[str(sources_dir / name) for name in _SOURCES[kind]],
                    build_directory=str(build_dir),
                    with_cuda=kind == "cuda",
                    is_python_module=False,
                    verbose=False,
                    **_compile_flags(kind),
                )
            except Exception as exc:
                log.write_text(_warning_lines(caught) + f"{exc}\n\n{traceback.format_exc()}")
                raise
            log.write_text(_warning_lines(caught) + "build succeeded\n")
    return getattr(torch.ops, f"napari_focus_{kind}").ms_deform_attn


def load(kind: str) -> Callable[..., torch.Tensor]:
    """Return ``torch.ops.napari_focus_<kind>.ms_deform_attn``, building it on first use.

    Raises:
        KernelUnavailableError: it cannot be built here (the same error on every call).
    """
    st = _STATES[kind]
    if st.op is not None:
        return st.op
    with _LOCK:
        if st.op is None and st.error is None:
            if (reason := unavailable_reason(kind)) is not None:
                st.error = KernelUnavailableError(kind, reason, None)
            else:
                start = time.perf_counter()
                try:
                    st.op = _compile(kind)
                    st.build_seconds = time.perf_counter() - start
                except Exception as exc:
                    log = _log_path(kind)
                    first = (str(exc).strip().splitlines() or [""])[0][:200]
                    st.error = KernelUnavailableError(
                        kind,
                        f"the build failed ({type(exc).__name__}: {first})",
                        log if log.exists() else None,
                    )
        if st.error is not None:
            raise st.error
        assert st.op is not None
        return st.op


def is_cached(kind: str) -> bool:
    """Whether a built library for ``kind`` is already in the cache (no build, no import)."""
    directory = build_directory(kind)
    suffix = ".pyd" if sys.platform == "win32" else ".so"
    return (directory / f"{extension_name(kind)}{suffix}").exists()
