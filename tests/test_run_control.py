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
