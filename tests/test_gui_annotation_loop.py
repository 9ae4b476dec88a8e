"""The annotator's loop through the widget: a folder of photos of several sizes, Next and
Previous, Accept into a training split, Improve, and the messages on the way (under Xvfb)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

WAIT_MS = 120_000


@pytest.fixture
def photos(tmp_path, focus_reference):
    """Photos of three sizes, gray and colour, plus a broken file and a macOS ``._`` file."""
    source = np.array(Image.open(focus_reference / "input.png").convert("RGB"))
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(source[:128, :128]).save(folder / "a_large.png")
    Image.fromarray(source[:40, :64].mean(-1).astype(np.uint8)).save(folder / "b_small.png")
    Image.fromarray(source[:64, :96]).save(folder / "c_medium.jpg", quality=90)
    (folder / "d_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "._a_large.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    return folder


def _fits(viewer, image) -> bool:
    """The camera is centred on ``image`` and zoomed so that it fills the canvas."""
    height, width = image.data.shape[:2]
    centre = np.asarray(viewer.scene.camera.center[-2:])
    filled = np.max(np.array([height, width]) * viewer.scene.camera.zoom / viewer.canvas.size)
    return bool(np.allclose(centre, [(height - 1) / 2, (width - 1) / 2], atol=1)) and (
        0.8 < filled <= 1.0
    )



def _photos_shown(qtbot, open_series, open_focus_widget, photos, dataset_root=None):
    """napari with the widget (exports going to ``dataset_root`` when given), the photos
    open as a series, its first proposal on screen."""
    viewer, widget = open_focus_widget()
    if dataset_root is not None:
        widget.export_section.dataset_root.value = dataset_root
    series = widget.series
    open_series(series, photos)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    return viewer, widget, series

def test_each_image_fills_the_view_whatever_its_size(qtbot, open_series, open_focus_widget, photos):
    from napari_focus.gui.series_layers import series_layer

    viewer, widget = open_focus_widget()
    viewer.window.resize(1366, 768)
    series = widget.series
    open_series(series, photos)
    seen = []
    for move in (series.next, series.next, series.previous):
        qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
        image = series_layer(viewer, "image")
        seen.append(image.name)
        camera = viewer.scene.camera
        assert _fits(viewer, image), (image.name, camera.center, camera.zoom)
        move()
    assert seen == ["a_large", "b_small", "c_medium"]
    assert [i.name for i in series.state.queue] == ["a_large", "b_small", "c_medium", "d_broken"]


def test_the_ends_of_a_series_say_what_to_do(
    qtbot, open_series, open_focus_widget, photos, tmp_path, monkeypatch
):
    from napari_focus.gui import series_ends, series_section

    said: list[str] = []
    monkeypatch.setattr(series_section, "show_info", said.append)
    monkeypatch.setattr(series_ends, "show_info", said.append)
    _viewer, widget = open_focus_widget()
    widget.export_section.dataset_root.value = tmp_path / "datasets"
    series = widget.series
    open_series(series, photos)

    def settled():
        qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)

    settled()
    series.accept_button.clicked.emit()  # a_large exported, on to b_small
    qtbot.waitUntil(lambda: series.shown_key == "b_small.png", timeout=WAIT_MS)
    settled()
    series.previous_button.clicked.emit()
    assert series.shown_key == "b_small.png"
    assert said[-1] == (
        "FOCUS: no image before this one is left to annotate; 1 accepted image is passed "
        "over: tick 'visit exported images too' to see them again"
    )
    series.next_button.clicked.emit()
    settled()
    series.accept_button.clicked.emit()  # c_medium is the last image that can be shown
    qtbot.waitUntil(lambda: not widget.export_section.busy, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: len(said) >= 2, timeout=WAIT_MS)
    assert series.shown_key == "c_medium.jpg"
    assert said[-1] == (
        "FOCUS: this is the last image of the series that can be shown; 1 before it still to "
        "do (◀ Previous, or 'go to #')"
    )
    series.include_exported.value = True
    series.previous_button.clicked.emit()
    settled()
    series.previous_button.clicked.emit()
    settled()
    assert series.shown_key == "a_large.png"
    series.include_exported.value = False
    series.jump_to.value = 2
    qtbot.waitUntil(lambda: series.shown_key == "b_small.png", timeout=WAIT_MS)
    settled()
    series.accept_button.clicked.emit()  # the last one to do
    qtbot.waitUntil(lambda: not widget.export_section.busy, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: "decision" in said[-1], timeout=WAIT_MS)
    assert said[-1].endswith("; every image that can be shown has its decision")
    assert widget.status.value == "b_small is accepted"  # not "proposed" any more


def test_closing_napari_while_the_quality_line_is_computed(
    qtbot, open_series, open_focus_widget, photos, tmp_path
):
    """Accept starts the quality line in a separate process; closing napari at once must
    not raise in a worker or write into the closed widget."""
    viewer, widget = open_focus_widget()
    widget.export_section.dataset_root.value = tmp_path / "datasets"
    series = widget.series
    series.prefetch.value = False
    open_series(series, photos)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    series.accept_button.clicked.emit()
    qtbot.waitUntil(lambda: series.quality_pending, timeout=WAIT_MS)
    worker = series._quality_worker  # the thread to wait for
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=WAIT_MS)
    qtbot.wait(200)  # the worker's signals are delivered: none may raise


def test_a_quality_line_that_cannot_be_computed_says_why():
    """The quality worker's body turns a failure into the line shown (napari would show a
    traceback and the line would say "computing" for ever); a pool shut down because
    napari closed gives no line."""
    from concurrent.futures import ThreadPoolExecutor

    from napari_focus.gui.series_decisions import _quality_in_a_process

    pytest.importorskip("py_sod_metrics")
    with ThreadPoolExecutor(max_workers=1) as pool:
        proposal = np.ones((8, 8), np.uint8)
        line = _quality_in_a_process(pool, "img0", proposal, np.ones((6, 8), bool), "x")
        assert line.startswith("img0: the quality could not be computed (")
        assert "differ in shape" in line

        def unreadable() -> None:
            raise OSError("the stored proposal is gone")

        line = _quality_in_a_process(pool, "img1", unreadable, proposal, "x")
        assert line == "img1: the quality could not be computed (the stored proposal is gone)"
        line = _quality_in_a_process(pool, "img2", proposal, proposal > 0, "ground truth")
        assert line.startswith("img2: proposal vs ground truth: IoU 1.000")
    assert _quality_in_a_process(pool, "img3", proposal, proposal > 0, "x") is None



def _press(qtbot, key, modifier=None) -> None:
    """A key pressed by the user: it goes to the widget with the keyboard focus."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    target = QApplication.focusWidget()
    assert target is not None, "nothing has the keyboard focus"
    qtbot.keyClick(target, key, modifier or Qt.KeyboardModifier.NoModifier)


