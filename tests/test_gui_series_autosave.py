"""Autosaves written off the GUI thread and series files read ahead with the images: the
edits left on an image are shown when the user comes back however soon, Accept exports
them, a failed write is said and its edits kept, closing waits for the writes (real
napari viewer under Xvfb)."""

from __future__ import annotations

import errno
import threading

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

from napari_focus.atomic import atomic_write  # noqa: E402
from napari_focus.gui import dialogs  # noqa: E402
from napari_focus.gui import series_opening as opening_module  # noqa: E402
from napari_focus.gui.series_layers import series_layer  # noqa: E402
from napari_focus.series import Status  # noqa: E402
from napari_focus.series import autosave_writer as writer_module  # noqa: E402
from napari_focus.series import item_files as item_files_module  # noqa: E402
from napari_focus.series import state as state_module  # noqa: E402
from napari_focus.series.proposal_store import ProposalStore  # noqa: E402

WAIT_MS = 120_000
MAIN = threading.main_thread().name


@pytest.fixture
def folder(tmp_path, focus_reference):
    source = Image.open(focus_reference / "input.png").convert("RGB")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        source.crop((i * 20, 0, i * 20 + 96, 64)).save(images / f"img{i}.png")
    return images


class Writes:
    """The autosave writes: (file name, thread) of each; ``gate`` cleared holds them;
    ``full`` makes them fail as on a full disk."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.full = False


@pytest.fixture
def writes(monkeypatch) -> Writes:
    record = Writes()
    original = writer_module.write_mask

    def recording(path, mask):
        record.seen.append((path.name, threading.current_thread().name))
        assert record.gate.wait(60)
        if record.full:

            def no_space(_tmp):
                raise OSError(errno.ENOSPC, "No space left on device")

            return atomic_write(path, no_space)
        return original(path, mask)

    monkeypatch.setattr(writer_module, "write_mask", recording)
    return record


def _paint(viewer, rows: slice, cols: slice) -> np.ndarray:
    labels = series_layer(viewer, "labels")
    edited = np.zeros_like(labels.data)
    edited[rows, cols] = 1
    labels.data = edited
    return edited > 0


def _shown_mask(viewer) -> np.ndarray:
    return np.asarray(series_layer(viewer, "labels").data) > 0


def test_autosave_is_written_off_the_gui_thread(
    qtbot, shown_series, folder, writes
):
    viewer, _, series = shown_series(folder)
    edited = _paint(viewer, slice(5, 40), slice(10, 60))
    series.next()
    assert series.shown_key == "img1.png"
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    assert writes.seen == [(series.state.autosave_path("img0.png").name, "napari-focus autosave")]
    item = series.state.queue.item("img0.png")
    assert item.autosaved and item.status is Status.CORRECTED
    assert item.autosave_of == item.fingerprint["sha256"]  # stale detection still works
    np.testing.assert_array_equal(series.state.load_autosaved("img0.png"), edited)
    assert state_module.read_state_file(series.state.state_path)["items"][0]["autosaved"]


def test_edits_left_are_shown_when_coming_back_at_once(
    qtbot, shown_series, folder, writes
):
    """Next then Previous while the autosave is still being written: the edits just made
    are on screen (not the older autosave on disk), and the write lands after."""
    viewer, _, series = shown_series(folder)
    first = _paint(viewer, slice(0, 20), slice(0, 20))
    series.next()
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    series.previous()
    np.testing.assert_array_equal(_shown_mask(viewer), first)
    second = _paint(viewer, slice(30, 60), slice(40, 90))
    writes.gate.clear()  # the disk is slow: the write of the second edits waits
    series.next()
    series.previous()
    assert series.shown_key == "img0.png"
    np.testing.assert_array_equal(_shown_mask(viewer), second)
    assert series.autosaves.busy
    np.testing.assert_array_equal(series.state.load_autosaved("img0.png"), first)  # on disk
    writes.gate.set()
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    np.testing.assert_array_equal(series.state.load_autosaved("img0.png"), second)
    series.next()  # unchanged: nothing written again
    series.previous()
    np.testing.assert_array_equal(_shown_mask(viewer), second)
    assert len(writes.seen) == 2


def test_previous_at_the_first_image_stays_with_its_edits_and_asks_nothing(
    qtbot, shown_series, folder, writes, monkeypatch
):
    """No image before the first (none after the last): the image and its edits stay on
    screen, and "unsaved edits: ask" asks nothing (a "No" threw the edits away)."""
    questions: list[str] = []
    monkeypatch.setattr(dialogs, "ask_yes_no", lambda _p, q, **_kw: questions.append(q) or False)
    viewer, _, series = shown_series(folder)
    series.on_leave.value = "ask"
    edited = _paint(viewer, slice(5, 40), slice(10, 60))
    layer = series_layer(viewer, "labels")
    series.previous()
    assert series.shown_key == "img0.png" and questions == []
    assert series_layer(viewer, "labels") is layer  # not shown again: its undo history kept
    np.testing.assert_array_equal(_shown_mask(viewer), edited)
    assert writes.seen == [] and "1 / 4" in series.position.value
    series.on_leave.value = "autosave"
    series.jump_to.value = 4  # the last one
    assert series.shown_key == "img3.png"
    series.on_leave.value = "ask"
    last = _paint(viewer, slice(0, 10), slice(0, 10))
    series.next()
    assert series.shown_key == "img3.png" and questions == []
    np.testing.assert_array_equal(_shown_mask(viewer), last)
    monkeypatch.setattr(dialogs, "ask_yes_no", lambda _p, q, **_kw: True)  # napari closes


@pytest.mark.parametrize("on_leave", ["ask", "autosave"])
def test_accept_at_the_last_image_leaves_no_edits_behind(
    qtbot, shown_series, folder, writes, tmp_path, monkeypatch, on_leave
):
    """Accept at the last image: the accepted mask is what is on screen, so moving away
    asks nothing and autosaves nothing."""
    questions: list[str] = []
    monkeypatch.setattr(dialogs, "ask_yes_no", lambda _p, q, **_kw: questions.append(q) or True)
    viewer, widget, series = shown_series(folder)
    series.jump_to.value = 4
    qtbot.waitUntil(lambda: series.shown_key == "img3.png" and series.proposal_ready,
                    timeout=WAIT_MS)  # fmt: skip
    _paint(viewer, slice(8, 50), slice(12, 70))
    widget.export_section.dataset_root.value = tmp_path / "datasets"
    series.on_leave.value = on_leave
    series.accept()
    item = series.state.queue.item("img3.png")
    qtbot.waitUntil(lambda: item.status is Status.ACCEPTED and not series.busy, timeout=WAIT_MS)
    assert series.shown_key == "img3.png"
    series.previous()
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    assert series.shown_key == "img2.png" and questions == [] and not item.autosaved


def test_accept_right_after_coming_back_exports_the_edits(
    qtbot, shown_series, folder, writes, tmp_path
):
    viewer, widget, series = shown_series(folder)
    edited = _paint(viewer, slice(8, 50), slice(12, 70))
    writes.gate.clear()
    series.next()
    series.previous()  # the autosave is not written yet
    widget.export_section.dataset_root.value = tmp_path / "datasets"
    widget.export_section.dataset_layout.value = "generic"
    threading.Timer(0.5, writes.gate.set).start()  # written while the export runs
    series.accept()
    qtbot.waitUntil(lambda: series.shown_key == "img1.png", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    exported = np.asarray(Image.open(tmp_path / "datasets" / "masks" / "img0.png")) > 128
    np.testing.assert_array_equal(exported, edited)
    item = series.state.queue.item("img0.png")
    assert item.status is Status.ACCEPTED and not item.autosaved
    # the autosave written late never comes back after Accept removed it
    assert not series.state.autosave_path("img0.png").exists()


def test_a_failed_background_write_is_said_and_its_edits_kept(
    qtbot, shown_series, folder, writes, series_errors, monkeypatch
):
    viewer, widget, series = shown_series(folder)
    edited0 = _paint(viewer, slice(5, 30), slice(5, 30))
    writes.full = True
    series.next()  # the write fails in the background
    assert series.shown_key == "img1.png"
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    assert series_errors and "could not save your edits of 'img0" in series_errors[-1]
    said = series_errors[-1]
    assert "the disk is full" in said and "free some space" in said.lower()
    assert "go back to that image" in series_errors[-1] and "OSError" not in series_errors[-1]
    assert not series.state.queue.item("img0.png").autosaved
    assert not series.state.autosave_path("img0.png").exists()

    series.previous()  # the edits are kept, in memory
    np.testing.assert_array_equal(_shown_mask(viewer), edited0)
    series.next()  # written again on leaving: fails again, said again; img0 unedited: left
    assert series.shown_key == "img1.png"
    edited1 = _paint(viewer, slice(20, 50), slice(30, 80))
    series_errors.clear()
    series.next()  # img1's own edits cannot be written: it stays, as they do
    assert series.shown_key == "img1.png"
    np.testing.assert_array_equal(_shown_mask(viewer), edited1)
    assert any("Your edits are still in the viewer" in text for text in series_errors)

    questions: list[str] = []
    monkeypatch.setattr(dialogs, "ask_yes_no", lambda _p, q: questions.append(q) or False)
    window = widget.native.window()
    window.show()
    assert not window.close()  # "No": napari stays open with the edits
    assert questions and "lose your edits of" in questions[-1]
    assert "'img0" in questions[-1] and "'img1" in questions[-1]

    writes.full = False  # space freed
    series.next()
    assert series.shown_key == "img2.png"
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    np.testing.assert_array_equal(series.state.load_autosaved("img0.png"), edited0)
    np.testing.assert_array_equal(series.state.load_autosaved("img1.png"), edited1)
    assert not series.autosaves.pending
    monkeypatch.setattr(dialogs, "ask_yes_no", lambda _p, q: True)


def test_opening_another_folder_with_edits_that_cannot_be_saved_changes_nothing(
    qtbot, shown_series, folder, writes, series_errors, tmp_path, monkeypatch
):
    """The edits on screen cannot be written: the other folder is not opened, and the
    Series tab's fields still name the series on screen."""
    monkeypatch.setattr(dialogs, "ask_yes_no", lambda _p, q: True)  # napari closes at the end
    viewer, _widget, series = shown_series(folder)
    placeholder = series.output.line_edit.native.placeholderText()
    edited = _paint(viewer, slice(5, 30), slice(5, 30))
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(other / "a.png")
    writes.full = True
    series.open(other)
    assert series.shown_key == "img0.png" and not series.busy
    assert "Your edits are still in the viewer" in series_errors[-1]
    assert series.folder.value == folder
    assert series.output.line_edit.native.placeholderText() == placeholder
    np.testing.assert_array_equal(_shown_mask(viewer), edited)


