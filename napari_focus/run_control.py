"""Cooperative cancellation and stage reporting for long model runs (no napari, no Qt).

One FOCUS-L forward takes a minute on a laptop CPU. A caller that wants to stop it
sooner, or to say which stage is running, wraps the call::

    control = RunControl()
    with watch_model(predictor.model, control):
        predictor.predict(image)          # raises Cancelled soon after control.cancel()

:func:`watch_model` adds forward pre-hooks to the model's repeated stages (edge-prior
bottlenecks, ViT blocks, adapter injectors and extractors, pixel-decoder encoder layers,
transformer-decoder layers) and removes them on exit: the model code itself is unchanged,
and a model not being watched pays nothing. Each hook checks the cancel flag, so a
cancel takes effect within one stage (a fraction of a second to ~1 s for FOCUS-L on a
CPU). A first compile of the deformable-attention kernel inside the block runs in a
thread of its own and is waited for with the same check, so a cancel does not wait a
minute or two for the compiler (the build goes on and is kept for the next run).
Thread-safe: the run happens in a worker thread, cancel and reads come from another.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


class Cancelled(Exception):
    """The run was cancelled by the user; nothing it computed is kept."""


class RunControl:
    """A cancel flag plus the current stage and its start time; ``stop``: share the
    caller's flag (setting it cancels)."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self._stop = stop if stop is not None else threading.Event()
        self._lock = threading.Lock()
        self._stage = "starting"
        self._started = time.perf_counter()
        self._stage_started = self._started

    def cancel(self) -> None:
        self._stop.set()

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if :meth:`cancel` was called."""
        if self._stop.is_set():
            raise Cancelled("cancelled")

    def set_stage(self, stage: str) -> None:
        with self._lock:
            if stage != self._stage:
                self._stage, self._stage_started = stage, time.perf_counter()

    def snapshot(self) -> tuple[str, float, float]:
        """``(stage, seconds in this stage, seconds since the run started)``."""
        now = time.perf_counter()
        with self._lock:
            return self._stage, now - self._stage_started, now - self._started


def stage_modules(model: nn.Module) -> list[nn.Module]:
    """The repeated stages of a FOCUS model, where a cancel is checked."""
    from .model.adapter import Extractor, Injector
    from .model.edge_prior import Bottleneck
    from .model.pixel_decoder import EncoderLayer
    from .model.transformer_decoder import CrossAttentionLayer, FFNLayer, SelfAttentionLayer
    from .model.vit import Block

    kinds = (
        Bottleneck,
        Block,
        Injector,
        Extractor,
        EncoderLayer,
        SelfAttentionLayer,
        CrossAttentionLayer,
        FFNLayer,
    )
    return [module for module in model.modules() if isinstance(module, kinds)]


@contextmanager
def watch_model(model: nn.Module, control: RunControl) -> Iterator[None]:
    """Check ``control`` before every stage of ``model``, and while waiting for a kernel
    build, inside the block; after the model's forward returns, the stage becomes
    "post-processing"."""

    thread = threading.get_ident()  # another thread may run the same model meanwhile

    def check(_module: nn.Module, _inputs: object) -> None:
        if threading.get_ident() == thread:
            control.check()

    def forward_done(_module: nn.Module, _inputs: object, _output: object) -> None:
        if threading.get_ident() == thread:
            control.set_stage("post-processing")

    from .ops.build import cancellable_waits

    handles = [module.register_forward_pre_hook(check) for module in stage_modules(model)]
    handles.append(model.register_forward_hook(forward_done))
    try:
        control.check()
        with cancellable_waits(control.check):  # a first kernel build, too
            yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def kernel_build_stage(control: RunControl) -> Iterator[None]:
    """While inside the block, a first compile of the deformable-attention kernel in
    this thread becomes ``control``'s stage (it takes a minute or two, once per machine)."""
    from .ops.build import BUILD_STARTED
    from .ops.build import logger as build_logger

    thread = threading.get_ident()
    resumed: list[str] = []

    class StageHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread != thread and thread not in getattr(record, "kernel_waiters", ()):
                return
            event = getattr(record, "kernel_event", None)
            if event in ("build-started", "build-joined"):
                resumed.append(control.snapshot()[0])
                control.set_stage(BUILD_STARTED)
            elif event in ("build-finished", "build-failed") and resumed:
                control.set_stage(resumed.pop())

    handler = StageHandler(logging.INFO)
    old_level = build_logger.level
    if not build_logger.isEnabledFor(logging.INFO):
        build_logger.setLevel(logging.INFO)
    build_logger.addHandler(handler)
    try:
        yield
    finally:
        build_logger.removeHandler(handler)
        build_logger.setLevel(old_level)
