"""A series in napari when the annotator changes what is open: another folder, other
model settings, a model that failed; the folder fields say what is open; nothing slow
(reading and hashing image files) on the GUI thread (under Xvfb)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

from napari_focus.predictor import FocusPredictor  # noqa: E402

WAIT_MS = 120_000


def _folder(root, name, source, flip=False, count=3):
    folder = root / name
    folder.mkdir()
    for i in range(count):
        crop = np.asarray(source.crop((i * 20, 0, i * 20 + 96, 64)))
        Image.fromarray(crop[::-1] if flip else crop).save(folder / f"img{i}.png")
    return folder


@pytest.fixture
def source(focus_reference):
    return Image.open(focus_reference / "input.png").convert("RGB")


def _shown_image(viewer):
    from napari_focus.gui.series_layers import series_layer

    return np.asarray(series_layer(viewer, "image").data)


def test_folder_fields_show_the_open_folder(qtbot, open_series, open_focus_widget, tmp_path, source,
                                            monkeypatch):  # fmt: skip
    folder = _folder(tmp_path, "photos of day 2", source)
    monkeypatch.chdir(tmp_path)
    _viewer, widget = open_focus_widget()
    window = widget.native.window()
    window.show()
    window.resize(1366, 768)
    widget.show_section("Series")
    series = widget.series
    series.folder.value = folder.name  # as `napari-focus annotate FOLDER` sets it
    open_series(series, folder.name)
    qtbot.waitUntil(lambda: series.proposal_ready, timeout=WAIT_MS)
    qtbot.wait(100)
    edit = series.folder.line_edit.native
    assert edit.text() == str(folder.resolve())
    assert str(folder.resolve()) in edit.toolTip()  # the whole path, however narrow
    # the path, not the button, gets the row: the folder's own name is readable
    assert edit.width() > 2 * series.folder.choose_btn.native.width()
    shown = edit.fontMetrics().horizontalAdvance(folder.name)
    assert edit.width() >= shown and edit.cursorPosition() == len(edit.text())
    assert series.output.line_edit.native.placeholderText() == str(
        folder.resolve() / "napari_focus"
    )
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)


def test_another_folder_keeps_the_edits_and_shows_its_own_pixels(
    qtbot, open_series, open_focus_widget, tmp_path, source
):
    first = _folder(tmp_path, "first", source)
    second = _folder(tmp_path, "second", source, flip=True)  # same file names
    viewer, widget = open_focus_widget()
    series = widget.series
    open_series(series, first)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert "img1.png" in series.decoded  # read ahead by the worker
    labels = viewer.layers.selection.active
    labels.paint((30, 40), 1)
    labels.paint((10, 10), 0)
    edited = np.asarray(labels.data).copy()

    open_series(series, second)  # the edits of first/img0 are kept before the folder changes
    assert (first / "napari_focus" / "work").is_dir()
    series.next()  # at once: img1.png of the second folder, not the one read ahead
    np.testing.assert_array_equal(
        _shown_image(viewer), np.asarray(Image.open(second / "img1.png"))
    )
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert series.state.queue.item("img1.png").status.value == "proposed"

    open_series(series, first)
    qtbot.waitUntil(lambda: series.proposal_ready, timeout=WAIT_MS)
    assert series.shown_key == "img0.png"
    np.testing.assert_array_equal(np.asarray(viewer.layers.selection.active.data) > 0,
                                  edited > 0)  # fmt: skip
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)


def test_a_shorter_folder_opens_at_its_first_image(
    qtbot, open_series, open_focus_widget, tmp_path, source
):
    """At image 3 of 4, a never-opened folder of 2 images opens at its first, not at
    its last (the number of the image left is no jump in the new folder)."""
    first = _folder(tmp_path, "first", source, count=4)
    second = _folder(tmp_path, "second", source, flip=True, count=2)
    _viewer, widget = open_focus_widget()
    series = widget.series
    series.prefetch.value = False
    open_series(series, first)
    for _ in range(2):
        qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
        series.next()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert series.shown_key == "img2.png" and series.jump_to.value == 3
    open_series(series, second)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert series.shown_key == "img0.png" and series.jump_to.value == 1
    assert series.state.queue.index == 0


def test_new_model_settings_compute_the_waiting_proposal(
    qtbot, open_series, open_focus_widget, tmp_path, source, tiny_checkpoint, monkeypatch
):
    from napari_focus.gui import series_section

    errors: list[str] = []
    monkeypatch.setattr(series_section, "show_error", errors.append)
    folder = _folder(tmp_path, "images", source)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    viewer, widget = open_focus_widget()
    widget.weights_path.value = broken
    series = widget.series
    open_series(series, folder)
    qtbot.waitUntil(lambda: bool(errors) and not series.busy, timeout=WAIT_MS)
    assert not series.proposal_ready
    widget.weights_path.value = tiny_checkpoint  # no other click: the proposal comes
    qtbot.waitUntil(lambda: series.proposal_ready, timeout=WAIT_MS)
    assert viewer.layers["img0 [FOCUS SOD]"].data.shape == (64, 96)
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)


def test_weights_not_downloaded_are_said_once_with_what_to_do(
    qtbot, open_series, open_focus_widget, tmp_path, source, tiny_checkpoint, monkeypatch
):
    """Official weights, not in the cache, the hub out of reach: the error leads with what
    to do; Next and Previous do not try (and say) it again; choosing a file computes."""
    from huggingface_hub import constants
    from test_download import _hub_env

    from napari_focus.gui import series_section

    _hub_env(monkeypatch, "http://127.0.0.1:9", offline=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    errors: list[str] = []
    monkeypatch.setattr(series_section, "show_error", errors.append)
    folder = _folder(tmp_path, "images", source)
    viewer, widget = open_focus_widget()
    widget.weights_source.value = "official"
    series = widget.series
    open_series(series, folder)
    qtbot.waitUntil(lambda: bool(errors) and not series.busy, timeout=WAIT_MS)
    assert errors[0].startswith(
        "FOCUS series: no weights: focus_large_sod.pth is not downloaded and HF_HUB_OFFLINE is "
        "set. Choose 'local checkpoint' in the Model tab and pick focus_large_sod.pth, or "
        "press Run once the hub can be reached"
    )
    series.next()
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    series.next()
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    assert len(errors) == 1 and not series.proposal_ready
    assert widget.status.value.startswith("no proposal for img2: the model could not be loaded")
    widget.weights_source.value = "file"  # the tiny checkpoint: the proposal comes
    qtbot.waitUntil(lambda: series.proposal_ready, timeout=WAIT_MS)
    assert viewer.layers["img2 [FOCUS SOD]"].data.shape == (64, 96)
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    assert len(errors) == 1


def test_a_proposal_is_never_shown_for_another_model(
    qtbot, open_series, open_focus_widget, tmp_path, source, monkeypatch
):
    """The task changes while the worker computes ahead with the old model: what the old
    model still finishes is not shown (nor kept) as a proposal of the new one."""
    calls: list[tuple[str, bytes]] = []  # (task of the predictor, image)
    original = FocusPredictor.predict
    started = threading.Event()

    def slow(self, image, **kwargs):
        started.set()
        threading.Event().wait(0.5)  # long enough to switch models meanwhile
        calls.append((self.task, np.asarray(image).tobytes()))
        return original(self, image, **kwargs)

    monkeypatch.setattr(FocusPredictor, "predict", slow)
    folder = _folder(tmp_path, "images", source)
    _viewer, widget = open_focus_widget()
    series = widget.series
    open_series(series, folder)
    qtbot.waitUntil(lambda: series.proposal_ready, timeout=WAIT_MS)
    started.clear()
    qtbot.waitUntil(started.is_set, timeout=WAIT_MS)  # img1 is being computed (SOD)
    widget.task.value = "cod"
    series.next()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    img1 = np.asarray(Image.open(folder / "img1.png")).tobytes()
    assert ("cod", img1) in calls  # what is shown was computed by the COD model
    assert series.shown_key == "img1.png" and "img1 [FOCUS COD]" in _viewer.layers
    assert widget.current_model()[0].task == "cod"


def test_a_proposal_computed_before_a_task_switch_keeps_its_task(
    qtbot, open_series, open_focus_widget, tmp_path, source
):
    """SOD proposals computed ahead, the task switched to SD for one image and back: the
    next image shows its stored SOD proposal as the one mask layer, named and described
    as SOD (not after the SD model still loaded), and Accept exports what was painted
    on it."""
    from napari_focus.gui.series_layers import series_layer

    folder = _folder(tmp_path, "images", source, count=4)
    viewer, widget = open_focus_widget()
    series = widget.series
    widget.export_section.dataset_root.value = tmp_path / "dataset"
    widget.export_section.dataset_layout.value = "generic"
    open_series(series, folder)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert series.prefetcher.store.has("img2.png")  # computed ahead by the SOD model
    widget.task.value = "sd"
    series.next()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert widget.current_model()[0].task == "sd"
    widget.task.value = "sod"
    series.next()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    masks = [layer.name for layer in viewer.layers if "[FOCUS" in layer.name]
    assert masks == ["img2 [FOCUS SOD]", "img2 [FOCUS SOD] probability"]
    labels = series_layer(viewer, "labels")
    assert labels is viewer.layers["img2 [FOCUS SOD]"]
    assert labels.metadata["napari_focus"]["task"] == "sod"
    painted = np.zeros(labels.data.shape, dtype=labels.data.dtype)
    painted[5:25, 10:40] = 1
    labels.data = painted
    series.accept()
    exported = tmp_path / "dataset" / "masks" / "img2.png"
    qtbot.waitUntil(exported.exists, timeout=WAIT_MS)
    assert (np.asarray(Image.open(exported)) > 0).sum() == 20 * 30


def test_a_proposal_arriving_while_the_weights_path_is_typed_is_shown(
    qtbot, open_series, open_focus_widget, tmp_path, source, monkeypatch
):
    """The checkpoint field names no file for a moment (being typed, or the file moved)
    when the shown image's proposal arrives: it is shown, described by its model."""
    original = FocusPredictor.predict
    started, go = threading.Event(), threading.Event()

    def held(self, image, **kwargs):
        started.set()
        go.wait(30)
        return original(self, image, **kwargs)

    monkeypatch.setattr(FocusPredictor, "predict", held)
    folder = _folder(tmp_path, "images", source)
    viewer, widget = open_focus_widget()
    series = widget.series
    series.prefetch.value = False
    open_series(series, folder)
    qtbot.waitUntil(started.is_set, timeout=WAIT_MS)
    widget.weights_path.value = tmp_path / "focus_la"  # half typed
    go.set()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert "img0 [FOCUS SOD]" in viewer.layers
    assert viewer.layers["img0 [FOCUS SOD]"].metadata["napari_focus"]["task"] == "sod"