@pytest.mark.parametrize("closing", ["the dock's ×", "napari"])
def test_closing_writes_the_edits_left(
    qtbot, shown_series, folder, writes, closing
):
    viewer, widget, series = shown_series(folder)
    state = series.state
    edited = _paint(viewer, slice(10, 40), slice(20, 70))
    writes.gate.clear()
    series.next()
    assert not state.autosave_path("img0.png").exists()
    threading.Timer(0.3, writes.gate.set).start()
    if closing == "napari":
        viewer.close()  # waits for the write
    else:
        viewer.window.remove_dock_widget(widget.native)  # waits for the write
        saved = state_module.read_state_file(state.state_path)["items"]
        assert next(entry for entry in saved if entry["key"] == "img0.png")["autosaved"]
    np.testing.assert_array_equal(state.load_autosaved("img0.png"), edited)


@pytest.fixture
def read_on(monkeypatch) -> dict[str, list[str]]:
    """Threads that read autosaves (``autosave``) and stored proposals (``proposal``)."""
    seen: dict[str, list[str]] = {"autosave": [], "proposal": []}
    original_read, original_load = item_files_module.read_mask_file, ProposalStore.load

    def read(path):
        seen["autosave"].append(threading.current_thread().name)
        return original_read(path)

    def load(self, key, source):
        seen["proposal"].append(threading.current_thread().name)
        return original_load(self, key, source)

    monkeypatch.setattr(item_files_module, "read_mask_file", read)
    monkeypatch.setattr(state_module, "read_mask_file", read)
    monkeypatch.setattr(ProposalStore, "load", load)
    return seen


