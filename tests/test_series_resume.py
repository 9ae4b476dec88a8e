"""A series never forgets: unfound images kept as missing, renames matched by content,
stale autosaves set aside, the previous state file kept as a backup."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_focus.series import STATE_NAME, Status, load_or_create


def image_file(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def series(tmp_path: Path):
    images = tmp_path / "images"
    for i, name in enumerate(["a.png", "b.png", "c.png", "d.png"]):
        image_file(images / name, i)
    out = tmp_path / "out"
    state = load_or_create(out, images)
    state.record_export("a.png", {"layout": "duts-tr", "name": "a"})
    state.mark("b.png", Status.REJECTED)
    state.autosave("c.png", np.ones((40, 60), bool))
    return images, out


def records(state) -> dict[str, tuple]:  # type: ignore[no-untyped-def]
    return {i.key: (i.status, i.export, i.autosaved, i.missing) for i in state.queue}


def test_an_empty_folder_forgets_nothing(series) -> None:
    images, out = series
    before = records(load_or_create(out, images))
    moved = images.parent / "elsewhere"
    shutil.move(images, moved)
    images.mkdir()  # a drive not mounted yet: the mount point is empty
    empty = load_or_create(out, images)
    assert {k: v[:3] for k, v in records(empty).items()} == {
        k: v[:3] for k, v in before.items() if k != "d.png"  # d was untouched: dropped
    }
    assert all(item.missing for item in empty.queue)
    assert empty.queue.next() is None  # missing items are not visited
    assert empty.autosave_path("c.png").is_file()
    images.rmdir()
    shutil.move(moved, images)
    back = load_or_create(out, images)
    assert records(back)["a.png"] == before["a.png"]
    assert records(back)["c.png"] == before["c.png"]
    assert back.load_autosaved("c.png") is not None
    assert not any(item.missing for item in back.queue)


def test_another_pattern_keeps_the_others(series) -> None:
    images, out = series
    narrowed = load_or_create(out, images, pattern="c*")
    assert narrowed.queue.item("a.png").missing
    assert narrowed.queue.item("a.png").export == {"layout": "duts-tr", "name": "a"}
    assert narrowed.queue.current.key == "c.png"
    wide = load_or_create(out, images)
    assert wide.queue.item("b.png").status is Status.REJECTED


def test_a_renamed_image_keeps_its_record_and_autosave(series) -> None:
    images, out = series
    (images / "c.png").rename(images / "c_renamed.png")
    (images / "b.png").rename(images / "sub_b.png")
    state = load_or_create(out, images)
    assert state.renamed == {"c.png": "c_renamed.png", "b.png": "sub_b.png"}
    item = state.queue.item("c_renamed.png")
    assert item.status is Status.CORRECTED and item.autosaved and not item.missing
    assert state.load_autosaved("c_renamed.png").all()
    assert not state.autosave_path("c.png").exists()
    assert state.queue.item("sub_b.png").status is Status.REJECTED
    keys = state.queue.keys()
    assert "c.png" not in keys and "c_renamed.png" in keys


def test_an_image_with_other_pixels_does_not_get_the_old_autosave(series) -> None:
    images, out = series
    image_file(images / "c.png", 99)  # same name, other pixels
    state = load_or_create(out, images)
    assert state.load_autosaved("c.png") is None
    aside = state.stale_autosaves["c.png"]
    assert aside.is_file() and aside.parent == state.work_folder  # kept, not applied
    assert not state.queue.item("c.png").autosaved
    assert load_or_create(out, images).load_autosaved("c.png") is None


def test_every_rewrite_keeps_the_previous_state(series) -> None:
    images, out = series
    state = load_or_create(out, images)
    previous = state.state_path.read_bytes()
    state.mark("d.png", Status.SKIPPED)
    assert state.backup_path.read_bytes() == previous
    assert json.loads(state.state_path.read_text())["items"][3]["status"] == "skipped"
    assert state.backup_path.name == STATE_NAME + ".bak"


@pytest.mark.parametrize("damage", [b"{not json", b"[" * 100_000, b'{"schema": 1}'])
def test_a_damaged_state_file_resumes_from_the_backup(series, damage: bytes) -> None:
    images, out = series
    state = load_or_create(out, images)
    state.mark("d.png", Status.SKIPPED)  # the backup now holds the state before this mark
    state.state_path.write_bytes(damage)
    resumed = load_or_create(out, images)
    assert resumed.recovered_from is not None and resumed.recovered_from.read_bytes() == damage
    assert resumed.restored_backup == resumed.backup_path
    assert resumed.queue.item("a.png").status is Status.ACCEPTED
    assert resumed.queue.item("b.png").status is Status.REJECTED
    assert resumed.queue.item("d.png").status is Status.PENDING  # the one lost change


def test_a_series_folder_of_other_images_is_refused(series, tmp_path) -> None:
    """Another folder's images of the same names must not take over its statuses; the
    two folders moved together (or the images moved away) still resume."""
    from napari_focus.series.open_state import SeriesOfAnotherFolder

    images, out = series
    other = tmp_path / "other"
    for i, name in enumerate(["a.png", "b.png"]):
        image_file(other / name, 10 + i)  # other pictures, the same names
    saved = (out / STATE_NAME).read_bytes()
    with pytest.raises(SeriesOfAnotherFolder) as caught:
        load_or_create(out, other)
    assert str(caught.value) == (
        f"{out} keeps the series of the images of {images.resolve()}, not of {other}; choose "
        "another series folder (or open that series with its own images)"
    )
    with pytest.raises(SeriesOfAnotherFolder, match="not of the open image layers"):
        load_or_create(out, names=["a.png"])
    assert (out / STATE_NAME).read_bytes() == saved  # untouched

    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(images, moved / "images")
    shutil.move(out, moved / "out")
    state = load_or_create(moved / "out", moved / "images")  # moved together: resumed
    assert state.queue.item("b.png").status is Status.REJECTED
