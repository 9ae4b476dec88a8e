"""Opening series images without decoding them on the GUI thread, quick Next/Previous
clicks, and Cancel while a model loads (real napari viewer under Xvfb)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

from napari_focus.gui import job as job_module  # noqa: E402
from napari_focus.gui.series_layers import SERIES_KEY, series_layer  # noqa: E402
from napari_focus.gui.series_opening import INLINE_READ_PIXELS  # noqa: E402
from napari_focus.series import images as images_module  # noqa: E402

WAIT_MS = 120_000
SIZE = (900, 1300)  # 1.2 MP: above what is decoded at once on the GUI thread


@pytest.fixture
def large_folder(tmp_path, focus_reference):
    """Five RGB JPEGs of 1.2 MP, each with other pixels."""
    assert SIZE[0] * SIZE[1] > INLINE_READ_PIXELS
    source = Image.open(focus_reference / "input.png").convert("RGB")
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        image = source.rotate(72 * i).resize(SIZE[::-1])
        image.save(folder / f"img{i}.jpg", quality=90)
    return folder


@pytest.fixture
def decoded_on(monkeypatch) -> dict[str, list[str]]:
    """Which thread decodes each file (name -> thread names), through the one reader
    every series read goes through; ``slow`` names files whose decoding takes 0.6 s."""
    seen: dict[str, list[str]] = {}
    original = images_module.read_image

    def recording(path, **kwargs):
        seen.setdefault(path.name, []).append(threading.current_thread().name)
        if path.name in recording.slow:
            threading.Event().wait(0.6)
        return original(path, **kwargs)

    recording.slow = set()
    monkeypatch.setattr(images_module, "read_image", recording)
    seen["__slow__"] = recording.slow  # type: ignore[assignment]
    return seen


def _pixels(folder, name):
    with Image.open(folder / name) as image:  # not through the recorded reader
        return np.asarray(image.convert("RGB"))


def _on_screen(viewer):
    image = series_layer(viewer, "image")
    return image.metadata.get(SERIES_KEY), np.asarray(image.data)


def test_first_image_is_decoded_by_a_worker(
    qtbot, open_series, open_focus_widget, large_folder, decoded_on
):
    viewer, widget = open_focus_widget()
    series = widget.series
    series.prefetch.value = False
    open_series(series, large_folder)  # the series is loaded; its first file is read next
    assert series.opening == "img0.jpg" or series.shown_key == "img0.jpg"  # a loaded CPU
    qtbot.waitUntil(lambda: series.shown_key == "img0.jpg", timeout=WAIT_MS)
    key, data = _on_screen(viewer)
    assert key == "img0.jpg"
    np.testing.assert_array_equal(data, _pixels(large_folder, "img0.jpg"))
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    main = threading.main_thread().name
    assert len(decoded_on["img0.jpg"]) == 1  # read once: the proposal used those pixels
    assert decoded_on["img0.jpg"][0] != main
    assert "img1.jpg" in series.decoded  # what Next shows is read ahead
    series.next()  # shown at once, from the pixels read ahead
    assert series.shown_key == "img1.jpg"
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    series.previous()  # the previous image is kept too
    assert series.shown_key == "img0.jpg"
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert all(main not in threads for name, threads in decoded_on.items() if name != "__slow__")


def test_quick_clicks_land_on_the_right_image(
    qtbot, shown_series, large_folder, decoded_on
):
    """Next, Next, Previous, Next, Next clicked faster than the files decode (img1 slow):
    a read that arrives after the user moved on is never shown, the edits of img0 are
    kept for img0, and the image on screen ends as the queue's current one."""
    viewer, _widget, series = shown_series(large_folder)
    labels = series_layer(viewer, "labels")
    labels.paint((30, 30), 1)
    edited = np.asarray(labels.data).copy()
    series.decoded.clear()  # nothing read ahead: every click opens through the worker
    decoded_on["__slow__"].add("img1.jpg")
    shown_when: list[tuple[str, str, bool]] = []  # (shown, current, its own pixels)
    display = series._display

    def recording(item, image):
        own = np.array_equal(image, _pixels(large_folder, item.key))
        shown_when.append((item.key, series.state.queue.current.key, own))
        display(item, image)

    series._display = recording
    series.next_button.native.click()  # img1, slow
    assert series.opening == "img1.jpg" and not labels.editable  # img0's mask is locked
    series.next_button.native.click()  # img2 while img1 is still being read
    series.previous_button.native.click()  # back to img1
    series.next_button.native.click()
    series.next_button.native.click()  # img3
    qtbot.waitUntil(lambda: series.shown_key == "img3.jpg", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    assert series.shown_key == series.state.queue.current.key == "img3.jpg"
    assert shown_when and all(shown == current and own for shown, current, own in shown_when)
    key, data = _on_screen(viewer)
    assert key == "img3.jpg"
    np.testing.assert_array_equal(data, _pixels(large_folder, "img3.jpg"))
    labels = series_layer(viewer, "labels")
    assert labels.metadata[SERIES_KEY] == "img3.jpg" and labels.editable
    assert "img3" in series.position.value
    np.testing.assert_array_equal(series.state.load_autosaved("img0.jpg"), edited > 0)
    series.jump_to.value = 1  # back to img0: its edits, not another image's
    qtbot.waitUntil(lambda: series.shown_key == "img0.jpg", timeout=WAIT_MS)
    np.testing.assert_array_equal(series_layer(viewer, "labels").data > 0, edited > 0)
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)


@pytest.fixture
def held_load(monkeypatch):
    """The real checkpoint load, held at its start until ``release`` is set (a 1-GB
    read takes that long); ``loads`` counts the loads that ran."""
    release, started = threading.Event(), threading.Event()
    loads: list[str] = []
    original = job_module.load_predictor

    def held(key, *args):
        started.set()
        release.wait(60)
        loads.append(threading.current_thread().name)
        return original(key, *args)

    monkeypatch.setattr(job_module, "load_predictor", held)
    return release, started, loads