def test_large_images_read_their_autosave_and_proposal_in_the_worker(
    qtbot, shown_series, folder, read_on, monkeypatch
):
    """Images over the size read at once on the GUI thread: their autosave and stored
    proposal are read with their pixels, never on the GUI thread, also after reopening."""
    monkeypatch.setattr(opening_module, "INLINE_READ_PIXELS", 0)
    viewer, _, series = shown_series(folder)
    edited = _paint(viewer, slice(3, 33), slice(7, 77))
    series.next()
    qtbot.waitUntil(lambda: series.shown_key == "img1.png", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    series.previous()
    qtbot.waitUntil(lambda: series.shown_key == "img0.png", timeout=WAIT_MS)
    np.testing.assert_array_equal(_shown_mask(viewer), edited)
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    viewer.close()

    viewer2, _, series2 = shown_series(folder)
    assert series2.shown_key == "img0.png"
    np.testing.assert_array_equal(_shown_mask(viewer2), edited)
    series2.next()  # its proposal, stored by the first viewer
    qtbot.waitUntil(lambda: series2.shown_key == "img1.png", timeout=WAIT_MS)
    assert series2.proposal_ready
    qtbot.waitUntil(lambda: not series2.busy, timeout=WAIT_MS)
    assert read_on["autosave"] and read_on["proposal"]
    assert MAIN not in read_on["autosave"] and MAIN not in read_on["proposal"]


def test_large_images_read_their_start_mask_in_the_worker(
    qtbot, open_series, open_focus_widget, folder, tmp_path, monkeypatch
):
    """A start mask (the 'start masks' folder) of a large image is read with its pixels,
    never on the GUI thread, and is what the image is shown with."""
    from napari_focus.series import references as references_module

    monkeypatch.setattr(opening_module, "INLINE_READ_PIXELS", 0)
    read_by: list[str] = []
    for module in (item_files_module, references_module):
        original = module.read_mask_file

        def read(path, original=original):
            read_by.append(threading.current_thread().name)
            return original(path)

        monkeypatch.setattr(module, "read_mask_file", read)
    masks = tmp_path / "start masks"
    masks.mkdir()
    start = np.zeros((64, 96), np.uint8)
    start[10:40, 20:60] = 255
    for i in range(4):
        Image.fromarray(start).save(masks / f"img{i}.png")
    viewer, widget = open_focus_widget()
    series = widget.series
    series.prefetch.value = False
    series.references.value = masks
    open_series(series, folder)
    qtbot.waitUntil(lambda: series.shown_key == "img0.png" and not series.busy, timeout=WAIT_MS)
    np.testing.assert_array_equal(_shown_mask(viewer), start > 0)
    series.next()
    qtbot.waitUntil(lambda: series.shown_key == "img1.png" and not series.busy, timeout=WAIT_MS)
    np.testing.assert_array_equal(_shown_mask(viewer), start > 0)
    assert read_by and MAIN not in read_by


def test_an_autosave_damaged_on_disk_is_said_and_the_proposal_shown(
    qtbot, shown_series, folder, monkeypatch
):
    """An autosave that cannot be read (a disk fault) is named in an error, and the
    image shows its proposal; nothing raises out of the widget."""
    from napari_focus.gui import series_section

    errors: list[str] = []
    monkeypatch.setattr(series_section, "show_error", errors.append)
    viewer, _, series = shown_series(folder)
    _paint(viewer, slice(0, 20), slice(0, 20))
    series.next()
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    series.state.autosave_path("img0.png").write_bytes(b"\x89PNG\r\n\x1a\n damaged")
    series.previous()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert series.shown_key == "img0.png"
    assert any("the autosaved mask of img0 cannot be used" in e for e in errors), errors


def test_edits_shown_under_another_task_keep_the_name_of_their_task(
    qtbot, shown_series, folder, writes
):
    """Edits of a sod proposal, shown again after the task changed to cod: the layer
    says sod (what the mask is), not the task chosen since."""
    viewer, widget, series = shown_series(folder)
    edited = _paint(viewer, slice(5, 40), slice(10, 60))
    series.next()
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)
    widget.task.value = "cod"
    series.previous()
    qtbot.waitUntil(lambda: series.proposal_ready, timeout=WAIT_MS)
    labels = series_layer(viewer, "labels")
    np.testing.assert_array_equal(np.asarray(labels.data) > 0, edited)
    assert labels.name == "img0 [FOCUS SOD]"
