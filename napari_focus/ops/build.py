"""Just-in-time build, caching and self-check of the compiled deformable-attention kernels.

The C++/CUDA sources ship with the package (``napari_focus._paths.bundled_dir("ops")``)
and are compiled with ``torch.utils.cpp_extension`` (ninja) on first use into a
per-user cache, one folder per build configuration::

    $NAPARI_FOCUS_CACHE/ops/torch-2.13.0-cpu/napari_focus_msda_cpu-native-cf269088-1a2b3c4d/
    ~/.cache/napari-focus/ops/torch-2.13.0-cu128/napari_focus_msda_cuda-sm90-5e6f7a8b/

The last part of a folder's name is a hash of everything the build depends on:
the sources' contents, the compile flags, the compiler versions, the torch
version and the GPU architectures. A finished folder is never rebuilt: a
process that finds its library there loads it directly, so processes using
different source paths, compilers or flags can share one cache without
rebuilding each other's kernels. Builders of one folder wait for each other
(a file lock).

The CPU kernel is compiled with ``-march=native`` on Linux (its folder names a
hash of the CPU's instruction set); the CUDA one for ``TORCH_CUDA_ARCH_LIST``
when set, else the visible GPUs, restricted to what the toolkit supports.
``NAPARI_FOCUS_KERNEL_CFLAGS`` adds compiler flags to both.

Every kernel that loads is first run on a small case against the PyTorch
reference (:mod:`napari_focus.ops.selfcheck`); one that fails to run or
computes wrong values is treated like one that cannot be built, and so is one
whose C++ errors would kill the process (:mod:`napari_focus.ops.error_check`,
once per build). A failure is remembered for the
rest of the process and never retried.

Announcements: the logger ``napari_focus.ops.build`` says at INFO level when a
build starts (the message starts with :data:`BUILD_STARTED`), ends or fails,
and when a kernel fails its self-check. Each record carries ``kernel_event``
(``"build-started"``, ``"build-joined"``, ``"build-finished"``, ``"build-failed"``,
``"self-check-failed"``), ``kernel_kind`` (``"cpu"``/``"cuda"``) and
``kernel_waiters`` (the threads waiting for that build) attributes, so a GUI can
show them in its status line with a :class:`logging.Handler`.

Inside :func:`cancellable_waits`, a thread that needs a kernel not yet loaded has
it built (or loaded from the cache) by a thread of its own and waits for it,
calling a check that may raise: a user's Cancel then ends the wait within a
fraction of a second instead of a minute or two of compiling, and the build goes
on to its end, so the next run finds the kernel ready.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import filelock
from ..atomic import atomic_write_text
from . import error_check, selfcheck, toolchain
from .build_identity import (
    SOURCES,
    build_directory,
    build_key,
    cache_problem,
    cache_root,
    compile_flags,
    cuda_archs,
    extension_name,
    library_path,
    log_path,
    source_files,
)
from .compile_support import register_fake

__all__ = [
    "BUILD_STARTED",
    "KINDS",
    "KernelState",
    "KernelUnavailableError",
    "build_directory",
    "cache_root",
    "is_cached",
    "load",
    "logger",
    "state",
    "unavailable_reason",
]

KINDS = ("cpu", "cuda")
BUILD_STARTED = "compiling the deformable-attention kernel (once)"
logger = logging.getLogger(__name__)

_DONE_MARKER = "build.ok"


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

    def __reduce__(self) -> tuple:  # survives pickling (worker processes)
        return (type(self), (self.kind, self.reason, self.log_path))


@dataclass
class KernelState:
    """What this process knows about one kernel."""

    kind: str
    op: Callable[..., torch.Tensor] | None = None
    error: KernelUnavailableError | None = None
    build_seconds: float | None = None
    built_now: bool = False
    self_check: str | None = None
    warned: bool = False
    compiling: bool = False
    waiters: set[int] = field(default_factory=set)  # threads waiting for a background build


_STATES = {kind: KernelState(kind) for kind in KINDS}
_LOCK = threading.Lock()
_BACKGROUND_LOCK = threading.Lock()
_BACKGROUND: dict[str, threading.Event] = {}  # kind -> set once its background build ended
_WAITS = threading.local()
_WAIT_POLL_S = 0.05
_BUILD_WAIT_S = 3600.0  # for another process's build of the same kernel


def state(kind: str) -> KernelState:
    return _STATES[kind]


@contextlib.contextmanager
def _build_environment(kind: str) -> Iterator[None]:
    # torch's cpp_extension.load reads PATH and TORCH_CUDA_ARCH_LIST from os.environ only,
    # so the build (one at a time, under _LOCK) sets them there; a process another thread
    # starts meanwhile finds ninja on its PATH too, which is harmless
    saved = {key: os.environ.get(key) for key in ("PATH", "TORCH_CUDA_ARCH_LIST")}
    if ninja_dir := toolchain.ninja_dir():
        os.environ["PATH"] = ninja_dir + os.pathsep + os.environ.get("PATH", "")
    if kind == "cuda":
        os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(cuda_archs())
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


def _announce(
    kind: str,
    event: str,
    message: str,
    level: int = logging.INFO,
    waiters: frozenset[int] | None = None,
) -> None:
    if waiters is None:
        with _BACKGROUND_LOCK:
            waiters = frozenset(_STATES[kind].waiters)
    extra = {"kernel_event": event, "kernel_kind": kind, "kernel_waiters": waiters}
    logger.log(level, message, extra=extra)


def _compile(kind: str) -> tuple[Callable[..., torch.Tensor], bool]:
    """The kernel's op, and whether it was compiled now (else loaded from the cache)."""
    cpp_extension = toolchain.cpp_extension()
    build_dir = build_directory(kind)
    build_dir.mkdir(parents=True, exist_ok=True)
    library, log = library_path(kind), log_path(kind)
    built_now = False
    with filelock.held(build_dir.parent / f"{build_dir.name}.lock", timeout=_BUILD_WAIT_S):
        if (build_dir / _DONE_MARKER).exists() and library.exists():
            torch.ops.load_library(str(library))
        else:
            built_now = _STATES[kind].compiling = True
            _announce(kind, "build-started", f"{BUILD_STARTED}: {kind.upper()}, into {build_dir}")
            # the sources are copied into the folder, so its build.ninja never changes
            source_dir = build_dir / "src"
            source_dir.mkdir(exist_ok=True)
            for path in source_files(kind):
                shutil.copyfile(path, source_dir / path.name)
            # torch's own lock file survives a build that was killed, and then
            # makes every later build wait forever; all napari-focus builders hold
            # the lock above, so a leftover one here is stale.
            (build_dir / "lock").unlink(missing_ok=True)
            with warnings.catch_warnings(record=True) as caught, _build_environment(kind):
                warnings.simplefilter("always")
                try:
                    cpp_extension.load(
                        name=extension_name(kind),
                        sources=[str(source_dir / name) for name in SOURCES[kind]],
                        build_directory=str(build_dir),
                        with_cuda=kind == "cuda",
                        is_python_module=False,
                        verbose=False,
                        **compile_flags(kind),
                    )
                except Exception as exc:
                    failure = f"{exc}\n\n{traceback.format_exc()}"
                    atomic_write_text(log, _warning_lines(caught) + failure)
                    raise
                atomic_write_text(log, _warning_lines(caught) + "build succeeded\n")
            atomic_write_text(build_dir / _DONE_MARKER, json.dumps({"key": build_key(kind)}))
        problem = error_check.recorded_check(
            build_dir / _DONE_MARKER, library, f"napari_focus_{kind}"
        )
    if problem is not None:
        raise _ErrorsDoNotReachPython(problem)
    register_fake(kind)
    return getattr(torch.ops, f"napari_focus_{kind}").ms_deform_attn, built_now