def test_the_keyboard_walks_the_series(qtbot, open_series, open_focus_widget, tmp_path):
    """Shift+N pressed again and again in the canvas steps on each time (showing an image
    took the keyboard focus away from the canvas), and 'go to #' jumps once, to the
    number typed."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication, QWidget

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(np.full((40, 50, 3), 20 * i, np.uint8)).save(folder / f"p{i:02d}.png")
    _viewer, widget = open_focus_widget()
    series = widget.series
    series.prefetch.value = False
    window = widget.native.window()
    window.show()
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=5000)
    open_series(series, folder)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    canvas = next(w for w in window.findChildren(QWidget) if "Canvas" in type(w).__name__)
    canvas.setFocus()
    shift = Qt.KeyboardModifier.ShiftModifier
    for expected in ("p01.png", "p02.png", "p03.png"):
        _press(qtbot, Qt.Key.Key_N, shift)
        qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
        assert series.shown_key == expected
        assert QApplication.focusWidget() is canvas

    jumps: list[int] = []
    series.jump_to.changed.connect(jumps.append)
    series.jump_to.native.setFocus()
    series.jump_to.native.selectAll()
    qtbot.keyClicks(QApplication.focusWidget(), "12")
    _press(qtbot, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert series.shown_key == "p11.png"
    assert jumps == [12], "typing 12 went to image 1 first"


def test_accept_before_the_proposal_says_to_wait_without_an_error(
    qtbot, open_series, open_focus_widget, photos, monkeypatch
):
    import threading

    from napari_focus.gui import series_section
    from napari_focus.predictor import FocusPredictor

    errors: list[str] = []
    notes: list[str] = []
    monkeypatch.setattr(series_section, "show_error", errors.append)
    monkeypatch.setattr(series_section, "show_info", notes.append)
    release = threading.Event()
    real = FocusPredictor.predict_prepared

    def held(self, *args, **kwargs):
        release.wait(60)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FocusPredictor, "predict_prepared", held)
    _viewer, widget = open_focus_widget()
    series = widget.series
    series.prefetch.value = False
    open_series(series, photos)
    series.accept_button.changed.emit(True)  # the proposal is held back: not ready
    release.set()
    assert errors == []
    assert notes[-1] == (
        "FOCUS series: the proposal of a_large is still being computed: wait for it."
    )
    assert widget.status.value.startswith("the proposal of a_large is still being computed")
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)


def test_what_is_missing_is_named_with_its_tab(
    qtbot, open_series, open_focus_widget, photos, monkeypatch
):
    """In the Series tab, Accept without a dataset root and a checkpoint path that does not
    exist say which tab holds the field to fill."""
    from napari_focus.gui import export_section, series_section

    shown: list[str] = []
    monkeypatch.setattr(export_section, "show_error", shown.append)
    monkeypatch.setattr(series_section, "show_error", shown.append)
    _viewer, widget = open_focus_widget()
    series = widget.series
    widget.show_section("Series")
    open_series(series, photos)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    series.accept_button.changed.emit(True)
    assert "dataset root" in shown[-1] and "in the Export tab" in shown[-1]
    assert series.shown_key == "a_large.png"  # nothing exported, still on the image
    assert widget.status.value == (  # the Series tab's footer says it too
        "a_large not accepted: choose the dataset root (the FOCUS datasets/ folder) in "
        "the Export tab first"
    )

    widget.weights_path.value = photos / "focus_large_sod.pth"  # typed, no such file
    series.next()
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    assert "focus_large_sod.pth' does not exist (moved or renamed?)" in shown[-1]
    assert "under 'checkpoint' in the Model tab" in shown[-1]


def test_closing_the_dock_keeps_the_edits_for_the_next_widget(
    qtbot, open_series, open_focus_widget, photos, tiny_checkpoint
):
    """The × of the FOCUS dock mid-series: the edits of the image on screen are kept, and
    the widget opened again shows them; the closed one lets go of the viewer's keys."""
    import gc

    from napari.utils.key_bindings import KeyBinding

    from napari_focus.gui.series_layers import series_layer

    viewer, widget = open_focus_widget()
    open_series(widget.series, photos)
    qtbot.waitUntil(lambda s=widget.series: s.proposal_ready and not s.busy, timeout=WAIT_MS)
    labels = series_layer(viewer, "labels")
    edited = np.zeros_like(labels.data)
    edited[10:60, 20:90] = 1
    labels.data = edited
    viewer.window.remove_dock_widget(widget.native)  # what the dock's × does
    del widget
    gc.collect()

    _, reopened = viewer.window.add_plugin_dock_widget("napari-focus", "FOCUS")
    reopened.weights_source.value = "file"
    reopened.weights_path.value = tiny_checkpoint
    reopened.device.value = "cpu"
    open_series(reopened.series, photos)
    qtbot.waitUntil(
        lambda: reopened.series.proposal_ready and not reopened.series.busy, timeout=WAIT_MS
    )
    assert reopened.series.shown_key == "a_large.png"
    np.testing.assert_array_equal(series_layer(viewer, "labels").data > 0, edited > 0)
    assert reopened.series.state.queue.current.status.value == "corrected"
    gc.collect()
    assert KeyBinding.from_str("Shift-N") in viewer.keymap


