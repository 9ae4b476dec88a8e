"""Series labeling core: queue, resumable state, autosave, existing masks, prefetch plan
(the `rank` command: test_series_rank.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_focus.io import read_image
from napari_focus.series import (
    STATE_NAME,
    VERSION,
    ImageQueue,
    SeriesStateError,
    Status,
    export_record,
    find_reference_mask,
    load_or_create,
    reference_mask_path,
    scan_folder,
    work_name,
)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for name in ["a.png", "b10.png", "b2.jpg", "sub/c.tif", "sub/deep/d.PNG", ".hidden.png",
                 ".cache/e.png", "notes.txt"]:  # fmt: skip
        touch(root / name)
    return root


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


# --- queue ------------------------------------------------------------------------------


def test_scan_folder_recursion_glob_and_extensions(folder):
    assert scan_folder(folder) == ["a.png", "b2.jpg", "b10.png"]  # natural order
    assert scan_folder(folder, recursive=True) == [
        "a.png", "b2.jpg", "b10.png", "sub/c.tif", "sub/deep/d.PNG",
    ]  # fmt: skip
    assert scan_folder(folder, pattern="b*") == ["b2.jpg", "b10.png"]
    assert scan_folder(folder, recursive=True, pattern="sub/*") == ["sub/c.tif", "sub/deep/d.PNG"]
    assert scan_folder(folder, recursive=True, pattern="*.png") == [
        "a.png", "b10.png", "sub/deep/d.PNG",
    ]  # fmt: skip
    assert scan_folder(folder, extensions=("png",)) == ["a.png", "b10.png"]
    assert scan_folder(folder, recursive=True, exclude=[folder / "sub"]) == [
        "a.png", "b2.jpg", "b10.png",
    ]  # fmt: skip
    with pytest.raises(NotADirectoryError):
        scan_folder(folder / "a.png")


def test_scan_folder_lists_a_stem_before_the_longer_stems_it_begins(tmp_path: Path):
    names = ["gray16.png", "gray.png", "frame10.png", "frame.png", "frame2.png", "Frame1.png",
             "photo2.jpeg", "photo.jpg", "b/x.png", "b.png", "².png", "a/²/c.png",
             "٣.png"]  # fmt: skip
    for name in names:
        touch(tmp_path / name)
    assert scan_folder(tmp_path, recursive=True) == [
        "٣.png", "a/²/c.png", "b/x.png", "b.png", "frame.png", "Frame1.png", "frame2.png",
        "frame10.png", "gray.png", "gray16.png", "photo.jpg", "photo2.jpeg", "².png",
    ]  # fmt: skip


def test_scan_folder_counts_what_it_finds_and_stops_when_told(tmp_path, monkeypatch):
    from napari_focus.series import scan

    monkeypatch.setattr(scan, "FOUND_EVERY", 2)
    for i in range(5):
        touch(tmp_path / f"img{i}.png")
    touch(tmp_path / "sub" / "img5.png")
    counts: list[int] = []
    assert len(scan_folder(tmp_path, recursive=True, found=counts.append)) == 6
    assert counts == [2, 4, 5, 6]  # every 2 images, and once per folder listed

    def enough(count: int) -> None:
        raise InterruptedError(f"{count} are enough")

    with pytest.raises(InterruptedError, match="2 are enough"):
        load_or_create(tmp_path / "series", tmp_path, found=enough)
    assert not (tmp_path / "series").exists()  # stopped before any state was written


def test_images_of_one_stem_are_named_with_their_extension(tmp_path):
    for name in ("cat.png", "Cat.JPG", "dog.png", "sub/cat.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (40, 40)).save(tmp_path / name)
    queue = ImageQueue.from_folder(tmp_path, recursive=True)
    names = {item.key: item.name for item in queue}
    assert names == {"Cat.JPG": "Cat.JPG", "cat.png": "cat.png", "dog.png": "dog",
                     "sub/cat.png": "cat"}  # fmt: skip
    # a series saved when they were both "cat" names them apart when reopened
    state = load_or_create(tmp_path / "series", tmp_path, recursive=True)
    for item in state.queue:
        item.name = Path(item.key).stem
    state.save()
    reopened = load_or_create(tmp_path / "series", tmp_path, recursive=True)
    assert {item.key: item.name for item in reopened.queue} == names


def test_queue_items_and_navigation(folder):
    queue = ImageQueue.from_folder(folder, recursive=True)
    assert [item.name for item in queue] == ["a", "b2", "b10", "c", "d"]
    assert queue[3].key == "sub/c.tif" and queue[3].path == folder.resolve() / "sub/c.tif"
    assert all(item.status is Status.PENDING for item in queue)
    assert queue.current.key == "a.png" and queue.position_text() == "1 / 5"

    assert queue.next().key == "b2.jpg"
    queue.record_export("b10.png", {"layout": "DUTS", "name": "b10"})
    queue.mark(3, Status.REJECTED)
    assert queue.next().key == "sub/c.tif"  # the exported item is passed over
    assert queue.previous().key == "b2.jpg"
    assert queue.next(include_exported=True).key == "b10.png"
    queue.jump(-1)
    assert queue.index == 4 and queue.next() is None and queue.index == 4  # end: stay
    assert queue.upcoming(5) == []
    queue.jump(0)
    assert queue.upcoming(2) == [1, 3]
    assert queue.upcoming(2, include_exported=True) == [1, 2]
    queue.skip_exported = False
    assert queue.upcoming(2) == [1, 2]
    with pytest.raises(IndexError):
        queue.jump(5)
    assert queue.previous() is None and queue.index == 0

    counts = queue.counts()
    assert counts[Status.ACCEPTED] == 1 and counts[Status.REJECTED] == 1
    assert counts[Status.PENDING] == 3 and sum(counts.values()) == 5
    item = queue.mark(None, "skipped")
    assert item.key == "a.png" and item.status is Status.SKIPPED and item.updated
    with pytest.raises(ValueError):
        queue.mark(0, "done")
    with pytest.raises(KeyError):
        queue.mark("missing.png", Status.ACCEPTED)
    assert queue.first_open() == 0


def test_queue_from_layer_names():
    queue = ImageQueue.from_names(["cells", "nuclei", "cells", "tissue"])
    assert queue.keys() == ["cells", "nuclei", "tissue"]
    assert queue[0].path is None and queue[0].name == "cells"
    assert ImageQueue.from_names([]).current is None
    assert ImageQueue.from_names([]).position_text() == "0 / 0"


def test_order_by_keeps_the_current_item(folder):
    queue = ImageQueue.from_folder(folder)  # a, b2, b10
    queue.jump(1)
    queue.order_by({"a.png": 0.2, "b10.png": 0.9})  # b2 has no score: last
    assert queue.keys() == ["b10.png", "a.png", "b2.jpg"]
    assert queue.current.key == "b2.jpg" and queue.index == 2
    queue.order_by([0.5, 0.5, math.nan], descending=False)  # ties keep their order
    assert queue.keys() == ["b10.png", "a.png", "b2.jpg"]
    queue.order_by([3, 1, 2], descending=False)
    assert queue.keys() == ["a.png", "b2.jpg", "b10.png"] and queue.current.key == "b2.jpg"
    queue.reorder(["b10.png", "b2.jpg", "a.png"])
    assert queue.keys() == ["b10.png", "b2.jpg", "a.png"]
    with pytest.raises(ValueError):
        queue.order_by([1.0])
    with pytest.raises(ValueError):
        queue.reorder(["a.png"])


# --- persistence ------------------------------------------------------------------------


def test_state_round_trip_resumes_order_statuses_and_position(folder):
    output = folder / "focus_out"  # inside the image folder: must not be scanned
    state = load_or_create(output, folder, recursive=True)
    assert state.recovered_from is None
    assert (output / STATE_NAME).is_file()
    queue = state.queue
    assert len(queue) == 5
    state.record_export("a.png", {"layout": "DUTS", "name": "a", "mask": "DUTS/a.png"})
    state.mark("sub/c.tif", Status.REJECTED)
    queue.order_by({"sub/deep/d.PNG": 3, "b10.png": 2})
    queue.jump(queue.index_of("b10.png"))
    state.save()
    write_png(output / "work" / "x.png", np.zeros((2, 2), np.uint8))  # in output: ignored

    saved = json.loads((output / STATE_NAME).read_text(encoding="utf-8"))
    assert saved["version"] == VERSION and saved["folder"] == ".."
    assert saved["current"] == "b10.png"
    assert saved["items"][0]["key"] == "sub/deep/d.PNG"

    (folder / "b2.jpg").unlink()
    touch(folder / "z.png")
    resumed = load_or_create(output, folder, recursive=True)
    q = resumed.queue
    assert q.keys() == ["sub/deep/d.PNG", "b10.png", "a.png", "sub/c.tif", "z.png"]
    assert q.current.key == "b10.png"
    assert q.item("a.png").status is Status.ACCEPTED
    assert q.item("a.png").export["mask"] == "DUTS/a.png"
    assert q.item("sub/c.tif").status is Status.REJECTED
    assert q.item("z.png").status is Status.PENDING
    assert q.next().key == "sub/c.tif"  # a.png is exported: passed over
    assert q.item("sub/c.tif").path == folder.resolve() / "sub/c.tif"


def test_resume_when_the_current_image_vanished_goes_to_the_first_open_one(folder, tmp_path):
    state = load_or_create(tmp_path / "out", folder)
    state.record_export("a.png", {"name": "a"})
    state.queue.jump(2)
    state.save()
    (folder / "b10.png").unlink()
    resumed = load_or_create(tmp_path / "out", folder)
    assert resumed.queue.current.key == "b2.jpg"


def test_state_of_layer_names(tmp_path):
    state = load_or_create(tmp_path / "out", names=["cells", "nuclei"])
    state.mark("nuclei", Status.CORRECTED)
    state.queue.jump(1)
    state.save()
    resumed = load_or_create(tmp_path / "out", names=["cells", "nuclei", "new"])
    assert resumed.queue.keys() == ["cells", "nuclei", "new"]
    assert resumed.queue.current.key == "nuclei"
    assert resumed.queue.item("nuclei").status is Status.CORRECTED
    with pytest.raises(ValueError):
        load_or_create(tmp_path / "out")


@pytest.mark.parametrize(
    "content",
    ["{not json", "[]", '{"schema": "other", "version": 1, "items": []}',
     '{"schema": "napari-focus-queue", "version": 1, "items": [{"key": 3}]}',
     '{"schema": "napari-focus-queue", "version": 1, "items": [{"key": "a.png", "status": "x"}]}',
     '{"schema": "napari-focus-queue", "version": "1", "items": []}'],
)  # fmt: skip
def test_corrupt_state_is_backed_up_or_refused(folder, tmp_path, content):
    output = tmp_path / "out"
    output.mkdir()
    (output / STATE_NAME).write_text(content, encoding="utf-8")
    with pytest.raises(SeriesStateError):
        load_or_create(output, folder, on_corrupt="raise")
    assert (output / STATE_NAME).read_text(encoding="utf-8") == content

    state = load_or_create(output, folder)
    assert state.recovered_from is not None
    assert state.recovered_from.read_text(encoding="utf-8") == content
    assert state.recovered_from.name.startswith(STATE_NAME + ".bad-")
    assert all(item.status is Status.PENDING for item in state.queue)
    assert json.loads((output / STATE_NAME).read_text(encoding="utf-8"))["version"] == VERSION


def test_newer_state_version_is_never_overwritten(folder, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    content = json.dumps({"schema": "napari-focus-queue", "version": 99, "items": []})
    (output / STATE_NAME).write_text(content, encoding="utf-8")
    with pytest.raises(SeriesStateError, match="version 99"):
        load_or_create(output, folder)
    assert (output / STATE_NAME).read_text(encoding="utf-8") == content
    assert list(output.iterdir()) == [output / STATE_NAME]


def test_autosave_and_load(folder, tmp_path):
    state = load_or_create(tmp_path / "out", folder, recursive=True)
    assert state.load_autosaved("a.png") is None
    mask = np.zeros((6, 8), bool)
    mask[2:4, 1:5] = True
    path = state.autosave("sub/c.tif", mask.astype(np.uint8) * 7)
    assert path == tmp_path / "out" / "work" / f"{work_name('sub/c.tif')}.png"
    assert work_name("sub/deep/d.PNG").startswith("sub%2Fdeep%2Fd.PNG~")
    assert set(np.unique(read_image(path))) == {0, 255}
    item = state.queue.item("sub/c.tif")
    assert item.autosaved and item.status is Status.CORRECTED

    resumed = load_or_create(tmp_path / "out", folder, recursive=True)
    assert resumed.queue.item("sub/c.tif").autosaved
    np.testing.assert_array_equal(resumed.load_autosaved("sub/c.tif"), mask)
    resumed.mark("sub/c.tif", Status.REJECTED)
    resumed.autosave("sub/c.tif", mask)  # a decided status is kept
    assert resumed.queue.item("sub/c.tif").status is Status.REJECTED
    resumed.discard_autosaved("sub/c.tif")
    assert resumed.load_autosaved("sub/c.tif") is None
    assert (
        not load_or_create(tmp_path / "out", folder, recursive=True)
        .queue.item("sub/c.tif")
        .autosaved
    )


def test_accept_in_one_save_equals_the_three_steps(folder, tmp_path, monkeypatch):
    record = {"layout": "duts-tr", "name": "c", "mask": "DUTS-TR/c.png"}
    mask = np.ones((6, 8), np.uint8)
    results = {}
    for route in ("steps", "one"):
        state = load_or_create(tmp_path / route, folder, recursive=True)
        state.autosave("sub/c.tif", mask)
        saves = []
        monkeypatch.setattr(type(state), "save", lambda self, _s=saves: _s.append(1) or None)
        if route == "steps":
            state.record_export("sub/c.tif", record)
            state.mark("sub/c.tif", Status.ACCEPTED)
            state.discard_autosaved("sub/c.tif")
        else:
            state.record_accept("sub/c.tif", record)
        monkeypatch.undo()
        item = state.queue.item("sub/c.tif")
        assert state.load_autosaved("sub/c.tif") is None
        assert not state.autosave_path("sub/c.tif").with_suffix(".json").exists()
        results[route] = (len(saves), item.status, item.export, item.autosaved,
                          item.autosave_of, item.fingerprint)  # fmt: skip
    assert results["steps"][0] == 3 and results["one"][0] == 1
    assert results["steps"][1:] == results["one"][1:]
    assert results["one"][1] is Status.ACCEPTED


def test_export_record_from_an_export_result(tmp_path):
    from napari_focus.datasets import export_sample

    image = np.zeros((32, 32, 3), np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:20, 8:20] = True
    result = export_sample(tmp_path / "datasets", "duts-tr", "img one", image, mask)
    record = export_record(result, relative_to=tmp_path)
    assert record["name"] == "img_one" and record["layout"] == "duts-tr"
    assert record["mask"].startswith("datasets/") and (tmp_path / record["mask"]).is_file()
    queue = ImageQueue.from_names(["img one"])
    queue.record_export(0, record)
    assert queue[0].exported and queue[0].status is Status.ACCEPTED
    json.dumps(record)


# --- existing masks ---------------------------------------------------------------------


def test_find_reference_mask_by_stem(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    square = np.zeros((6, 6), np.uint8)
    square[1:4, 1:4] = 255
    for name in ["one.jpg", "two.png", "three.png", "four.png", "sub/five.png"]:
        write_png(images / name, np.zeros((6, 6, 3), np.uint8))
    write_png(masks / "one_gt.png", square)
    write_png(masks / "two_mask.bmp", (square > 0).astype(np.uint8))  # 0/1
    write_png(masks / "three.PNG", np.stack([square] * 3, axis=-1))  # RGB
    write_png(masks / "sub" / "five.png", square)
    write_png(images / "two_gt.png", square)  # a mask beside its image

    for name in ["one.jpg", "two.png", "three.png"]:
        found = find_reference_mask(images / name, masks)
        assert found is not None and found.dtype == bool, name
        np.testing.assert_array_equal(found, square > 0)
    assert find_reference_mask(images / "four.png", masks) is None
    assert find_reference_mask(images / "four.png", tmp_path / "nowhere") is None
    assert reference_mask_path(images / "sub/five.png", masks, relative="sub/five.png") == (
        masks / "sub" / "five.png"
    )
    # in the image folder itself: never the image, but its _gt file
    assert reference_mask_path(images / "two.png", images) == images / "two_gt.png"
    assert reference_mask_path(images / "four.png", images) is None


def test_a_save_encodes_again_only_what_changed_and_writes_the_whole_state(tmp_path):
    """Saves keep each item's encoded line: what a save writes is still the text of the
    whole state, every change since the last save in it, whatever the order now."""
    from napari_focus.series.queue import ImageQueue
    from napari_focus.series.state import SeriesState
    from napari_focus.series.state_file import state_text

    queue = ImageQueue.from_names([f"img{i}" for i in range(6)])
    state = SeriesState(tmp_path, queue, {})
    state.save()
    state.record_export("img2", {"layout": "duts-tr", "name": "img2"})
    state.mark("img2", Status.ACCEPTED)
    queue.order_by({"img4": 0.9, "img1": 0.5}, descending=True)
    state.mark("img5", Status.SKIPPED)
    written = state.state_path.read_text(encoding="utf-8")
    assert written == state_text(state.to_json())  # as a save from scratch writes it
    items = json.loads(written)["items"]
    assert [item["key"] for item in items[:2]] == ["img4", "img1"]
    by_key = {item["key"]: item for item in items}
    assert by_key["img2"]["status"] == "accepted" and by_key["img2"]["export"]["name"] == "img2"
    assert by_key["img5"]["status"] == "skipped"
