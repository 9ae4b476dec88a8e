"""The series' file work off the GUI thread, without napari: the autosave writer (order,
failures, waiting) and the files read ahead with an image (stamps, eviction)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from napari_focus.atomic import WriteError
from napari_focus.series import autosave_writer as writer_module
from napari_focus.series import load_or_create
from napari_focus.series.autosave_writer import AutosaveWriter
from napari_focus.series.decoded import DecodedImages
from napari_focus.series.item_files import ItemFiles, read_item_files, still_current
from napari_focus.series.proposal_store import ProposalStore


@pytest.fixture
def state(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.full((12, 16, 3), 40 * i, np.uint8)).save(images / f"p{i}.png")
    return load_or_create(tmp_path / "series", images)


def _mask(top: int) -> np.ndarray:
    mask = np.zeros((12, 16), bool)
    mask[top:, :4] = True
    return mask


def test_the_last_edits_of_an_image_land_last(state, monkeypatch):
    threads: list[str] = []
    original = writer_module.write_mask

    def recording(path, mask):
        threads.append(threading.current_thread().name)
        return original(path, mask)

    monkeypatch.setattr(writer_module, "write_mask", recording)
    called = threading.Event()
    writer = AutosaveWriter(called.set)
    path = state.autosave_path("p0.png")
    jobs = [writer.submit("p0.png", path, _mask(top), {"top": top}, state) for top in (1, 5, 9)]
    assert writer.wait(30) and called.is_set()
    done = writer.take_done()
    assert [result.job for result in done] == jobs and all(r.error is None for r in done)
    assert threads == ["napari-focus autosave"] * 3
    state.record_autosave("p0.png")
    np.testing.assert_array_equal(state.load_autosaved("p0.png"), _mask(9))
    assert state.autosaved_provenance("p0.png") == {"top": 9}
    assert still_current(done[-1].stamp, path)
    item = state.queue.item("p0.png")
    assert item.autosaved and item.autosave_of == item.fingerprint["sha256"]
    assert not writer.busy and writer.take_done() == []


def test_a_failed_write_is_reported_and_the_next_job_still_runs(state, tmp_path):
    writer = AutosaveWriter()
    blocked = tmp_path / "a file, not a folder"
    blocked.write_text("")
    failing = writer.submit("p0.png", blocked / "p0.png", _mask(2), None, state)
    written = writer.submit("p1.png", state.autosave_path("p1.png"), _mask(3), None, state)
    assert writer.wait(30)
    first, second = writer.take_done()
    assert first.job is failing and isinstance(first.error, WriteError)
    assert second.job is written and second.error is None
    assert state.autosave_path("p1.png").is_file()


def test_wait_gives_up_after_its_timeout(state, monkeypatch):
    gate = threading.Event()
    original = writer_module.write_autosave_files
    monkeypatch.setattr(
        writer_module, "write_autosave_files", lambda *args: gate.wait(30) and original(*args)
    )
    writer = AutosaveWriter()
    writer.submit("p0.png", state.autosave_path("p0.png"), _mask(1), None, state)
    assert writer.busy and not writer.wait(0.05)
    gate.set()
    assert writer.wait(30) and writer.take_done()[0].error is None


def test_files_read_ahead_say_when_they_changed(state):
    store = ProposalStore(state.output_folder, "model")
    path = state.autosave_path("p0.png")
    nothing = read_item_files(path, store, "p0.png", state.queue.item("p0.png").path)
    assert nothing.autosave_read and nothing.autosave is None and nothing.proposal is None
    assert nothing.proposal_folder == store.folder
    assert still_current(nothing.autosave_stamp, path)

    state.autosave("p0.png", _mask(4), {"task": "sod"})
    source = state.queue.item("p0.png").path
    probability = np.linspace(0, 1, 12 * 16, dtype=np.float32).reshape(12, 16)
    store.save("p0.png", source, probability, (probability > 0.5).astype(np.uint8), 0.25)
    assert not still_current(nothing.autosave_stamp, path)
    assert not still_current(nothing.proposal_stamp, store.path("p0.png"))
    files = read_item_files(path, store, "p0.png", source)
    np.testing.assert_array_equal(files.autosave, _mask(4))
    assert files.provenance == {"task": "sod"}
    assert files.proposal_folder is None  # the autosave is shown: its proposal not read
    assert still_current(files.autosave_stamp, path)
    state.autosave("p0.png", _mask(7))  # replaced: the stamp no longer matches
    assert not still_current(files.autosave_stamp, path)
    state.discard_autosaved("p0.png")
    files = read_item_files(path, store, "p0.png", source)
    assert files.autosave is None and files.proposal_folder == store.folder
    assert files.proposal is not None and files.proposal.uncertainty == 0.25
    assert still_current(files.proposal_stamp, store.path("p0.png"))
    assert read_item_files(path, None, "p0.png", source).proposal_folder is None


def test_the_exported_mask_of_an_accepted_image_is_read_ahead(state, tmp_path):
    path, source = state.autosave_path("p0.png"), state.queue.item("p0.png").path
    exported = tmp_path / "dataset" / "p0.png"
    exported.parent.mkdir()
    Image.fromarray(_mask(5).astype(np.uint8) * 255).save(exported)
    files = read_item_files(path, None, "p0.png", source, exported=exported)
    np.testing.assert_array_equal(files.exported_mask, _mask(5))
    assert files.exported_path == exported and still_current(files.exported_stamp, exported)
    assert files.nbytes == _mask(5).nbytes
    exported.write_bytes(b"not a png")  # replaced: the stamp no longer matches
    assert not still_current(files.exported_stamp, exported)
    unreadable = read_item_files(path, None, "p0.png", source, exported=exported)
    assert unreadable.exported_mask is None and unreadable.exported_path == exported
    exported.unlink()
    gone = read_item_files(path, None, "p0.png", source, exported=exported)
    assert gone.exported_mask is None and gone.exported_stamp is None
    state.autosave("p0.png", _mask(4))  # edits since the export are shown instead
    assert read_item_files(path, None, "p0.png", source, exported=exported).exported_path is None


def test_files_go_with_their_pixels():
    decoded = DecodedImages(capacity=2, max_bytes=10**9)
    files = ItemFiles(autosave_read=True, autosave=np.ones((1000, 1000), bool))
    decoded.put_files("a", files)  # no pixels: nothing kept
    assert decoded.files("a") is None
    decoded.put("a", np.zeros(10, np.uint8), files)
    decoded.put("a", np.zeros(10, np.uint8))  # pixels again, from the prefetch
    assert decoded.files("a") is files and decoded.nbytes == 10 + 1_000_000
    decoded.put("b", np.zeros(10, np.uint8))
    decoded.put("c", np.zeros(10, np.uint8))  # "a" evicted, its files with it
    assert decoded.files("a") is None and "a" not in decoded


def test_a_file_that_cannot_be_looked_at_is_not_taken_as_current(state, monkeypatch):
    path = state.autosave_path("p0.png")
    files = read_item_files(path, None, "p0.png", state.queue.item("p0.png").path)
    assert still_current(files.autosave_stamp, path)

    def refused(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("napari_focus.series.merge.os.stat", refused)
    assert not still_current(files.autosave_stamp, path)  # read (and reported) on showing


def test_a_stack_of_small_pages_declares_all_its_pixels(tmp_path):
    import tifffile

    from napari_focus.series.images import declared_pixels

    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((40, 100, 120), np.uint8))  # 40 small pages
    assert declared_pixels(stack) == 40 * 100 * 120  # not decoded at once on the GUI thread
    single = tmp_path / "single.png"
    Image.fromarray(np.zeros((100, 120), np.uint8)).save(single)
    assert declared_pixels(single) == 100 * 120