def test_return_in_the_leave_question_keeps_the_edits(
    qtbot, open_series, open_focus_widget, photos
):
    """'unsaved edits: ask': the question's default answer (Return) saves the edits."""
    from qtpy.QtCore import Qt, QTimer
    from qtpy.QtWidgets import QApplication, QMessageBox

    from napari_focus.gui.series_layers import series_layer

    viewer, widget = open_focus_widget()
    series = widget.series
    series.on_leave.value = "ask"
    open_series(series, photos)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    labels = series_layer(viewer, "labels")
    edited = np.zeros_like(labels.data)
    edited[5:50, 5:70] = 1
    labels.data = edited
    asked: list[str] = []

    def press_return() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(50, press_return)
            return
        asked.append(box.text())
        qtbot.keyClick(box, Qt.Key.Key_Return)

    QTimer.singleShot(50, press_return)
    series.next()
    assert asked and "Save your edits of 'a_large" in asked[0]
    qtbot.waitUntil(lambda: not series.autosaves.busy, timeout=WAIT_MS)
    assert series.state.autosave_path("a_large.png").is_file()
    assert series.state.queue.item("a_large.png").status.value == "corrected"


def test_reset_to_proposal_asks_before_throwing_edits_away(
    qtbot, open_series, open_focus_widget, photos
):
    """Shift+O (Reset to proposal) on a painted mask asks first; Return keeps the edits."""
    from qtpy.QtCore import Qt, QTimer
    from qtpy.QtWidgets import QApplication, QMessageBox

    from napari_focus.gui.series_layers import series_layer

    viewer, widget, _series = _photos_shown(qtbot, open_series, open_focus_widget, photos)
    labels = series_layer(viewer, "labels")
    proposal = labels.data.copy()
    edited = 1 - proposal
    labels.data = edited
    answers: list[str] = []

    def answer(key: Any) -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(50, lambda: answer(key))
            return
        answers.append(box.text())
        if key == "yes":
            box.button(QMessageBox.StandardButton.Yes).click()
        else:
            qtbot.keyClick(box, Qt.Key.Key_Return)

    QTimer.singleShot(50, lambda: answer("return"))
    widget.refine_section.reset_button.native.click()
    assert answers and "Throw away your edits" in answers[0]
    np.testing.assert_array_equal(labels.data, edited)  # Return = No: nothing lost

    QTimer.singleShot(50, lambda: answer("yes"))
    widget.refine_section.reset_button.native.click()
    np.testing.assert_array_equal(labels.data, proposal)