class _ErrorsDoNotReachPython(RuntimeError):
    """A kernel that built and loaded, but whose C++ exceptions would kill the process."""


def load(kind: str) -> Callable[..., torch.Tensor]:
    """Return ``torch.ops.napari_focus_<kind>.ms_deform_attn``, building it on first use
    and checking it against the PyTorch reference.

    Raises:
        KernelUnavailableError: it cannot be built or used here (the same error on every call).
    """
    st = _STATES[kind]
    if st.op is not None:
        return st.op
    if st.error is not None:
        raise st.error
    if torch.compiler.is_dynamo_compiling():
        # Traced, the build, the loading and the self-check cost a graph break at each
        # file, process and random-number call (minutes of tracing on FOCUS-L)
        return _load_untraced(st)
    return _load_now(st)


def _load_now(st: KernelState) -> Callable[..., torch.Tensor]:
    if (check := getattr(_WAITS, "check", None)) is not None:
        return _wait_for_background_build(st, check)
    _load_once(st)
    if st.error is not None:
        raise st.error
    assert st.op is not None
    return st.op


_load_untraced = torch.compiler.disable(_load_now)


@contextlib.contextmanager
def cancellable_waits(check: Callable[[], None]) -> Iterator[None]:
    """Inside the block, :func:`load` in this thread waits for a kernel being built in
    a thread of its own and calls ``check`` every few hundredths of a second meanwhile;
    whatever ``check`` raises ends the wait (the build goes on)."""
    previous = getattr(_WAITS, "check", None)
    _WAITS.check = check
    try:
        yield
    finally:
        _WAITS.check = previous


