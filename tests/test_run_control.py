"""Stages and cancellation of a model run, without napari."""

from __future__ import annotations

import threading

import pytest

from napari_focus.ops import build
from napari_focus.run_control import Cancelled, RunControl, kernel_build_stage


def test_a_first_kernel_build_is_the_stage_while_it_lasts() -> None:
    control = RunControl()
    control.set_stage("segmenting")
    with kernel_build_stage(control):
        build._announce("cpu", "build-started", f"{build.BUILD_STARTED}: CPU")
        assert control.snapshot()[0] == build.BUILD_STARTED
        build._announce("cpu", "build-finished", "compiled")
        assert control.snapshot()[0] == "segmenting"
    # outside the block, announcements no longer touch the stage
    build._announce("cpu", "build-started", f"{build.BUILD_STARTED}: CPU")
    assert control.snapshot()[0] == "segmenting"


def test_builds_announced_by_another_thread_are_not_this_runs() -> None:
    control = RunControl()
    control.set_stage("segmenting")
    with kernel_build_stage(control):
        other = threading.Thread(
            target=build._announce, args=("cpu", "build-started", build.BUILD_STARTED)
        )
        other.start()
        other.join()
        assert control.snapshot()[0] == "segmenting"


def test_cancel_raises_at_the_next_check() -> None:
    control = RunControl()
    control.check()
    control.cancel()
    with pytest.raises(Cancelled):
        control.check()


def test_a_load_stops_between_tensors_once_cancelled(tiny_checkpoint) -> None:
    """The weights of a memory-mapped checkpoint are read tensor by tensor; a load whose
    caller gave up stops at the next one (a FOCUS-G read is 4.6 GB) and keeps nothing."""
    from napari_focus import FocusPredictor

    asked: list[int] = []

    def cancelled_after_three() -> bool:
        asked.append(1)
        return len(asked) > 3

    with pytest.raises(Cancelled):
        FocusPredictor.from_checkpoint(tiny_checkpoint, cancelled=cancelled_after_three)
    assert len(asked) == 4  # no tensor read after the answer

    never: list[int] = []
    predictor = FocusPredictor.from_checkpoint(
        tiny_checkpoint, cancelled=lambda: bool(never.append(1))
    )
    assert len(never) == len(predictor.model.state_dict()) + 2  # per tensor, before, after building