def _model_kept(widget) -> bool:
    shared = widget.model_section.shared_model
    return shared._predictor is not None or widget.current_model()[1] is not None


def test_cancel_while_run_loads_the_model(qtbot, open_focus_widget, held_load):
    release, started, loads = held_load
    viewer, widget = open_focus_widget()
    viewer.add_image(np.zeros((48, 64), np.uint8) + 100, name="gray")
    widget.run()
    qtbot.waitUntil(started.is_set, timeout=WAIT_MS)
    assert widget.running and widget.cancel_button.enabled
    widget.cancel_button.native.click()
    # free at once, while the read goes on
    assert not widget.running and widget.run_button.enabled
    assert not widget.cancel_button.enabled and widget.status.value.startswith("cancelled")
    release.set()
    shared = widget.model_section.shared_model
    qtbot.waitUntil(lambda: len(loads) == 1 and not shared.loading, timeout=WAIT_MS)
    qtbot.wait(100)  # what the job still reports arrives (and is not taken)
    assert not _model_kept(widget)
    assert "gray [FOCUS SOD]" not in viewer.layers
    assert widget.status.value.startswith("cancelled")
    widget.run()  # the user goes on: a new load, then the proposal
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert "gray [FOCUS SOD]" in viewer.layers and len(loads) == 2


def test_cancel_stops_the_read_of_the_weights(qtbot, open_focus_widget, monkeypatch):
    """A slow disk (each tensor takes 20 ms to read, 18 s for the tiny checkpoint): after
    Cancel the read stops at the next tensor, and the next Run does not wait for it."""
    from napari_focus import checkpoint_fit

    read_at: list[float] = []
    check_finite = checkpoint_fit.check_finite

    def slow_read(state, source):
        time.sleep(0.02)
        read_at.append(time.perf_counter())
        return check_finite(state, source)

    monkeypatch.setattr(checkpoint_fit, "check_finite", slow_read)
    viewer, widget = open_focus_widget()
    viewer.add_image(np.zeros((48, 64), np.uint8) + 100, name="gray")
    widget.run()
    qtbot.waitUntil(lambda: len(read_at) >= 10, timeout=WAIT_MS)
    widget.cancel_button.native.click()
    pressed = time.perf_counter()
    shared = widget.model_section.shared_model
    qtbot.waitUntil(lambda: not shared.loading, timeout=WAIT_MS)
    assert sum(t > pressed for t in read_at) <= 1  # the tensor being read, no more
    assert not _model_kept(widget)


def test_run_again_after_cancel_waits_for_the_same_load(qtbot, open_focus_widget, held_load):
    """Cancel, then Run again while the first read goes on: the second Run gets that
    model (one load in all), the first reports nothing."""
    release, started, loads = held_load
    viewer, widget = open_focus_widget()
    viewer.add_image(np.zeros((48, 64), np.uint8) + 100, name="gray")
    widget.run()
    qtbot.waitUntil(started.is_set, timeout=WAIT_MS)
    widget.cancel()
    widget.run()
    assert widget.running
    shared, key = widget.model_section.shared_model, widget.model_key()
    qtbot.waitUntil(lambda: shared.waiting(key) == 1, timeout=WAIT_MS)  # the new Run asks
    release.set()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert "gray [FOCUS SOD]" in viewer.layers and len(loads) == 1
    assert widget.status.value.startswith("proposed")


def test_cancel_while_the_series_loads_the_model(
    qtbot, open_series, open_focus_widget, held_load, large_folder
):
    release, started, loads = held_load
    _viewer, widget = open_focus_widget()
    series = widget.series
    open_series(series, large_folder)
    qtbot.waitUntil(started.is_set, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: series.shown_key == "img0.jpg", timeout=WAIT_MS)
    assert widget.cancel_button.enabled and not widget.running
    widget.cancel_button.native.click()
    assert not widget.cancel_button.enabled and "cancelled loading" in widget.status.value
    series.next()  # the user goes on at once; no proposal is computed meanwhile
    qtbot.waitUntil(lambda: series.shown_key == "img1.jpg", timeout=WAIT_MS)
    release.set()
    shared = widget.model_section.shared_model
    qtbot.waitUntil(lambda: len(loads) == 1 and not shared.loading, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not series.prefetcher.busy, timeout=WAIT_MS)
    assert not _model_kept(widget) and len(series.cache) == 0
    assert not series.proposal_ready and len(loads) == 1
    widget.run()  # Run loads the model; the series' proposals follow it
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    series.next()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert series.shown_key == "img2.jpg" and len(loads) == 2


def test_a_series_says_when_its_first_proposal_compiles_the_kernel(
    qtbot, open_series, open_focus_widget, slow_first_build, tmp_path
):
    """Opening a folder on a machine that has never compiled the deformable-attention
    kernel: the first proposal takes a minute or two longer, and the status says why."""
    from napari_focus.ops.build import BUILD_STARTED

    release, started, _ = slow_first_build
    rng = np.random.default_rng(5)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / name)
    _viewer, widget = open_focus_widget()
    widget.series.prefetch.value = False
    open_series(widget.series, tmp_path)
    qtbot.waitUntil(started.is_set, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: BUILD_STARTED in widget.status.value, timeout=WAIT_MS)
    assert widget.status.value.startswith("computing the proposal of a: first compiling")
    release.set()
    qtbot.waitUntil(lambda: widget.series.proposal_ready, timeout=WAIT_MS)
    assert BUILD_STARTED not in widget.status.value