def _load_once(st: KernelState) -> None:
    """What :func:`load` does the first time, in whichever thread gets there first."""
    with _LOCK:
        if st.op is None and st.error is None:
            if (reason := unavailable_reason(st.kind)) is not None:
                st.error = KernelUnavailableError(st.kind, reason, None)
            else:
                _load_and_check(st)


def _wait_for_background_build(
    st: KernelState, check: Callable[[], None]
) -> Callable[..., torch.Tensor]:
    me = threading.get_ident()
    with _BACKGROUND_LOCK:
        ended = _BACKGROUND.get(st.kind)
        joined = ended is not None and st.compiling
        if ended is None:
            ended = _BACKGROUND[st.kind] = threading.Event()
            st.waiters.add(me)  # before the builder announces its start
            threading.Thread(
                target=_build_in_background,
                args=(st, ended),
                name=f"napari-focus {st.kind} kernel build",
                daemon=True,
            ).start()
        else:
            st.waiters.add(me)
    if joined:
        _announce(
            st.kind,
            "build-joined",
            f"{BUILD_STARTED}: {st.kind.upper()}, already under way",
            waiters=frozenset({me}),
        )
    try:
        while not ended.wait(_WAIT_POLL_S):
            check()
    finally:
        with _BACKGROUND_LOCK:
            st.waiters.discard(me)
    if st.error is not None:
        raise st.error
    assert st.op is not None
    return st.op


def _build_in_background(st: KernelState, ended: threading.Event) -> None:
    try:
        _load_once(st)
    except Exception as exc:  # a waiter must never wait forever
        st.error = KernelUnavailableError(st.kind, f"the build thread failed ({exc!r})", None)
    finally:
        ended.set()


def _load_and_check(st: KernelState) -> None:
    kind = st.kind
    start = time.perf_counter()
    try:
        try:
            op, st.built_now = _compile(kind)
        finally:
            st.compiling = False
    except _ErrorsDoNotReachPython as exc:
        st.self_check = f"failed: {exc}"
        st.error = KernelUnavailableError(kind, f"it built, but {exc}", None)
        _announce(kind, "self-check-failed", str(st.error))
        return
    except Exception as exc:
        log = log_path(kind)
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        st.error = KernelUnavailableError(
            kind,
            f"the build failed ({type(exc).__name__}: {first})",
            log if log.exists() else None,
        )
        _announce(kind, "build-failed", str(st.error))
        return
    st.build_seconds = time.perf_counter() - start
    if st.built_now:
        _announce(
            kind,
            "build-finished",
            f"the {kind.upper()} deformable-attention kernel is ready "
            f"(built in {st.build_seconds:.0f} s)",
        )
    problem = selfcheck.run(op, kind)
    if problem is not None:
        st.self_check = f"failed: {problem}"
        st.error = KernelUnavailableError(
            kind, f"it built, but its self-check failed: {problem}", None
        )
        _announce(kind, "self-check-failed", str(st.error))
        return
    st.self_check = "passed"
    st.op = op


def first_build_ahead(kind: str) -> bool:
    """Whether loading ``kind`` now would compile it: not loaded in this process, not in
    the cache, and nothing known to prevent a build (for CUDA, nvcc is asked: call it
    off the GUI thread)."""
    st = _STATES[kind]
    return st.op is None and st.error is None and not is_cached(kind) and (
        unavailable_reason(kind) is None
    )


def unavailable_reason(kind: str) -> str | None:
    """Why ``kind`` cannot be had here, found without compiling anything: the toolchain's
    reason, or, for a kernel not in the cache yet, a cache that cannot be written."""
    reason = toolchain.unavailable_reason(kind)
    return reason if reason is not None or is_cached(kind) else cache_problem(kind)


def is_cached(kind: str) -> bool:
    """Whether a finished build for ``kind`` is in the cache (no build, no import)."""
    return (build_directory(kind) / _DONE_MARKER).exists() and library_path(kind).exists()
