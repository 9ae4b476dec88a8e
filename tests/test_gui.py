"""The FOCUS dock widget in a real napari viewer (run under Xvfb)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from skimage.transform import resize

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

from napari_focus.gui import dialogs  # noqa: E402
from napari_focus.gui import job as job_module  # noqa: E402
from napari_focus.gui import widget as widget_module  # noqa: E402
from napari_focus.gui.samples import coffee  # noqa: E402
from napari_focus.gui.widget import FocusWidget  # noqa: E402
from napari_focus.predictor import FocusPredictor  # noqa: E402

WAIT_MS = 120_000


@pytest.fixture
def viewer_widget(open_focus_widget):
    return open_focus_widget()


@pytest.fixture
def small_coffee() -> np.ndarray:
    image = coffee()[0][0]
    return (resize(image, (60, 90), anti_aliasing=True) * 255).astype(np.uint8)


@pytest.fixture
def errors(monkeypatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(widget_module, "show_error", seen.append)
    return seen


def _run_and_wait(qtbot, widget: FocusWidget) -> None:
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)


def test_widget_comes_from_the_manifest(viewer_widget):
    _, widget = viewer_widget
    assert isinstance(widget, FocusWidget)
    assert widget.device.choices[:2] == ("auto", "cpu")


def test_image_choices_follow_layers(viewer_widget, small_coffee):
    viewer, widget = viewer_widget
    assert widget.image.value is None
    first = viewer.add_image(small_coffee, name="first")
    second = viewer.add_image(small_coffee, name="second")
    assert widget.image_choices() == ["first", "second"]
    assert widget.image.value == "second"  # the active layer
    viewer.layers.selection.active = first
    assert widget.image.value == "first"
    viewer.layers.remove(first)
    assert widget.image.value == "second"
    assert widget.selected_layer().name == second.name


def test_run_adds_labels_and_probability_without_freezing(
    qtbot, viewer_widget, small_coffee, monkeypatch
):
    viewer, widget = viewer_widget
    image = viewer.add_image(small_coffee, name="cup", scale=(2.0, 0.5), translate=(3, 4))

    from qtpy.QtCore import QTimer

    ticks: list[float] = []
    returned_at: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    original = FocusWidget._on_returned
    monkeypatch.setattr(
        FocusWidget,
        "_on_returned",
        lambda *a: returned_at.append(time.perf_counter()) or original(*a),
    )
    threads: list[threading.Thread] = []
    predict = FocusPredictor.predict
    monkeypatch.setattr(
        FocusPredictor,
        "predict",
        lambda *a, **k: threads.append(threading.current_thread()) or predict(*a, **k),
    )
    timer.start(10)
    _run_and_wait(qtbot, widget)
    timer.stop()
    # the model ran in a worker, and the event loop went on meanwhile (how long it may
    # stall is measured by benchmarks/bench_gui_stalls.py, not here)
    assert threads and threading.main_thread() not in threads
    during = [t for t in ticks if t <= returned_at[0]]
    assert len(during) > 20, "the event loop did not run while the worker ran"

    labels = viewer.layers["cup [FOCUS SOD]"]
    assert isinstance(labels, napari.layers.Labels)
    assert labels.data.shape == (60, 90) and np.issubdtype(labels.data.dtype, np.integer)
    assert set(np.unique(labels.data)) <= {0, 1}
    np.testing.assert_array_equal(labels.scale, image.scale)
    np.testing.assert_array_equal(labels.translate, image.translate)
    assert viewer.layers.selection.active is labels and labels.mode == "paint"
    prob = viewer.layers["cup [FOCUS SOD] probability"]
    assert prob.data.dtype == np.float32 and not prob.visible
    assert prob.data.min() >= 0 and prob.data.max() <= 1
    state = labels.metadata["napari_focus"]
    assert state["task"] == "sod" and state["weights"].endswith("tiny_mlp.safetensors")


def _counted_loads(monkeypatch) -> list:
    """The model keys of the loads the widget's jobs start, in order (the loads are real)."""
    loads: list = []
    original = job_module.load_predictor
    monkeypatch.setattr(
        job_module,
        "load_predictor",
        lambda key, *args: loads.append(key) or original(key, *args),
    )
    return loads


def test_model_is_reused_until_settings_change(qtbot, viewer_widget, small_coffee, monkeypatch):
    viewer, widget = viewer_widget
    viewer.add_image(small_coffee, name="cup")
    loads = _counted_loads(monkeypatch)
    _run_and_wait(qtbot, widget)
    _run_and_wait(qtbot, widget)
    assert len(loads) == 1
    widget.task.value = "cod"
    _run_and_wait(qtbot, widget)
    assert len(loads) == 2
    assert "cup [FOCUS COD]" in [layer.name for layer in viewer.layers]