def test_a_series_folder_that_cannot_be_written_says_what_to_do(
    qtbot, open_series, open_focus_widget, photos, tmp_path, monkeypatch
):
    from napari_focus.gui import series_section

    shown: list[str] = []
    monkeypatch.setattr(series_section, "show_error", shown.append)
    _viewer, widget = open_focus_widget()
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    widget.series.output.value = tmp_path / "notes.txt" / "series"
    open_series(widget.series, photos)
    assert widget.series.state is None
    assert "cannot keep the series in" in shown[-1] and "Errno" not in shown[-1]
    assert "Choose a 'series folder' you can write to" in shown[-1]


def test_annotate_a_folder_fits_the_first_image(qtbot, make_napari_viewer, photos, monkeypatch):
    """`napari-focus annotate FOLDER`: the first image fills the view of the window as it
    is shown (it was fitted to the canvas before the window took its size)."""
    from napari_focus.gui import annotate, job, series_section
    from napari_focus.gui.series_layers import series_layer

    def offline(key, *_args, **_kwargs):
        raise OSError("offline in tests")

    monkeypatch.setattr(job, "load_predictor", offline)  # never the network
    monkeypatch.setattr(series_section, "show_error", lambda text: None)
    monkeypatch.setattr(napari, "Viewer", lambda show=True: make_napari_viewer(show=show))
    viewer, widget = annotate.open_viewer(folder=photos, show=True)
    qtbot.waitUntil(lambda: widget.series.shown_key is not None, timeout=WAIT_MS)
    qtbot.wait(200)
    assert _fits(viewer, series_layer(viewer, "image"))


def test_an_accepted_image_shows_again_with_the_mask_that_was_accepted(
    qtbot, open_series, open_focus_widget, photos, tmp_path
):
    """Back on an accepted image, the mask on screen is the exported one with its
    corrections, not the model's proposal; without that file, the proposal."""
    from napari_focus.gui.series_layers import series_layer

    viewer, widget = open_focus_widget()
    widget.export_section.dataset_root.value = tmp_path / "datasets"
    series = widget.series
    open_series(series, photos)

    def settled():
        qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)

    settled()
    labels = series_layer(viewer, "labels")
    proposal = np.asarray(labels.data).copy()
    edited = proposal.copy()
    edited[5:25, 5:45] = 1 - edited[5:25, 5:45]  # a correction that differs everywhere there
    labels.data = edited
    series.accept_button.clicked.emit()
    qtbot.waitUntil(lambda: series.shown_key == "b_small.png", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not widget.export_section.busy, timeout=WAIT_MS)
    settled()
    exported = series.state.queue.item("a_large.png").export["mask"]
    series.include_exported.value = True
    series.previous_button.clicked.emit()
    settled()
    assert series.shown_key == "a_large.png"
    np.testing.assert_array_equal(series_layer(viewer, "labels").data > 0, edited > 0)
    assert widget.status.value == "a_large is accepted"

    series.next_button.clicked.emit()
    settled()
    Path(exported).unlink()  # the dataset copy deleted since: the proposal is shown
    series.previous_button.clicked.emit()
    settled()
    np.testing.assert_array_equal(series_layer(viewer, "labels").data > 0, proposal > 0)


