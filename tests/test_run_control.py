"""Stages and cancellation of a model run, without napari."""

from __future__ import annotations

import threading
import time

import pytest

from napari_focus.ops import build
from napari_focus.run_control import Cancelled, RunControl, kernel_build_stage, watch_model


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


def _run_needing_the_kernel(control: RunControl, outcome: list) -> threading.Thread:
    """A worker that runs a watched model whose first step needs the CPU kernel."""
    from torch import nn

    def run() -> None:
        try:
            with kernel_build_stage(control), watch_model(nn.Linear(1, 1), control):
                outcome.append(build.load("cpu"))
        except Exception as error:
            outcome.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    return worker


def test_cancel_ends_the_wait_for_a_first_kernel_build_which_goes_on(slow_first_build):
    release, started, builder_threads = slow_first_build
    control, outcome = RunControl(), []
    worker = _run_needing_the_kernel(control, outcome)
    assert started.wait(30)
    assert control.snapshot()[0] == build.BUILD_STARTED  # said by the build's own thread
    control.cancel()
    worker.join(30)
    assert not worker.is_alive() and not release.is_set()  # the compiler is still at work
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled)
    assert builder_threads[0] is not worker

    release.set()
    builder_threads[0].join(30)
    assert build.load("cpu") is not None  # built once, kept for the next run
    assert len(builder_threads) == 1


def test_the_next_run_joins_the_build_under_way(slow_first_build):
    release, started, builder_threads = slow_first_build
    first, first_outcome = RunControl(), []
    first_worker = _run_needing_the_kernel(first, first_outcome)
    assert started.wait(30)
    first.cancel()
    first_worker.join(30)

    second, outcome = RunControl(), []
    second.set_stage("segmenting")
    worker = _run_needing_the_kernel(second, outcome)
    for _ in range(3000):  # the joining run shows the build as its stage
        if second.snapshot()[0] == build.BUILD_STARTED:
            break
        assert worker.is_alive(), outcome
        time.sleep(0.01)
    assert second.snapshot()[0] == build.BUILD_STARTED
    release.set()
    worker.join(30)
    assert outcome and callable(outcome[0]) and len(builder_threads) == 1
    assert second.snapshot()[0] == "segmenting"  # back to its stage once built


def test_without_a_watched_run_the_kernel_builds_in_the_calling_thread(slow_first_build):
    """The command line has no Cancel button: its first build runs where it is needed."""
    release, _, builder_threads = slow_first_build
    release.set()
    assert callable(build.load("cpu"))
    assert builder_threads == [threading.current_thread()]
