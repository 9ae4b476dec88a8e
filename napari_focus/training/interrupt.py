"""Stopping a training run soon after a cancel, and never inside a weight update.

A training step of FOCUS-L takes about 50 CPU-seconds, a validation pass as long again:
waiting for the step to end, let alone for the evaluation after it, makes Cancel (or
closing napari) take a minute. :func:`watch_step` checks the run's
:class:`~napari_focus.run_control.RunControl` before every stage of the forward pass
(:func:`~napari_focus.run_control.watch_model`) and before the gradient of every stage's
output in the backward pass, so :class:`~napari_focus.run_control.Cancelled` is raised
within one stage. The optimizer update itself is never interrupted: the loop checks
before it and then runs it to the end, so the weights and the optimizer state are
always those of the last completed step, which is what the resume state saves.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..run_control import RunControl, stage_modules, watch_model


class StepWatch:
    """What :func:`watch_step` yields: call :meth:`backward_begins` before ``backward()``."""

    def __init__(self) -> None:
        self.forward = True

    def backward_begins(self) -> None:
        # stages run again inside backward (gradient checkpointing) mark nothing new
        self.forward = False


@contextmanager
def watch_step(model: nn.Module, control: RunControl) -> Iterator[StepWatch]:
    """Inside the block, a cancel raises ``Cancelled`` before the next stage of ``model``
    runs forward, and before the backward pass reaches the next stage's output."""
    thread = threading.get_ident()
    watch = StepWatch()

    def check_gradient(_gradient: torch.Tensor) -> None:
        control.check()  # raised through backward() to its caller, type kept

    def mark_output(_module: nn.Module, _inputs: object, output: object) -> None:
        if not watch.forward or threading.get_ident() != thread:
            return
        tensor = _first_grad_tensor(output)
        if tensor is not None:
            tensor.register_hook(check_gradient)

    handles = [module.register_forward_hook(mark_output) for module in stage_modules(model)]
    try:
        with watch_model(model, control):
            yield watch
    finally:
        for handle in handles:
            handle.remove()


def _first_grad_tensor(output: object) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output if output.requires_grad else None
    if isinstance(output, tuple | list):
        for item in output:
            found = _first_grad_tensor(item)
            if found is not None:
                return found
    return None