def test_a_checkpoint_of_another_task_is_said_in_the_model_tab(
    qtbot, viewer_widget, small_coffee, errors
):
    """The tiny checkpoint records SOD: choosing COD says so under the checkpoint, in
    the Model tab's words, and the run gives no Python-worded warning."""
    import warnings

    from napari_focus.checkpoint_identity import TaskMismatchWarning

    viewer, widget = viewer_widget
    note = widget.model_section.task_note  # (the dock is not on screen: ask Qt)
    assert note.native.isHidden()
    widget.task.value = "cod"
    assert not note.native.isHidden()
    assert "holds SOD weights: its masks show salient objects" in note.value
    assert "Choose task SOD or another checkpoint" in note.value
    viewer.add_image(small_coffee, name="cup")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run_and_wait(qtbot, widget)
    assert not [w for w in caught if issubclass(w.category, TaskMismatchWarning)]
    assert not errors and "cup [FOCUS COD]" in [layer.name for layer in viewer.layers]
    widget.task.value = "sod"
    assert note.native.isHidden()
    widget.task.value = "cod"
    widget.weights_source.value = "official"
    assert note.native.isHidden()


def _segmenting_a_stack(qtbot, viewer, widget) -> None:
    """Run on every plane of a 6-plane stack, until the model segments the first."""
    stack = np.random.default_rng(0).integers(0, 255, (6, 48, 64), dtype=np.uint8)
    viewer.add_image(stack, name="stack")
    widget.planes.value = "all"
    widget.run()
    qtbot.waitUntil(lambda: widget.status.value.startswith("segmenting"), timeout=WAIT_MS)