def test_the_gui_thread_never_hashes_an_image_file(
    qtbot, open_series, open_focus_widget, tmp_path, source, monkeypatch
):
    """Marking, autosaving and accepting reuse the fingerprint the worker computed when
    it read the file; the GUI thread only compares size and modification time."""
    from napari_focus.gui import series_jobs
    from napari_focus.series import state as state_module

    hashed_on: list[str] = []

    def recording(original):
        def fingerprint(path, known=None):
            result = original(path, known)
            if result is not known:  # the file was read and hashed
                hashed_on.append(threading.current_thread().name)
            return result

        return fingerprint

    for module in (state_module, series_jobs):
        monkeypatch.setattr(module, "file_fingerprint", recording(module.file_fingerprint))
    folder = _folder(tmp_path, "images", source)
    viewer, widget = open_focus_widget()
    widget.export_section.dataset_root.value = tmp_path / "datasets"
    widget.export_section.dataset_layout.value = "generic"
    series = widget.series
    open_series(series, folder)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    viewer.layers.selection.active.paint((20, 20), 1)
    series.next()  # img0 autosaved; img1 shown and marked proposed
    series.accept()
    qtbot.waitUntil(lambda: series.shown_key == "img2.png", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not series.busy and not series.quality_pending, timeout=WAIT_MS)
    state = series.state
    assert state.queue.item("img0.png").autosaved
    assert state.queue.item("img1.png").status.value == "accepted"
    assert all(item.fingerprint for item in state.queue)
    assert hashed_on and threading.main_thread().name not in hashed_on