def test_go_to_a_file_that_failed_stays_and_says_why(
    qtbot, open_series, open_focus_widget, photos, monkeypatch
):
    from napari_focus.gui import series_section
    from napari_focus.series import Status

    said: list[str] = []
    monkeypatch.setattr(series_section, "show_info", said.append)
    _viewer, widget = open_focus_widget()
    series = widget.series
    open_series(series, photos)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    series.jump_to.value = 3
    qtbot.waitUntil(lambda: series.shown_key == "c_medium.jpg", timeout=WAIT_MS)
    broken = series.state.queue.item("d_broken.png")
    qtbot.waitUntil(lambda: broken.status is Status.FAILED, timeout=WAIT_MS)  # read ahead
    assert series.position.value.endswith(", 1 failed"), series.position.value  # said now
    series.jump_to.value = 4
    assert series.shown_key == "c_medium.jpg" and series.jump_to.value == 3
    assert said[-1].startswith(f"FOCUS: #4 d_broken cannot be shown: {broken.failure}")


def test_a_folder_of_broken_files_says_so_and_offers_nothing_to_press(
    qtbot, open_series, open_focus_widget, tmp_path
):
    folder = tmp_path / "broken"
    folder.mkdir()
    for name in ("x1.png", "x2.png", "x3.jpg"):
        (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n" if name.endswith("png") else b"no")
    _viewer, widget = open_focus_widget()
    series = widget.series
    open_series(series, folder)
    qtbot.waitUntil(lambda: series.position.value.startswith("no image"), timeout=WAIT_MS)
    assert widget.status.value == (
        "no image of this series can be shown: x1, x2, x3 failed (the warnings said why); "
        "open another folder"
    )
    buttons = (series.previous_button, series.next_button, series.accept_button,
               series.reject_button, series.skip_button, series.rank_button)  # fmt: skip
    assert not any(button.enabled for button in buttons)
    assert series.open_button.enabled


def test_a_long_file_name_is_cut_in_the_middle_keeping_the_status_in_view(
    qtbot, open_series, open_focus_widget, photos
):
    long = "a_holiday_" + "x" * 120 + "_frame_0042"  # first in the folder's order
    (photos / "a_large.png").rename(photos / f"{long}.png")
    _viewer, widget = open_focus_widget()
    series = widget.series
    open_series(series, photos)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    shown = series.position.value
    assert shown.startswith("1 / 4 a_holiday_x") and "…" in shown and "_frame_0042 — " in shown
    assert len(shown) < 70, shown  # its status stays on the label's lines
    tooltip = series.position.tooltip
    assert long in tooltip and str(photos / f"{long}.png") in tooltip


def test_with_the_others_broken_an_accepted_image_stays_on_screen(
    qtbot, open_series, open_focus_widget, tmp_path, focus_reference
):
    folder = tmp_path / "two"
    folder.mkdir()
    source = np.array(Image.open(focus_reference / "input.png").convert("RGB"))
    Image.fromarray(source[:64, :96]).save(folder / "a.png")
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    _viewer, widget = open_focus_widget()
    widget.export_section.dataset_root.value = tmp_path / "datasets"
    series = widget.series
    open_series(series, folder)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    series.accept_button.clicked.emit()  # a exported; b cannot be shown
    qtbot.waitUntil(lambda: not widget.export_section.busy, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: series.state.queue.item("a.png").exported, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    assert series.shown_key == "a.png", series.position.value
    assert not series.position.value.startswith("no image")
    assert series.previous_button.enabled and series.next_button.enabled


def test_back_on_a_saved_mask_no_other_image_s_probability_map_is_left(
    qtbot, open_series, open_focus_widget, photos
):
    from napari_focus.gui.series_layers import series_layer

    viewer, _widget, series = _photos_shown(qtbot, open_series, open_focus_widget, photos)
    labels = series_layer(viewer, "labels")
    edited = np.asarray(labels.data).copy()
    edited[:10, :10] = 1
    labels.data = edited  # a_large (128 x 128) gets an autosave
    series.next()  # b_small, 40 x 64
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    series.previous()  # a_large from its autosave
    qtbot.waitUntil(lambda: series.shown_key == "a_large.png" and not series.busy,
                    timeout=WAIT_MS)  # fmt: skip
    probability = series_layer(viewer, "probability")
    assert probability.data.shape == (128, 128)
    assert not np.asarray(probability.data).any()  # not b_small's map under a_large's name


def test_accept_after_renaming_the_series_image_exports_the_correction(
    qtbot, open_series, open_focus_widget, photos, tmp_path
):
    """A user renames the series' image layer ("a_large (blurry)"): Accept still
    exports the series' mask with its correction."""
    from napari_focus.gui.series_layers import series_layer

    viewer, widget, series = _photos_shown(qtbot, open_series, open_focus_widget, photos,
                                           tmp_path / "datasets")  # fmt: skip
    labels = series_layer(viewer, "labels")
    edited = np.zeros_like(labels.data)
    edited[5:25, 5:45] = 1
    labels.data = edited
    image = series_layer(viewer, "image")
    image.name = f"{image.name} (blurry)"
    viewer.layers.selection.active = image
    assert widget.mask_layer() is labels
    series.accept_button.clicked.emit()
    qtbot.waitUntil(lambda: series.shown_key == "b_small.png", timeout=WAIT_MS)
    exported = series.state.queue.item("a_large.png").export["mask"]
    np.testing.assert_array_equal(np.array(Image.open(exported)) > 0, edited > 0)


def test_accept_after_the_mask_layer_was_closed_says_how_to_get_it_back(
    qtbot, open_series, open_focus_widget, photos, tmp_path, series_errors
):
    from napari_focus.gui.series_layers import series_layer

    viewer, _widget, series = _photos_shown(qtbot, open_series, open_focus_widget, photos,
                                            tmp_path / "datasets")  # fmt: skip
    labels = series_layer(viewer, "labels")
    labels.mode = "pan_zoom"  # (removing a Labels layer in paint mode crashes Mesa's GL)
    viewer.layers.remove(labels)
    series.accept_button.clicked.emit()
    assert series.shown_key == "a_large.png"
    assert series_errors[-1] == (
        "FOCUS series: the mask layer of a_large was closed: go to another image and back "
        "to show its mask again (any edits of it were kept), then Accept"
    )
    series.next()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    series.previous()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert series.shown_key == "a_large.png" and series_layer(viewer, "labels") is not None


def test_accept_in_a_queue_of_open_layers_exports_the_shown_layer(
    qtbot, open_series, open_focus_widget, focus_reference, tmp_path
):
    """Two layers open, the last one selected: Queue open layers shows the first, and
    Accept (after its proposal arrived, and after a click on the other layer) exports
    the first one's pixels under its name."""
    source = np.array(Image.open(focus_reference / "input.png").convert("RGB"))
    viewer, widget = open_focus_widget()
    widget.export_section.dataset_root.value = tmp_path / "datasets"
    first = viewer.add_image(source[:64, :96], name="first")
    viewer.add_image(source[64:128, 96:160][..., ::-1].copy(), name="second")
    series = widget.series
    series.output.value = tmp_path / "queue"
    open_series(series, layers=True)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert series.shown_key == "first" and widget.image.value == "first"
    viewer.layers.selection.active = viewer.layers["second"]  # a look at the other one
    series.accept_button.clicked.emit()
    qtbot.waitUntil(lambda: series.state.queue.item("first").export is not None, timeout=WAIT_MS)
    record = series.state.queue.item("first").export
    assert record["name"] == "first", record
    exported = np.asarray(Image.open(record["image"])).astype(int)  # a JPEG of the split
    assert np.abs(exported - first.data).mean() < 4


def test_accept_again_after_a_typed_sample_name_meets_that_sample(
    qtbot, open_series, open_focus_widget, photos, tmp_path, monkeypatch
):
    """An image accepted under a name typed in the Export tab, then shown again: the
    field holds that name, so Accept asks about that sample instead of adding a copy."""
    from napari_focus.gui import dialogs

    questions: list[str] = []
    monkeypatch.setattr(dialogs, "ask_policy", lambda _, q: questions.append(q) or None)
    _viewer, widget, series = _photos_shown(
        qtbot, open_series, open_focus_widget, photos, tmp_path / "datasets"
    )
    widget.export_section.sample_name.value = "typed_name"
    series.accept_button.clicked.emit()
    qtbot.waitUntil(lambda: series.shown_key == "b_small.png", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not widget.export_section.busy, timeout=WAIT_MS)
    assert series.state.queue.item("a_large.png").export["name"] == "typed_name"
    assert widget.export_section.sample_name.value == "b_small"
    series.include_exported.value = True
    series.previous_button.clicked.emit()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert widget.export_section.sample_name.value == "typed_name"
    series.accept_button.clicked.emit()
    qtbot.waitUntil(lambda: len(questions) == 1, timeout=WAIT_MS)
    assert "typed_name" in questions[0]
    masks = sorted(p.name for p in (tmp_path / "datasets").rglob("DUTS-TR-Mask/*"))
    assert masks == ["typed_name.png"]


def test_a_file_found_broken_when_read_is_named_once_in_the_warning(
    qtbot, open_series, open_focus_widget, photos, monkeypatch
):
    from napari_focus.gui import series_scheduling

    warned: list[str] = []
    monkeypatch.setattr(series_scheduling, "show_warning", warned.append)
    _viewer, _widget, series = _photos_shown(qtbot, open_series, open_focus_widget, photos)
    for _ in range(2):
        series.next()
        qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: bool(warned), timeout=WAIT_MS)
    assert warned[0].startswith("FOCUS series: d_broken.png ") and warned[0].endswith(
        " (skipped)"
    ), warned
    assert warned[0].count("d_broken.png") == 1


def test_a_mask_proposed_for_another_task_asks_before_going_into_its_split(
    qtbot, open_series, open_focus_widget, photos, tmp_path, monkeypatch
):
    """The task switched to COD with a SOD proposal on screen: the layout follows the
    task, so Accept asks before a salient-object mask becomes camouflage ground truth."""
    from napari_focus.gui import dialogs

    questions: list[str] = []
    answer = [False]
    monkeypatch.setattr(
        dialogs, "ask_yes_no", lambda _, q, **_kw: questions.append(q) or answer[0]
    )
    root = tmp_path / "datasets"
    _viewer, widget, series = _photos_shown(qtbot, open_series, open_focus_widget, photos, root)
    widget.task.value = "cod"
    assert widget.export_section.dataset_layout.value == "cod10k-train"
    series.accept_button.clicked.emit()
    qtbot.waitUntil(lambda: len(questions) == 1, timeout=WAIT_MS)
    assert "'a_large' was made for salient objects (SOD)" in questions[0]
    assert "cod10k-train is a split for camouflaged objects (COD)" in questions[0]
    assert series.shown_key == "a_large.png" and not list(root.rglob("*.jpg"))
    answer[0] = True
    series.accept_button.clicked.emit()
    qtbot.waitUntil(lambda: series.shown_key == "b_small.png", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not widget.export_section.busy, timeout=WAIT_MS)
    assert [p.name for p in root.rglob("Train/Image/*")] == ["NF-a_large.jpg"]


def test_an_accepted_mask_shown_again_keeps_the_task_of_its_split(
    qtbot, open_series, open_focus_widget, photos, tmp_path, monkeypatch
):
    """Accepted into duts-tr, shown again after a switch to COD: the layer says SOD, and
    Accept asks before that mask goes into cod10k-train as camouflage ground truth."""
    from napari_focus.gui import dialogs
    from napari_focus.gui.series_layers import series_layer

    questions: list[str] = []
    monkeypatch.setattr(dialogs, "ask_yes_no", lambda _, q, **_kw: questions.append(q) or False)
    root = tmp_path / "datasets"
    viewer, widget, series = _photos_shown(qtbot, open_series, open_focus_widget, photos, root)
    series.accept_button.clicked.emit()
    qtbot.waitUntil(lambda: series.shown_key == "b_small.png", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not widget.export_section.busy, timeout=WAIT_MS)
    widget.task.value = "cod"
    series.include_exported.value = True
    series.previous_button.clicked.emit()
    qtbot.waitUntil(lambda: series.shown_key == "a_large.png" and not series.busy,
                    timeout=WAIT_MS)  # fmt: skip
    assert series_layer(viewer, "labels").name == "a_large [FOCUS SOD]"
    series.accept_button.clicked.emit()
    qtbot.waitUntil(lambda: len(questions) == 1, timeout=WAIT_MS)
    assert "'a_large' was made for salient objects (SOD)" in questions[0]
    assert not (root / "COD10K-v3").exists()


@pytest.mark.parametrize("take_out", [True, False])
def test_reject_after_accept_asks_to_take_the_sample_out_of_the_split(
    qtbot, open_series, open_focus_widget, photos, tmp_path, monkeypatch, take_out
):
    """Improve trains on what the split holds: rejecting an accepted image asks whether
    its sample goes too; Yes takes it out (files and JSON entries), No keeps it."""
    from napari_focus.datasets import read_records
    from napari_focus.gui import dialogs

    questions: list[str] = []
    monkeypatch.setattr(
        dialogs, "ask_yes_no", lambda _, q, **_kw: questions.append(q) or take_out
    )
    root = tmp_path / "datasets"
    _viewer, widget, series = _photos_shown(qtbot, open_series, open_focus_widget, photos, root)
    series.accept_button.clicked.emit()
    qtbot.waitUntil(lambda: series.shown_key == "b_small.png", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not widget.export_section.busy, timeout=WAIT_MS)
    mask = Path(series.state.queue.item("a_large.png").export["mask"])
    assert mask.is_file()
    series.include_exported.value = True
    series.previous_button.clicked.emit()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    series.reject_button.clicked.emit()
    qtbot.waitUntil(lambda: series.shown_key == "b_small.png", timeout=WAIT_MS)
    assert len(questions) == 1 and "its sample 'a_large' is in the duts-tr split" in questions[0]
    item = series.state.queue.item("a_large.png")
    assert item.status.value == "rejected"
    assert mask.exists() is not take_out
    assert (item.export is None) is take_out
    statuses = [r["status"] for r in read_records(root)]
    assert statuses == (["written", "removed"] if take_out else ["written"])


def test_a_removal_ending_after_another_series_opened_is_recorded_in_its_own(
    qtbot, open_series, open_focus_widget, photos, tmp_path, monkeypatch
):
    """The split's lock held by another export: the removal waits. Accept waits for it;
    another folder opened meanwhile gets nothing of it (same image names), and the
    series it was asked in records it."""
    import shutil
    import threading

    from napari_focus.gui import dialogs, series_unaccept
    from napari_focus.series import load_or_create

    monkeypatch.setattr(dialogs, "ask_yes_no", lambda *_a, **_kw: True)
    gate = threading.Event()
    real = series_unaccept.remove_sample

    def slow_remove(*args):
        assert gate.wait(60)
        return real(*args)

    monkeypatch.setattr(series_unaccept, "remove_sample", slow_remove)
    root = tmp_path / "datasets"
    _viewer, widget, series = _photos_shown(qtbot, open_series, open_focus_widget, photos, root)
    series.accept_button.clicked.emit()
    qtbot.waitUntil(lambda: series.shown_key == "b_small.png", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not widget.export_section.busy, timeout=WAIT_MS)
    series.include_exported.value = True
    series.previous_button.clicked.emit()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    first = series.state
    series.reject_button.clicked.emit()
    assert series.removing_sample
    series.accept_button.clicked.emit()  # waits for the removal: nothing exported
    assert not widget.export_section.busy

    other = shutil.copytree(photos, tmp_path / "other photos", ignore=lambda *_: ["napari_focus"])
    open_series(series, other)
    qtbot.waitUntil(lambda: series.state is not first and series.proposal_ready, timeout=WAIT_MS)
    gate.set()
    qtbot.waitUntil(lambda: not series.removing_sample, timeout=WAIT_MS)
    assert series.state.queue.item("a_large.png").status.value == "proposed"  # untouched
    again = load_or_create(first.output_folder, photos)
    assert again.queue.item("a_large.png").status.value == "rejected", widget.status.value
    assert again.queue.item("a_large.png").export is None
    assert not list(root.rglob("a_large.*"))