def test_cancel_stops_the_worker(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    _segmenting_a_stack(qtbot, viewer, widget)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert widget.status.value == "cancelled"
    assert "stack [FOCUS SOD]" not in [layer.name for layer in viewer.layers]
    assert widget.run_button.enabled


def test_closing_napari_while_run_computes(qtbot, viewer_widget):
    """The status line's timer dies with the widget, the job stops at its next stage and
    reports to nobody (pytest-qt fails the test on an error in a Qt slot)."""
    viewer, widget = viewer_widget
    _segmenting_a_stack(qtbot, viewer, widget)
    control = widget._control
    viewer.close()
    assert control.cancelled and not widget.running
    qtbot.wait(3 * widget_module.STATUS_TICK_MS)


def test_image_closed_while_run_computes(qtbot, viewer_widget, small_coffee, errors, monkeypatch):
    """Closing the image while its proposal is computed adds no orphan mask and raises
    nothing; the model loaded for it is kept for the next Run."""
    viewer, widget = viewer_widget
    loads = _counted_loads(monkeypatch)
    cup = viewer.add_image(small_coffee, name="cup")
    widget.run()
    viewer.layers.remove(cup)
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert len(viewer.layers) == 0 and not errors
    assert widget.status.value == "'cup' was closed while FOCUS ran; no proposal added"
    viewer.add_image(small_coffee, name="cup")
    _run_and_wait(qtbot, widget)
    assert "cup [FOCUS SOD]" in [layer.name for layer in viewer.layers]
    assert len(loads) == 1


def test_bad_checkpoint_becomes_a_notification(
    qtbot, viewer_widget, small_coffee, tmp_path, errors
):
    viewer, widget = viewer_widget
    viewer.add_image(small_coffee, name="cup")
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    widget.weights_path.value = bad
    _run_and_wait(qtbot, widget)
    assert errors and "broken.pth" in errors[-1]
    assert widget.status.value.startswith("error")
    assert widget.run_button.enabled and not widget.cancel_button.enabled
    assert len(viewer.layers) == 1



def test_out_of_memory_is_said_in_the_model_tabs_words(
    qtbot, viewer_widget, small_coffee, errors, monkeypatch
):
    """A GPU out of memory (simulated: no GPU here) says what to change in the Model
    tab, not torch's page of allocator statistics."""
    import torch

    from napari_focus.predictor import FocusPredictor

    def out_of_memory(self, image, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 ...")

    viewer, widget = viewer_widget
    viewer.add_image(small_coffee, name="cup")
    monkeypatch.setattr(FocusPredictor, "predict", out_of_memory)
    _run_and_wait(qtbot, widget)
    assert errors == [
        "FOCUS: the GPU ran out of memory for this image: in the Model tab choose model size "
        "large, precision float16 or device cpu, then press Run again"
    ]
    assert widget.run_button.enabled and len(viewer.layers) == 1

def test_unsupported_layer_gets_a_message(viewer_widget, errors):
    viewer, widget = viewer_widget
    viewer.add_image(np.zeros((10, 12), np.uint8), name="speck")
    widget.run()
    assert not widget.running
    assert errors and "at least 32x32" in errors[-1]


def test_refinement_changes_mask_without_the_model(qtbot, viewer_widget, small_coffee, monkeypatch):
    viewer, widget = viewer_widget
    viewer.add_image(small_coffee, name="cup")
    _run_and_wait(qtbot, widget)
    labels = viewer.layers["cup [FOCUS SOD]"]
    state = labels.metadata["napari_focus"]

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not run for a refinement")

    monkeypatch.setattr(widget._predictor, "predict", no_model)
    refine = widget.refine_section

    def settle():
        qtbot.waitUntil(lambda: refine.idle, timeout=WAIT_MS)

    widget.official.value = False
    widget.threshold.value = 0.3
    settle()
    expected = (state["probability"] > 0.3).astype(np.uint8)
    np.testing.assert_array_equal(labels.data, expected)
    widget.threshold.value = 0.7
    settle()
    np.testing.assert_array_equal(labels.data, state["probability"] > 0.7)
    widget.official.value = True
    widget.keep_largest.value = True
    settle()
    from napari_focus.mask_ops import keep_largest_object

    np.testing.assert_array_equal(labels.data, keep_largest_object(state["official_mask"] > 0))


def test_edits_are_protected(qtbot, viewer_widget, small_coffee, monkeypatch):
    viewer, widget = viewer_widget
    viewer.add_image(small_coffee, name="cup")
    _run_and_wait(qtbot, widget)
    labels = viewer.layers["cup [FOCUS SOD]"]
    edited = labels.data.copy()
    edited[:10, :10] = 1 - edited[:10, :10]
    labels.data = edited
    questions: list[str] = []
    monkeypatch.setattr(dialogs, "ask_yes_no", lambda _, q: questions.append(q) or False)

    widget.fill_holes.value = True
    qtbot.waitUntil(lambda: widget.refine_section.idle, timeout=WAIT_MS)
    np.testing.assert_array_equal(labels.data, edited)
    assert widget.fill_holes.value is False  # the control shows what the mask is
    _run_and_wait(qtbot, widget)
    np.testing.assert_array_equal(labels.data, edited)
    assert len(questions) == 2

    monkeypatch.setattr(dialogs, "ask_yes_no", lambda _, q: True)
    _run_and_wait(qtbot, widget)
    assert not np.array_equal(labels.data, edited)


def test_stacks_run_per_plane(qtbot, viewer_widget, small_coffee, monkeypatch):
    viewer, widget = viewer_widget
    gray = small_coffee.mean(-1).astype(np.uint8)
    stack = np.stack([gray, gray[::-1], gray[:, ::-1]])
    viewer.add_image(stack, name="stack")
    assert not widget.planes.native.isHidden()  # shown for stacks
    viewer.dims.set_current_step(0, 1)
    widget.planes.value = "current"
    _run_and_wait(qtbot, widget)
    labels = viewer.layers["stack [FOCUS SOD]"]
    prob = labels.metadata["napari_focus"]["probability"]
    assert labels.data.shape == stack.shape
    assert prob[1].max() > 0 and prob[0].max() == 0 and prob[2].max() == 0

    widget.planes.value = "all"
    monkeypatch.setattr(dialogs, "ask_yes_no", lambda _, q: True)
    _run_and_wait(qtbot, widget)
    prob = labels.metadata["napari_focus"]["probability"]
    assert all(prob[i].max() > 0 for i in range(3))
    # each plane holds exactly what the model gives for that plane alone
    for i in (0, 2):
        direct = widget._predictor.predict(stack[i])
        np.testing.assert_allclose(prob[i], direct.probability, atol=1e-6)
        np.testing.assert_array_equal(
            labels.metadata["napari_focus"]["official_mask"][i], direct.mask
        )


def test_screenshots_of_each_section(qtbot, open_series, viewer_widget, tmp_path):
    """At 1366x768, every section renders inside the window. With
    NAPARI_FOCUS_SCREENSHOTS=<folder>, writes docs-style screenshots there
    (``screenshot-<section>.png``)."""
    from PIL import Image

    target = os.environ.get("NAPARI_FOCUS_SCREENSHOTS")
    viewer, widget = viewer_widget
    viewer.add_image(coffee()[0][0], name="coffee")
    _run_and_wait(qtbot, widget)
    labels = viewer.layers["coffee [FOCUS SOD]"]
    assert labels.data.shape == (400, 600)
    folder = tmp_path / "series"
    folder.mkdir()
    from napari_focus.gui.samples import astronaut, chelsea

    for name, sample in (("cat", chelsea), ("astronaut", astronaut)):
        Image.fromarray(sample()[0][0]).save(folder / f"{name}.png")
    widget.export_section.dataset_root.value = tmp_path / "datasets"
    window = widget.native.window()
    window.show()
    window.resize(1366, 768)
    for title in widget.sections:
        widget.show_section(title)
        if title == "Series":
            for layer in viewer.layers:
                layer.visible = False
            widget.series.folder.value = folder
            widget.series.prefetch.value = False
            open_series(widget.series, folder)
            qtbot.waitUntil(lambda: widget.series.proposal_ready, timeout=WAIT_MS)
        qtbot.wait(300)
        shot = viewer.screenshot(canvas_only=False, flash=False)
        assert shot.shape[0] <= 768 and shot.shape[1] <= 1366
        if target:
            Image.fromarray(shot).save(Path(target) / f"screenshot-{title.lower()}.png")
    qtbot.waitUntil(lambda: not widget.series.busy, timeout=WAIT_MS)