def test_closing_napari_waits_for_the_cancelled_proposal(
    qtbot, open_series, open_focus_widget, tmp_path, source, monkeypatch
):
    """Closing napari while a proposal is computed ahead stops the model before the
    window goes, so no worker reports to a deleted widget."""
    original = FocusPredictor.predict
    inside = threading.Event()
    left: list[bool] = []

    def slow(self, image, **kwargs):
        inside.set()
        threading.Event().wait(0.5)
        try:
            return original(self, image, **kwargs)
        finally:
            left.append(True)

    folder = _folder(tmp_path, "images", source, count=6)
    _viewer, widget = open_focus_widget()
    series = widget.series
    open_series(series, folder)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    monkeypatch.setattr(FocusPredictor, "predict", slow)
    series.next()  # img3 is planned
    qtbot.waitUntil(inside.is_set, timeout=WAIT_MS)
    assert series.close_guard.allow_close()
    assert left  # the forward ended (cancelled) before closing went on


def test_run_on_an_image_left_since_never_lands_on_the_next_one(
    qtbot, shown_series, tmp_path, source
):
    """Run on the shown image, then Next before it returns: the series' image layer holds
    the next file's pixels, so the result is not put on that image's mask."""
    folder = _folder(tmp_path, "images", source)
    viewer, widget, series = shown_series(folder)
    series.next()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    labels = viewer.layers["img1 [FOCUS SOD]"]
    labels.data = np.zeros_like(labels.data)  # img1's mask, cleared by the annotator
    series.previous()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    widget.run()
    series.next()
    assert series.shown_key == "img1.png" and not labels.data.any()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert labels.name == "img1 [FOCUS SOD]" and not labels.data.any()
    assert widget.status.value.startswith("'img1' shows another image than FOCUS ran on")


