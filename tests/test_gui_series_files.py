"""A series over a real, mixed folder; undo across images; computations never thrown
away (run under Xvfb; failed autosaves: test_gui_series_autosave.py)."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
import tifffile
from PIL import Image

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

from napari_focus.predictor import FocusPredictor  # noqa: E402
from napari_focus.series import Status  # noqa: E402

WAIT_MS = 120_000


@pytest.fixture
def mixed_folder(tmp_path, focus_reference):
    source = np.array(Image.open(focus_reference / "input.png").convert("RGB"))[:64, :96]
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(source.mean(-1).astype(np.uint8)).save(folder / "a_gray.png")
    Image.fromarray(source[:48, :80]).save(folder / "b_rgb.jpg", quality=90)
    tifffile.imwrite(folder / "c_16bit.tif", source[..., 1].astype(np.uint16) * 257)
    tifffile.imwrite(
        folder / "d_planes.tif", np.stack([source[..., 0]] * 4), photometric="minisblack"
    )
    rgba = np.dstack([source[:56, :72], np.full((56, 72), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "e_rgba.png")
    (folder / "f_text.png").write_text("this is not an image\n")
    return folder


@pytest.fixture
def uncaught(monkeypatch) -> list:
    seen: list = []
    monkeypatch.setattr(sys, "excepthook", lambda *info: seen.append(info))
    return seen


def _labels_and_image(viewer):
    from napari_focus.gui.series_layers import series_layer

    return series_layer(viewer, "labels"), series_layer(viewer, "image")


def test_mixed_folder_next_through_all(
    qtbot, open_series, open_focus_widget, mixed_folder, uncaught
):
    viewer, widget = open_focus_widget()
    series = widget.series
    series.prefetch.value = False
    open_series(series, mixed_folder)
    seen = []
    for _ in range(6):
        qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
        labels, image = _labels_and_image(viewer)
        layers = list(viewer.layers)
        assert layers.index(labels) > layers.index(image), "the mask must lie above the image"
        assert labels.visible and labels.data.shape == image.data.shape[:2]
        assert labels.name.startswith(image.name)
        seen.append(series.shown_key)
        assert series.shown_key in series.position.value or image.name in series.position.value
        series.next()
    assert seen == ["a_gray.png", "b_rgb.jpg", "c_16bit.tif", "e_rgba.png", *seen[4:]]
    queue = series.state.queue
    for bad, words in (("d_planes.tif", "4 planes"), ("f_text.png", "f_text.png is not an image")):
        item = queue.item(bad)
        assert item.status is Status.FAILED and words in item.failure
    for good in ("a_gray.png", "b_rgb.jpg", "c_16bit.tif", "e_rgba.png"):
        assert queue.item(good).status is Status.PROPOSED
    assert "2 failed" in series.position.value
    assert not uncaught


def test_undo_never_crosses_images(qtbot, open_series, open_focus_widget, mixed_folder):
    viewer, widget = open_focus_widget()
    series = widget.series
    open_series(series, mixed_folder)
    qtbot.waitUntil(lambda: series.proposal_ready, timeout=WAIT_MS)
    labels, _ = _labels_and_image(viewer)
    labels.paint((10, 10), 1)
    labels.paint((12, 40), 1)
    series.next()
    qtbot.waitUntil(lambda: series.proposal_ready, timeout=WAIT_MS)
    labels, _ = _labels_and_image(viewer)
    before = labels.data.copy()
    labels.undo()  # Ctrl+Z on image k+1 after painting on image k
    np.testing.assert_array_equal(labels.data, before)
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)  # the autosave written too
    assert series.state.autosave_path("a_gray.png").is_file()  # image k's edits kept


def test_next_onto_a_running_computation_waits_for_it(
    qtbot, open_series, open_focus_widget, mixed_folder, monkeypatch
):
    calls: list[tuple] = []
    release = threading.Event()
    original = FocusPredictor.predict

    def recording(self, image, **kwargs):
        calls.append(image.shape)
        if len(calls) == 2:  # the prefetch of the second image: held until released
            release.wait(60)
        return original(self, image, **kwargs)

    monkeypatch.setattr(FocusPredictor, "predict", recording)
    viewer, widget = open_focus_widget()
    series = widget.series
    open_series(series, mixed_folder)
    qtbot.waitUntil(lambda: len(calls) == 2, timeout=WAIT_MS)
    series.next()  # onto b_rgb.jpg, whose proposal is being computed
    assert series.shown_key == "b_rgb.jpg" and not series.proposal_ready
    release.set()
    qtbot.waitUntil(lambda: series.proposal_ready, timeout=WAIT_MS)
    labels, _ = _labels_and_image(viewer)
    assert labels.data.shape == (48, 80)
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    assert calls.count((48, 80, 3)) == 1  # the model ran once for it

    series.previous()  # back to the first image: from memory or the series folder
    assert series.proposal_ready
    series.cache.clear()
    series.next()
    assert series.proposal_ready  # from the series folder on disk, no model call
    assert calls.count((48, 80, 3)) == 1


def test_annotate_opens_a_folder_as_a_series(
    qtbot, make_napari_viewer, mixed_folder, monkeypatch
):
    from napari_focus.gui import annotate, job, series_section

    def offline(key, *_args):
        raise OSError("offline in tests")

    monkeypatch.setattr(job, "load_predictor", offline)  # never the network
    monkeypatch.setattr(series_section, "show_error", lambda text: None)
    monkeypatch.setattr(napari, "Viewer", lambda show=True: make_napari_viewer())
    _viewer, widget = annotate.open_viewer(folder=mixed_folder, show=False)
    assert widget.series.loader.busy  # napari is up at once: the folder opens in a worker
    qtbot.waitUntil(lambda: not widget.series.loader.busy, timeout=WAIT_MS)
    assert widget.series.state is not None and len(widget.series.state.queue) == 6
    assert widget.tabs.tabText(widget.tabs.currentIndex()) == "Series"
    qtbot.waitUntil(lambda: not widget.series.busy, timeout=WAIT_MS)  # before the teardown


def test_a_version_1_series_opens_with_its_edits_and_a_word_on_shared_files(
    qtbot, open_series, open_focus_widget, tmp_path, monkeypatch
):
    import shutil
    from pathlib import Path

    from napari_focus.gui import series_start
    from napari_focus.gui.series_layers import series_layer

    warnings: list[str] = []
    monkeypatch.setattr(series_start, "show_warning", warnings.append)
    shutil.copytree(Path(__file__).parent / "data" / "series_v1", tmp_path / "v1")
    viewer, widget = open_focus_widget()
    series = widget.series
    series.prefetch.value = False
    series.recursive.value = True
    series.output.value = tmp_path / "v1" / "out"
    open_series(series, tmp_path / "v1" / "images")
    assert warnings and "cat.png" in warnings[-1] and "sub__b.png" in warnings[-1]
    assert series.shown_key == "cat.jpg"  # where the last session stopped
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    series.jump_to.value = series.state.queue.index_of("dog.png") + 1  # "go to #"
    assert series.shown_key == "dog.png" and series.proposal_ready  # its autosave, no model
    saved = np.zeros((36, 48), bool)
    saved[:, 8:11] = True
    np.testing.assert_array_equal(series_layer(viewer, "labels").data > 0, saved)
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)


def test_start_masks_inside_the_tree_are_no_images_of_the_series(
    qtbot, open_series, open_focus_widget, photo_crops
):
    """`predict --recursive --out tree/masks` then a series of the tree with include
    subfolders: the masks folder gives start masks, not images to label."""
    from napari_focus.gui.series_layers import series_layer

    tree = photo_crops(3)
    (tree / "sub").mkdir()
    (tree / "img2.png").rename(tree / "sub" / "img2.png")
    masks = tree / "masks"
    for key in ("img0.png", "img1.png", "sub/img2.png"):
        (masks / key).parent.mkdir(parents=True, exist_ok=True)
        mask = np.zeros((64, 96), np.uint8)
        mask[:, :30] = 255
        Image.fromarray(mask).save(masks / key)
    _viewer, widget = open_focus_widget()
    series = widget.series
    series.prefetch.value = False
    series.recursive.value = True
    series.references.value = masks
    open_series(series, tree)
    assert series.state.queue.keys() == ["img0.png", "img1.png", "sub/img2.png"]
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert (series_layer(widget.viewer, "labels").data > 0).mean() == pytest.approx(30 / 96)


def test_phone_photo_and_int16_scan_in_a_series(
    qtbot, open_series, open_focus_widget, tmp_path, uncaught
):
    """A photo stored sideways with EXIF Orientation 6 is shown and segmented upright; a
    mask drawn on its stored pixels (other frame) is not laid over it; an int16 scan is
    segmented like any other image."""
    folder, references = tmp_path / "photos", tmp_path / "references"
    folder.mkdir()
    references.mkdir()
    stored = np.zeros((40, 64, 3), np.uint8)
    stored[:, :10] = 255
    photo = Image.fromarray(stored)
    exif = photo.getexif()
    exif[0x0112] = 6
    photo.save(folder / "a_phone.jpg", exif=exif, quality=95)
    Image.fromarray(np.full((40, 64), 255, np.uint8)).save(references / "a_phone.png")
    tifffile.imwrite(folder / "b_scan.tif", np.arange(48 * 56, dtype=np.int16).reshape(48, 56))
    viewer, widget = open_focus_widget()
    series = widget.series
    series.prefetch.value = False
    series.references.value = references
    open_series(series, folder)
    shapes = {}
    for _ in range(2):
        qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
        labels, image = _labels_and_image(viewer)
        shapes[series.shown_key] = (image.data.shape[:2], labels.data.shape)
        series.next()
    assert shapes == {"a_phone.jpg": ((64, 40), (64, 40)), "b_scan.tif": ((48, 56), (48, 56))}
    for key in shapes:
        assert series.state.queue.item(key).status is Status.PROPOSED, key
    assert not uncaught


def test_ordering_by_uncertainty_keeps_a_missing_image_as_it_was(
    qtbot, open_series, shown_series, mixed_folder, tmp_path
):
    """An image the last scan did not find (moved away, a drive not mounted) is not
    scored: it is not marked failed, and keeps the decision made on it."""
    for name in ("b_rgb.jpg", "c_16bit.tif", "d_planes.tif", "f_text.png"):
        (mixed_folder / name).unlink()
    _viewer, _widget, series = shown_series(mixed_folder)
    series.state.mark("e_rgba.png", Status.SKIPPED)
    (mixed_folder / "e_rgba.png").rename(tmp_path / "e_rgba.png")
    open_series(series, mixed_folder)
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    assert series.state.queue.item("e_rgba.png").missing
    series.order_by_uncertainty()
    qtbot.waitUntil(lambda: not series.busy and not series._rank_wanted, timeout=WAIT_MS)
    item = series.state.queue.item("e_rgba.png")
    assert (item.status, item.failure) == (Status.SKIPPED, None)
    assert [i.key for i in series.state.queue] == ["a_gray.png", "e_rgba.png"]


def test_the_start_masks_folder_is_listed_once_until_it_changes(
    open_series, open_focus_widget, photo_crops, tmp_path
):
    """A start mask not read ahead (a small image shown at once, the quality line of an
    Accept) is looked up on the GUI thread: the folder of masks (20,000 files take 0.2 s
    to list) is listed again only after a mask was added, removed or renamed in it."""
    import os

    images = photo_crops(2)
    masks = tmp_path / "start masks"
    masks.mkdir()
    half = np.zeros((64, 96), np.uint8)
    half[:, :30] = 255
    Image.fromarray(half).save(masks / "img0.png")
    _viewer, widget = open_focus_widget()
    series = widget.series
    series.prefetch.value = False
    series.references.value = masks
    open_series(series, images)
    first = series._start_masks_listed(masks)
    assert first.find(images / "img1.png") is None
    assert series._start_masks_listed(masks) is first  # not listed again
    item = series.state.queue.item("img0.png")
    assert series._start_mask(item).mean() == pytest.approx(30 / 96)
    Image.fromarray(half).save(masks / "img1.png")  # a mask added meanwhile
    stamp = masks.stat()
    os.utime(masks, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))  # coarse clocks
    assert series._start_masks_listed(masks).find(images / "img1.png") == masks / "img1.png"
