"""The model's proposal of a series image shown with a saved mask (its autosaved edits,
its start mask): Reset to proposal brings it back, Accept records it in the export's
provenance, and neither claims one that does not exist (under Xvfb)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

WAIT_MS = 120_000


@pytest.fixture
def folder(photo_crops):
    return photo_crops(3)


@pytest.fixture
def questions(monkeypatch) -> list[str]:
    """The questions the widget asks; each answered Yes."""
    from napari_focus.gui import dialogs

    asked: list[str] = []

    def yes(parent, text, default_yes=False, **kwargs):
        asked.append(text)
        return True

    monkeypatch.setattr(dialogs, "ask_yes_no", yes)
    return asked


def _labels(viewer):
    return viewer.layers["img0 [FOCUS SOD]"]


def _open_folder(qtbot, series, folder) -> None:
    """Open folder, until its first image is on screen."""
    series.open(folder)
    qtbot.waitUntil(lambda: series.shown_key is not None, timeout=WAIT_MS)


def _edit(labels) -> np.ndarray:
    edited = labels.data.copy()
    edited[:, :48] = 1
    edited[:, 48:] = 0
    labels.data = edited
    return edited


def _provenance(root) -> list[dict]:
    lines = (root / "napari_focus_provenance.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_reset_after_coming_back_brings_the_model_proposal_back(
    qtbot, shown_series, folder, questions
):
    """Edits left (autosaved), Next, Previous: Reset asks, then shows the proposal; its
    autosave goes, so the edits do not come back on the next visit."""
    viewer, widget, series = shown_series(folder)
    proposal = _labels(viewer).data.copy()
    edited = _edit(_labels(viewer))
    series.next()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    series.previous()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    np.testing.assert_array_equal(_labels(viewer).data > 0, edited > 0)
    assert series.state.autosave_path("img0.png").is_file()

    widget.refine_section.reset_button.native.click()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert questions == ["Throw away your edits of 'img0 [FOCUS SOD]' and go back to the proposal?"]
    np.testing.assert_array_equal(_labels(viewer).data > 0, proposal > 0)
    assert widget.status.value == "'img0 [FOCUS SOD]' reset to the proposal"
    assert not series.state.autosave_path("img0.png").exists()
    assert series.state.queue.item("img0.png").status.value == "proposed"
    assert _labels(viewer).editable

    series.next()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    series.previous()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    np.testing.assert_array_equal(_labels(viewer).data > 0, proposal > 0)


def test_reset_in_a_new_napari_reads_the_stored_proposal_in_a_worker(
    qtbot, shown_series, folder, questions, store_loads, predict_threads
):
    viewer, _widget, _series = shown_series(folder)
    proposal = _labels(viewer).data.copy()
    _edit(_labels(viewer))
    viewer.close()  # the edits go to the autosave
    computed = len(predict_threads)
    store_loads.clear()

    viewer2, widget2, series2 = shown_series(folder)
    assert widget2.status.value == "loaded a saved mask"
    widget2.refine_section.reset_button.native.click()
    assert questions  # asked before anything is read
    qtbot.waitUntil(lambda: series2.proposal_ready and not series2.busy, timeout=WAIT_MS)
    np.testing.assert_array_equal(_labels(viewer2).data > 0, proposal > 0)
    assert store_loads and threading.main_thread().name not in store_loads
    assert len(predict_threads) == computed  # read, not computed again
    assert widget2.status.value == "'img0 [FOCUS SOD]' reset to the proposal"


def test_deleting_the_widget_while_reset_reads_the_stored_proposal(
    qtbot, shown_series, folder, questions, monkeypatch
):
    """The file read for Reset to proposal comes back after Qt deleted the widget: it
    goes to nobody (no control of the deleted widget is asked anything)."""
    from napari_focus.series.proposal_store import ProposalStore

    viewer, _widget, _series = shown_series(folder)
    _edit(_labels(viewer))
    viewer.close()  # the edits go to the autosave
    _viewer2, widget2, series2 = shown_series(folder)

    reading, release, done = threading.Event(), threading.Event(), threading.Event()

    def held(store, key, source):  # the file is gone when read: the model would be asked
        reading.set()
        release.wait(30)
        done.set()

    monkeypatch.setattr(ProposalStore, "load", held)
    taken: list[str] = []  # what the deleted widget would do with the file read
    monkeypatch.setattr(
        type(series2), "_compute_for_reset", lambda _self, item: taken.append(item.key)
    )
    widget2.refine_section.reset_button.native.click()
    assert reading.wait(30) and series2.reading_proposal
    with qtbot.waitSignal(widget2.native.destroyed, timeout=WAIT_MS):
        widget2.native.deleteLater()  # as napari's teardown deletes its dock widgets
    release.set()
    assert done.wait(30)
    qtbot.wait(300)  # the worker's result is delivered (to nobody) here
    assert taken == []


def _start_masks(folder) -> tuple:
    masks = folder.parent / "masks"
    masks.mkdir()
    truth = np.zeros((64, 96), np.uint8)
    truth[10:40, 20:70] = 255
    Image.fromarray(truth).save(masks / "img0_gt.png")
    return masks, truth > 0


def test_reset_of_a_start_mask_without_a_model_says_there_is_no_proposal(
    qtbot, open_focus_widget, folder, tmp_path, questions, series_errors
):
    masks, truth = _start_masks(folder)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    viewer, widget = open_focus_widget()
    series = widget.series
    series.prefetch.value = False
    widget.weights_path.value = broken
    series.references.value = masks
    _open_folder(qtbot, series, folder)
    assert series.proposal_ready
    widget.refine_section.reset_button.native.click()
    assert questions == ["Replace the start mask of 'img0 [FOCUS SOD]' with the model's proposal?"]
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: "to reset to" in widget.status.value, timeout=WAIT_MS)
    assert "no proposal of img0 to reset to: the model could not be loaded" in series_errors[-1]
    assert "reset to the proposal" not in widget.status.value
    np.testing.assert_array_equal(_labels(viewer).data > 0, truth)  # the start mask stays
    assert _labels(viewer).editable

    questions.clear()
    series_errors.clear()
    widget.refine_section.reset_button.native.click()  # no stored proposal, no model
    qtbot.waitUntil(lambda: bool(series_errors) and not series.reading_proposal, timeout=WAIT_MS)
    assert "no proposal of img0 to reset to: the model could not be loaded" in series_errors[-1]
    np.testing.assert_array_equal(_labels(viewer).data > 0, truth)


def test_reset_of_a_start_mask_computes_the_proposal(
    qtbot, open_focus_widget, folder, questions, predict_threads
):
    masks, _truth = _start_masks(folder)
    viewer, widget = open_focus_widget()
    series = widget.series
    series.prefetch.value = False
    series.references.value = masks
    _open_folder(qtbot, series, folder)
    assert predict_threads == [] and series.proposal_ready
    widget.refine_section.reset_button.native.click()
    assert not _labels(viewer).editable  # locked meanwhile
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert predict_threads and "napari_focus" in _labels(viewer).metadata
    assert widget.status.value == "'img0 [FOCUS SOD]' reset to the proposal"
    assert _labels(viewer).editable


@pytest.mark.parametrize("new_napari", [False, True], ids=["same napari", "new napari"])
def test_accept_of_autosaved_edits_records_the_proposal_in_the_provenance(
    qtbot, shown_series, folder, tmp_path, store_loads, new_napari
):
    from napari_focus.datasets.provenance import proposal_change

    viewer, widget, series = shown_series(folder)
    proposal = _labels(viewer).data.copy()
    edited = _edit(_labels(viewer))
    if new_napari:
        viewer.close()
        viewer, widget, series = shown_series(folder)
    else:
        series.next()
        qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
        series.previous()
        qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    store_loads.clear()  # (a small image's proposal is looked up at once when shown)
    assert widget.status.value == "loaded a saved mask"
    root = tmp_path / "datasets"
    widget.export_section.dataset_root.value = root
    widget.export_section.dataset_layout.value = "generic"
    series.accept()
    qtbot.waitUntil(lambda: "IoU" in series.quality.value, timeout=WAIT_MS)
    (record,) = _provenance(root)
    expected = proposal_change(proposal, edited)
    assert record["proposal"] == pytest.approx(expected)
    assert record["task"] == "sod" and record["weights_id"]
    assert threading.main_thread().name not in store_loads
    assert len(store_loads) <= 1  # read once for the export and the quality line


def test_accept_reads_a_proposal_changed_since_it_was_read_ahead_in_a_worker(
    qtbot, shown_series, folder, tmp_path, store_loads
):
    """The stored proposal's file changed after it was read ahead with the image (the
    same series open in another napari computed it again): Accept reads the new one in
    its worker, not on the GUI thread."""
    import os

    viewer, _widget, _series = shown_series(folder)
    _edit(_labels(viewer))
    viewer.close()  # the edits go to the autosave
    viewer, widget, series = shown_series(folder)
    stored = series.prefetcher.store.path("img0.png")
    stat = stored.stat()
    stored.write_bytes(stored.read_bytes())
    os.utime(stored, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    store_loads.clear()
    widget.export_section.dataset_root.value = tmp_path / "datasets"
    widget.export_section.dataset_layout.value = "generic"
    series.accept()
    qtbot.waitUntil(lambda: "IoU" in series.quality.value, timeout=WAIT_MS)
    assert store_loads and threading.main_thread().name not in store_loads
    (record,) = _provenance(tmp_path / "datasets")
    assert record["proposal"] is not None


def test_accept_before_a_proposal_says_why_there_is_none(
    qtbot, shown_series, folder, tmp_path, series_errors
):
    """The model cannot be loaded: Accept says so (not "not ready yet"); a mask painted
    by hand is exported as it is, with no proposal in its provenance."""
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    viewer, widget, series = shown_series(folder)
    widget.weights_path.value = broken
    series.next()
    qtbot.waitUntil(lambda: series._model_error is not None, timeout=WAIT_MS)
    series.accept()
    assert "img1 has no proposal to accept: the model could not be loaded" in series_errors[-1]
    assert "Or paint its mask by hand, then Accept" in series_errors[-1]
    assert "not ready" not in series_errors[-1]

    labels = viewer.layers["img1 [FOCUS SOD]"]
    painted = np.zeros((64, 96), np.uint8)
    painted[5:30, 10:50] = 1
    labels.data = painted
    root = tmp_path / "datasets"
    widget.export_section.dataset_root.value = root
    widget.export_section.dataset_layout.value = "generic"
    series.accept()
    qtbot.waitUntil(lambda: series.state.queue.item("img1.png").exported, timeout=WAIT_MS)
    (record,) = _provenance(root)
    assert record["proposal"] is None
    exported = np.asarray(Image.open(root / "masks" / "img1.png")) > 0
    np.testing.assert_array_equal(exported, painted > 0)


def test_accept_on_the_first_image_without_a_model_says_why(
    qtbot, open_focus_widget, folder, tmp_path, series_errors
):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    _viewer, widget = open_focus_widget()
    widget.weights_path.value = broken
    _open_folder(qtbot, widget.series, folder)
    qtbot.waitUntil(lambda: widget.series._model_error is not None, timeout=WAIT_MS)
    widget.series.accept()
    assert "img0 has no proposal to accept: the model could not be loaded" in series_errors[-1]
    assert "paint" not in series_errors[-1]  # no mask layer to paint on yet


def test_queue_open_layers_names_the_field_to_fill(
    qtbot, shown_series, folder, series_errors
):
    _viewer, _widget, series = shown_series(folder)
    in_use = series.output.line_edit.native.placeholderText()
    assert in_use
    series.layers_button.native.click()
    assert "choose a series folder" not in series_errors[-1]
    assert "type a folder under 'series folder'" in series_errors[-1]
    assert in_use in series_errors[-1]


def test_other_weights_repropose_the_shown_image_unless_edited_and_unlock_if_they_fail(
    qtbot, open_focus_widget, folder, tmp_path, series_errors
):
    """After a switch of weights (Improve's Use new weights): the shown, unedited proposal
    is computed again, its mask locked meanwhile; weights that cannot be loaded unlock it
    with the proposal kept and the reason said; an edited mask is never replaced."""
    viewer, widget = open_focus_widget()
    series = widget.series
    series.prefetch.value = False
    _open_folder(qtbot, series, folder)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    shown = _labels(viewer).data.copy()
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    widget.weights_path.value = broken
    assert series.propose_shown_again()
    assert not _labels(viewer).editable  # locked while the new proposal is computed
    qtbot.waitUntil(lambda: bool(series_errors) and not series.busy, timeout=WAIT_MS)
    assert "no proposal of img0 to reset to: the model could not be loaded" in series_errors[-1]
    assert _labels(viewer).editable
    np.testing.assert_array_equal(_labels(viewer).data, shown)

    edited = _edit(_labels(viewer))
    assert not series.propose_shown_again()  # the edits stay
    np.testing.assert_array_equal(_labels(viewer).data, edited)
    assert _labels(viewer).editable