def test_an_image_there_is_no_memory_for_fails_alone(tiny_mlp, photo_crops, monkeypatch):
    """Out of memory while reading or segmenting one image: that image fails with the
    widget's words (reading: until the series is opened again), and the next image gets
    its proposal."""
    from napari_focus.gui.job import ModelKey
    from napari_focus.gui.series_jobs import prefetch_job
    from napari_focus.run_control import RunControl
    from napari_focus.series import images as series_images
    from napari_focus.series.prefetch import JobBoard

    images = photo_crops(3)
    arch, state = tiny_mlp
    predictor = FocusPredictor.from_state_dict(state, "sod", architecture=arch, device="cpu")
    read, predict = series_images.read_image, predictor.predict

    def read_image(path, **kwargs):
        if path.name == "img0.png":
            raise MemoryError
        return read(path, **kwargs)

    def predict_once_short(image, **kwargs):
        if predictor.predict.calls == 0:
            predictor.predict.calls += 1
            raise MemoryError("cannot allocate 3 GiB")
        return predict(image, **kwargs)

    predict_once_short.calls = 0
    monkeypatch.setattr(series_images, "read_image", read_image)
    monkeypatch.setattr(predictor, "predict", predict_once_short)
    board = JobBoard()
    board.replace([(f"img{i}.png", i, images / f"img{i}.png") for i in range(3)])
    key = ModelKey("sod", "large", "tiny", "cpu")
    messages = list(prefetch_job(key, predictor, board, None, RunControl()))
    memory = ("the computer ran out of memory for this image: close other programs, or "
              "choose model size large in the Model tab, then press Run again")  # fmt: skip
    assert messages[0] == ("unusable", "img0.png", 0, "img0.png: the computer ran out of "
                           "memory reading it; close other programs, then open the series "
                           "again")  # fmt: skip
    assert messages[1] == ("failed", "img1.png", 1, memory)
    assert [m[:3] for m in messages[2:]] == [("prediction", "img2.png", 2)]
