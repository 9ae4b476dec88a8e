"""Going through a folder in napari: prefetch, autosave, accept, resume (under Xvfb)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

from napari_focus.predictor import FocusPredictor  # noqa: E402
from napari_focus.series import Status  # noqa: E402

WAIT_MS = 120_000


@pytest.fixture
def folder(photo_crops):
    return photo_crops(5)


def _labels(viewer, name):
    return viewer.layers[f"{name} [FOCUS SOD]"]


def test_series_prefetch_autosave_accept_resume(
    qtbot, open_series, open_focus_widget, folder, tmp_path, predict_threads
):
    viewer, widget = open_focus_widget()
    series = widget.series
    open_series(series, folder)
    assert series.state is not None and len(series.state.queue) == 5
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    # the current proposal is shown; the next two were computed ahead, off the UI thread
    assert _labels(viewer, "img0").data.shape == (64, 96)
    assert series.cache.get("img1.png") is not None and series.cache.get("img2.png") is not None
    assert predict_threads and threading.main_thread().name not in predict_threads
    computed = len(predict_threads)
    assert computed == 3

    series.next()  # shows the prefetched proposal at once, no model call
    assert series.shown_key == "img1.png" and series.proposal_ready
    labels1 = _labels(viewer, "img1")
    np.testing.assert_array_equal(labels1.data, series.cache.get("img1.png").mask)
    assert series.state.queue.current.status is Status.PROPOSED
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    assert len(predict_threads) == computed + 1  # only img3 was new; nothing twice
    assert sorted(set(series.seconds)) == ["img0.png", "img1.png", "img2.png", "img3.png"]

    edited = labels1.data.copy()
    edited[:16, :16] = 1
    labels1.data = edited
    series.previous()  # leaving with edits autosaves them (written in the background)
    qtbot.waitUntil(lambda: not series.autosaves.busy, timeout=WAIT_MS)
    assert series.state.autosave_path("img1.png").is_file()
    series.next()
    np.testing.assert_array_equal(_labels(viewer, "img1").data > 0, edited > 0)

    widget.export_section.dataset_root.value = tmp_path / "datasets"
    widget.export_section.dataset_layout.value = "generic"
    series.accept()  # exports in a worker, then moves on
    qtbot.waitUntil(lambda: series.shown_key == "img2.png", timeout=WAIT_MS)
    assert series.state.queue.item("img1.png").status is Status.ACCEPTED
    assert (tmp_path / "datasets" / "masks" / "img1.png").is_file()
    assert series.state.queue.current.key == "img2.png"
    qtbot.waitUntil(lambda: "IoU" in series.quality.value, timeout=WAIT_MS)
    assert series.quality.value.startswith("img1: ")  # the line names its image
    series.skip_button.changed.emit(True)
    assert series.state.queue.item("img2.png").status is Status.SKIPPED
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    labels3 = _labels(viewer, "img3")
    closing_edit = labels3.data.copy()
    closing_edit[-8:, -8:] = 1 - closing_edit[-8:, -8:]
    labels3.data = closing_edit
    current = series.state.queue.current.key
    viewer.close()  # closing napari keeps the edits
    assert series.state.autosave_path("img3.png").is_file()
    statuses = {item.key: item.status for item in series.state.queue}

    viewer2, widget2 = open_focus_widget()
    open_series(widget2.series, folder)
    assert widget2.series.state.queue.current.key == current == "img3.png"
    assert {item.key: item.status for item in widget2.series.state.queue} == statuses
    assert statuses["img3.png"] is Status.CORRECTED
    np.testing.assert_array_equal(_labels(viewer2, "img3").data > 0, closing_edit > 0)
    qtbot.waitUntil(lambda: not widget2.series.busy, timeout=WAIT_MS)


def test_order_by_uncertainty_scores_every_image(
    qtbot, open_series, open_focus_widget, folder, predict_threads, monkeypatch
):
    viewer, widget = open_focus_widget()
    series = widget.series
    series.prefetch.value = False
    open_series(series, folder)
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    for _ in range(3):
        series.next()
    qtbot.waitUntil(lambda: series.shown_key == "img3.png" and not series.busy, timeout=WAIT_MS)
    series.order_by_uncertainty()
    qtbot.waitUntil(lambda: not series.busy and len(series.scores) == 5, timeout=WAIT_MS)
    order = [item.key for item in series.state.queue]
    assert order.index("img3.png") != 3  # the test below needs a new place
    expected = sorted(series.scores, key=lambda key: -series.scores[key])
    assert order == expected
    # the shown image keeps its place on screen: "go to #" names its new number
    assert series.jump_to.value == order.index(series.shown_key) + 1
    assert series.position.value.startswith(f"{order.index(series.shown_key) + 1} / 5 ")
    scores = dict(series.scores)
    computed = len(predict_threads)
    viewer.close()

    # reopened: the scores are read from the stored proposals, not recomputed from maps
    from napari_focus.gui import series_display, series_jobs

    def no_rescoring(*_args, **_kwargs):
        raise AssertionError("a stored proposal was scored again")

    monkeypatch.setattr(series_jobs, "uncertainty", no_rescoring)
    monkeypatch.setattr(series_display, "uncertainty", no_rescoring)
    _viewer2, widget2 = open_focus_widget()
    series2 = widget2.series
    series2.prefetch.value = False
    open_series(series2, folder)
    series2.order_by_uncertainty()  # all stored: read in a worker, then ordered
    assert widget2.status.value.startswith("reading the stored scores of ")
    assert not series2.rank_button.enabled
    qtbot.waitUntil(lambda: not series2.busy, timeout=WAIT_MS)
    assert widget2.status.value == "ordered 5 images by uncertainty"
    assert series2.rank_button.enabled
    assert series2.scores == scores and len(predict_threads) == computed
    assert [item.key for item in series2.state.queue] == expected


def test_closing_napari_while_the_stored_scores_are_read(
    qtbot, shown_series, folder, predict_threads, monkeypatch
):
    """Order by uncertainty reads the stored scores in a worker; napari closed meanwhile,
    what it reads afterwards starts nothing (no proposals for a closed viewer)."""
    import threading
    import time

    from napari_focus.series.proposal_store import ProposalStore

    read, last_read = [], threading.Event()
    real = ProposalStore.uncertainty

    def slow_read(store, key, source):
        time.sleep(0.2)  # as on a slow drive: the worker is still reading at the close
        read.append(threading.current_thread().name)
        if len(read) == 5:
            last_read.set()
        return real(store, key, source)

    viewer, _widget, series = shown_series(folder)
    series.scores.clear()  # as before any proposal: every image's score is read
    computed = len(predict_threads)
    monkeypatch.setattr(ProposalStore, "uncertainty", slow_read)
    series.order_by_uncertainty()
    assert series.reading_scores and not series.rank_button.enabled
    series.order_by_uncertainty()  # pressed again meanwhile: the same reading goes on
    viewer.close()
    assert last_read.wait(30)
    qtbot.wait(300)  # the worker's result reaches the GUI thread, which drops it
    assert len(read) == 5 and threading.main_thread().name not in read
    assert len(predict_threads) == computed and not series.prefetcher.busy


def test_order_by_uncertainty_scores_with_the_model_when_the_store_cannot_be_read(
    qtbot, shown_series, folder, monkeypatch
):
    from napari_focus.gui import series_decisions

    def unreadable(store, items):
        raise MemoryError("the stored scores could not be read")

    _viewer, widget, series = shown_series(folder)
    monkeypatch.setattr(series_decisions, "_stored_scores", unreadable)
    series.order_by_uncertainty()  # the shown image is scored, the other four are not
    qtbot.waitUntil(lambda: not series.busy and len(series.scores) == 5, timeout=WAIT_MS)
    assert widget.status.value == "ordered 5 images by uncertainty"
    assert series.rank_button.enabled and not series.reading_scores


def test_accept_of_autosaved_edits_compares_the_stored_proposal_read_in_a_worker(
    qtbot, open_series, open_focus_widget, shown_series, folder, tmp_path, store_loads
):
    """Back in a new napari, an image shown from its autosave: Accept compares the
    proposal stored in the series folder, read off the GUI thread."""
    from napari_focus.quality import mask_metrics

    viewer, _widget, _series = shown_series(folder)
    labels = _labels(viewer, "img0")
    proposal = labels.data.copy()
    edited = proposal.copy()
    edited[:, :48] = 1
    edited[:, 48:] = 0
    labels.data = edited
    viewer.close()  # the edits go to the autosave

    store_loads.clear()  # what a new napari reads
    viewer2, widget2 = open_focus_widget()
    series2 = widget2.series
    series2.prefetch.value = False
    open_series(series2, folder)
    qtbot.waitUntil(lambda: series2.proposal_ready and not series2.busy, timeout=WAIT_MS)
    np.testing.assert_array_equal(_labels(viewer2, "img0").data > 0, edited > 0)
    widget2.export_section.dataset_root.value = tmp_path / "datasets"
    widget2.export_section.dataset_layout.value = "generic"
    series2.accept()
    qtbot.waitUntil(lambda: "IoU" in series2.quality.value, timeout=WAIT_MS)
    assert store_loads and threading.main_thread().name not in store_loads
    iou = mask_metrics((proposal > 0).astype(np.float32), edited > 0)["iou"]
    assert f"IoU {iou:.3f}" in series2.quality.value


def test_existing_masks_are_the_starting_point(
    qtbot, open_series, open_focus_widget, folder, predict_threads
):
    masks = folder.parent / "masks"
    masks.mkdir()
    truth = np.zeros((64, 96), np.uint8)
    truth[10:40, 20:70] = 255
    Image.fromarray(truth).save(masks / "img0_gt.png")
    viewer, widget = open_focus_widget()
    series = widget.series
    series.prefetch.value = False
    series.references.value = masks
    open_series(series, folder)
    assert series.proposal_ready  # no model needed for the first image
    np.testing.assert_array_equal(_labels(viewer, "img0").data > 0, truth > 0)
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    assert predict_threads == []


def test_queue_of_open_layers(qtbot, open_series, open_focus_widget, tmp_path, series_errors):
    viewer, widget = open_focus_widget()
    rng = np.random.default_rng(1)
    for name in ("first", "second", "third"):
        viewer.add_image(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8), name=name)
    series = widget.series
    open_series(series, layers=True)
    assert series_errors and "series folder" in series_errors[-1]
    open_series(series, tmp_path / "gone")
    assert series_errors[-1] == (
        f"FOCUS series: '{tmp_path / 'gone'}' does not exist; choose a folder of images "
        "under 'image folder'"
    )
    series.output.value = tmp_path / "series"
    open_series(series, layers=True)
    assert [item.key for item in series.state.queue] == ["first", "second", "third"]
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert _labels(viewer, "first").data.shape == (40, 56)
    series.next()
    assert series.proposal_ready  # prefetched from the layer's pixels
    assert widget.image.value == "second"
    assert viewer.layers["second"].visible and not viewer.layers["first"].visible
    assert _labels(viewer, "second").data.shape == (40, 56)



def test_stacks_are_left_out_of_the_queue_of_open_layers(
    qtbot, open_series, open_focus_widget, tmp_path, series_errors, monkeypatch
):
    """A series item is one picture: a stack layer is left out, saying how to segment it
    (its planes' proposals are Run's), and only stacks open no series."""
    from napari_focus.gui import series_start

    infos: list[str] = []
    monkeypatch.setattr(series_start, "show_info", infos.append)
    viewer, widget = open_focus_widget()
    rng = np.random.default_rng(2)
    viewer.add_image(rng.integers(0, 255, (5, 40, 56), dtype=np.uint8), name="stack")
    series = widget.series
    series.output.value = tmp_path / "series"
    open_series(series, layers=True)
    assert series.state is None
    assert series_errors[-1] == (
        "FOCUS series: no open image layer can be queued: stack: a series queues single "
        "images; for a stack, choose it under 'image' in the Model tab and press Run"
    )
    viewer.add_image(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8), name="photo")
    viewer.add_image(np.zeros((10, 10), np.uint8), name="speck")  # left out for its size
    open_series(series, layers=True)
    assert [item.key for item in series.state.queue] == ["photo"]
    assert infos == [
        "FOCUS: left out of the queue: stack: a series queues single images; for a stack, "
        "choose it under 'image' in the Model tab and press Run; 'speck' planes are 10x10 "
        "pixels; FOCUS needs at least 32x32"
    ]
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert _labels(viewer, "photo").data.shape == (40, 56)


def test_a_closed_layer_leaves_the_queue_of_open_layers(
    qtbot, open_series, open_focus_widget, tmp_path, series_errors
):
    """A queued layer closed (or renamed) since is passed over as missing: Next, the
    proposals computed ahead and a proposal arriving for it raise nothing."""
    viewer, widget = open_focus_widget()
    rng = np.random.default_rng(1)
    for name in ("first", "second", "third", "fourth"):
        viewer.add_image(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8), name=name)
    series = widget.series
    series.output.value = tmp_path / "series"
    open_series(series, layers=True)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    viewer.layers.remove("second")
    viewer.layers["third"].name = "renamed"
    series.next()
    assert series.shown_key == "fourth" and widget.image.value == "fourth"
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert _labels(viewer, "fourth").data.shape == (40, 56)
    assert [i.key for i in series.state.queue if i.missing] == ["second", "third"]
    viewer.layers.remove("fourth")  # shown, its proposal done: Previous skips it too
    series.previous()
    assert series.shown_key == "first" and not series_errors


def test_prefetch_off_computes_only_the_shown_image(
    qtbot, shown_series, folder, predict_threads
):
    _viewer, _widget, series = shown_series(folder)
    assert len(predict_threads) == 1 and not series.cache.in_flight
    series.prefetch.value = True  # switching it on schedules the next two
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    assert len(predict_threads) == 3
    assert series.cache.get("img1.png") is not None and series.cache.get("img2.png") is not None


def test_series_proposals_follow_the_tta_setting(
    qtbot, open_series, open_focus_widget, folder, monkeypatch
):
    calls: list[bool] = []
    original = FocusPredictor.predict

    def recording(self, image, *, tta=False):
        calls.append(tta)
        return original(self, image, tta=tta)

    monkeypatch.setattr(FocusPredictor, "predict", recording)
    import dataclasses

    from napari_focus import predictor as predictor_module

    official = predictor_module.input_preset
    monkeypatch.setattr(  # two small TTA scales instead of the official six: the CI's CPU
        predictor_module,
        "input_preset",
        lambda: dataclasses.replace(official(), tta_short_sides=(64, 96)),
    )
    viewer, widget = open_focus_widget()
    widget.tta.value = True
    series = widget.series
    series.prefetch.value = False
    open_series(series, folder)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert calls == [True]
    assert _labels(viewer, "img0").metadata["napari_focus"]["tta"] is True

    widget.tta.value = False  # another setting: computed again, stored apart
    series.next()
    series.previous()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert calls[-1] is False
    assert _labels(viewer, "img0").metadata["napari_focus"]["tta"] is False
    stores = sorted(p.parent.name for p in series.state.output_folder.rglob("img0*.npz"))
    assert len(stores) == 2 and stores[0] != stores[1]


def test_run_and_the_series_share_one_model_load(
    qtbot, open_series, open_focus_widget, folder, small_photo_for_run, monkeypatch
):
    import time

    loads: list[float] = []
    original = FocusPredictor.from_checkpoint.__func__

    def slow_counted_load(cls, *args, **kwargs):
        loads.append(time.perf_counter())
        time.sleep(1.0)  # a big model from a slow disk: the other job asks meanwhile
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(FocusPredictor, "from_checkpoint", classmethod(slow_counted_load))
    viewer, widget = open_focus_widget()
    viewer.add_image(small_photo_for_run, name="other", rgb=True)
    widget.run()  # loads the model in its worker...
    open_series(widget.series, folder)  # ...while the series prefetch wants it too
    qtbot.waitUntil(lambda: not widget.running and not widget.series.busy, timeout=WAIT_MS)
    assert len(loads) == 1
    assert "other [FOCUS SOD]" in viewer.layers and widget.series.proposal_ready
    _, kept = widget.model_section.current_model()
    assert widget.series.cache.get("img1.png") is not None and kept is not None


@pytest.fixture
def small_photo_for_run(focus_reference) -> np.ndarray:
    return np.array(Image.open(focus_reference / "input.png").convert("RGB"))[:64, :96]


def test_a_reopened_series_shows_stored_proposals_and_still_computes_new_ones(
    qtbot, open_series, open_focus_widget, folder, predict_threads
):
    """A proposal read back from disk comes with a description of its model, which
    must not be kept as the model: the next proposal computed ahead needs a real one."""
    viewer, widget = open_focus_widget()
    series = widget.series
    open_series(series, folder)
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    assert len(predict_threads) == 3  # img0 shown, img1 and img2 ahead
    viewer.close()

    _, widget2 = open_focus_widget()
    series2 = widget2.series
    open_series(series2, folder)
    qtbot.waitUntil(lambda: series2.proposal_ready, timeout=WAIT_MS)
    assert series2.shown_key == "img0.png" and len(predict_threads) == 3  # read, not computed
    assert widget2.current_model()[1] is None  # nothing loaded yet, nothing pretends to be
    series2.next()
    series2.next()  # img3 and img4 are computed ahead now: the model is loaded for them
    qtbot.waitUntil(lambda: not series2.busy, timeout=WAIT_MS)
    assert sorted(series2.seconds) == ["img3.png", "img4.png"] and len(predict_threads) == 5
    assert series2.shown_key == "img2.png"
    assert hasattr(widget2.current_model()[1], "model")


def test_a_reopened_series_exports_where_it_did_before(
    qtbot, open_series, open_focus_widget, folder, tmp_path, monkeypatch
):
    """Accept in a series opened again the next day: the dataset root and layout of its
    last export are taken when the Export tab has none, so Accept does not fail (the
    SOD proposals going into a COD split are asked about, each time)."""
    from napari_focus.gui import dialogs

    questions: list[str] = []
    monkeypatch.setattr(dialogs, "ask_yes_no", lambda _, q, **_kw: questions.append(q) or True)
    root = tmp_path / "datasets"
    viewer, widget = open_focus_widget()
    series = widget.series
    open_series(series, folder)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    widget.export_section.dataset_root.value = root
    widget.export_section.dataset_layout.value = "cod10k-train"
    series.accept()
    qtbot.waitUntil(lambda: series.shown_key == "img1.png", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    viewer.close()

    _viewer2, widget2 = open_focus_widget()
    export = widget2.export_section
    assert str(export.dataset_root.value) in ("", ".")  # a fresh widget: nothing chosen
    open_series(widget2.series, folder)
    assert export.dataset_root.value == root and export.dataset_layout.value == "cod10k-train"
    qtbot.waitUntil(lambda: widget2.series.proposal_ready, timeout=WAIT_MS)
    widget2.series.accept()
    qtbot.waitUntil(lambda: widget2.series.shown_key == "img2.png", timeout=WAIT_MS)
    assert (root / "COD10K-v3" / "Train" / "GT_Object" / "NF-img1.png").is_file()
    qtbot.waitUntil(lambda: not widget2.series.busy, timeout=WAIT_MS)
    assert len(questions) == 2 and "split for camouflaged objects (COD)" in questions[1]


def test_run_after_a_cancelled_model_load_gives_the_series_its_proposal(
    qtbot, open_series, open_focus_widget, folder, monkeypatch
):
    """Cancel while the series' model loads, then Run on the image waiting for its
    proposal: the series computes it (no stray mask layer of Run's own, which the series
    would not autosave or export), and the status said what to do meanwhile."""
    from napari.layers import Labels

    from napari_focus.gui import job

    release = threading.Event()
    real_load = job.load_predictor

    def slow_load(*args, **how):  # a large checkpoint being read
        release.wait(30)
        return real_load(*args, **how)

    monkeypatch.setattr(job, "load_predictor", slow_load)
    viewer, widget = open_focus_widget()
    series = widget.series
    open_series(series, folder)
    qtbot.waitUntil(lambda: series.prefetcher.loading is not None, timeout=WAIT_MS)
    widget.cancel_button.clicked.emit()
    release.set()
    qtbot.waitUntil(lambda: not widget.model_section.shared_model.loading, timeout=WAIT_MS)
    series.next()
    assert not series.proposal_ready
    assert widget.status.value == (
        "no proposal for img1: loading the model was cancelled; press Run to load it"
    )
    series.previous()
    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert [layer.name for layer in viewer.layers if isinstance(layer, Labels)] == [
        _labels(viewer, "img0").name
    ]
    assert series.state.queue.item("img0.png").status is Status.PROPOSED
    series.next()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert _labels(viewer, "img1").data.shape == (64, 96)


def test_next_to_an_image_whose_proposal_is_ready_saves_the_series_once(
    qtbot, open_series, open_focus_widget, photo_crops, monkeypatch
):
    """Each save rewrites the whole state file on napari's thread (0.09 s for 20,000
    images): Next saves the new position with the new image's status, once."""
    from napari_focus.series import load_or_create
    from napari_focus.series.state import SeriesState

    images = photo_crops(3)
    _viewer, widget = open_focus_widget()
    series = widget.series
    open_series(series, images)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    saves: list[str] = []
    save = SeriesState.save

    def counted(self):
        saves.append(self.queue.current.key)
        return save(self)

    monkeypatch.setattr(SeriesState, "save", counted)
    series.next()
    qtbot.waitUntil(lambda: series.proposal_ready, timeout=WAIT_MS)
    assert series.state.queue.item("img1.png").status is Status.PROPOSED
    assert saves == ["img1.png"]
    assert load_or_create(series.state.output_folder, images).queue.current.key == "img1.png"


def test_a_second_window_on_the_same_series_is_warned(
    qtbot, open_series, open_focus_widget, photo_crops, monkeypatch
):
    """Both windows save into the series, the later decision winning: the second one to
    open it says so; once the first let go of it, nothing is said."""
    from napari_focus.gui import series_section

    warned: list[str] = []
    monkeypatch.setattr(series_section, "show_warning", warned.append)
    images = photo_crops(2)
    _viewer, first = open_focus_widget()
    open_series(first.series, images)
    assert warned == []
    _viewer2, second = open_focus_widget()
    open_series(second.series, images)
    assert warned == [
        "FOCUS: this series is also open in another window of this napari: both save into "
        "it, image by image, the later decision winning; close it there so that a click in "
        "one window does not undo a decision made in the other"
    ]
    marks = lambda: sorted(images.glob("**/.napari_focus-open-*"))  # noqa: E731
    assert len(marks()) == 2
    qtbot.waitUntil(lambda: not first.series.busy and not second.series.busy, timeout=WAIT_MS)
    assert first.series.close_guard.allow_close()  # napari closing: its marker goes
    assert len(marks()) == 1
    open_series(second.series, images)  # reopened alone: nothing said
    assert len(warned) == 1 and len(marks()) == 1
