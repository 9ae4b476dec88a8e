"""One series, its files and its writers: one-to-one work names, a version-1 folder moved
to them, and several writers saving the same series without losing a decision."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_focus.series import STATE_NAME, VERSION, Status, load_or_create, work_name
from napari_focus.series.proposal_store import ProposalStore
from napari_focus.series.work_names import legacy_work_name

V1_SERIES = Path(__file__).parent / "data" / "series_v1"


def image_file(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (36, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def band(col: int) -> np.ndarray:
    mask = np.zeros((36, 48), bool)
    mask[:, col : col + 3] = True
    return mask


# --- work names -----------------------------------------------------------------------------


def test_work_names_are_one_to_one() -> None:
    keys = ["cat.png", "cat.jpg", "cat", "a/b.png", "a__b.png", "a%2Fb.png", "A/B.png",
            "x:y?.png", "a\\b.png", "é/ü.tif", "n" * 400 + ".png", "n" * 400 + ".jpg"]  # fmt: skip
    names = [work_name(key) for key in keys]
    assert len(set(names)) == len(keys)
    assert len({name.lower() for name in names}) == len(keys)  # case-insensitive disks too
    assert all(len(name.encode()) < 200 and "/" not in name and "\\" not in name for name in names)
    assert work_name("sub/cat.png").startswith("sub%2Fcat.png~")
    assert legacy_work_name("cat.png") == legacy_work_name("cat.jpg") == "cat"


def test_images_differing_only_in_extension_keep_their_own_edits(tmp_path: Path) -> None:
    images = tmp_path / "images"
    for i, name in enumerate(["cat.png", "cat.jpg", "a/b.png", "a__b.png"]):
        image_file(images / name, i)
    state = load_or_create(tmp_path / "out", images, recursive=True)
    for col, key in enumerate(["cat.png", "cat.jpg", "a/b.png", "a__b.png"]):
        state.autosave(key, band(3 * col), {"key": key})
    state.discard_autosaved("cat.jpg")
    state.discard_autosaved("a__b.png")
    resumed = load_or_create(tmp_path / "out", images, recursive=True)
    np.testing.assert_array_equal(resumed.load_autosaved("cat.png"), band(0))
    np.testing.assert_array_equal(resumed.load_autosaved("a/b.png"), band(6))
    assert resumed.autosaved_provenance("a/b.png") == {"key": "a/b.png"}
    assert resumed.load_autosaved("cat.jpg") is None and resumed.load_autosaved("a__b.png") is None
    assert resumed.queue.item("cat.png").autosaved and not resumed.queue.item("cat.jpg").autosaved

    store = ProposalStore(tmp_path / "out", "model")
    for i, key in enumerate(["cat.png", "cat.jpg"]):
        store.save(key, images / key, np.full((36, 48), i / 2, np.float32), band(i))
    assert store.load("cat.png", images / "cat.png").probability.max() == 0.0
    assert store.load("cat.jpg", images / "cat.jpg").probability.max() == 0.5


# --- a series made with the version-1 names -----------------------------------------------


@pytest.fixture
def v1_series(tmp_path: Path) -> tuple[Path, Path]:
    shutil.copytree(V1_SERIES, tmp_path / "series")
    images, out = tmp_path / "series" / "images", tmp_path / "series" / "out"
    # the stored proposals name the image's size and time; a checkout gives a new time
    for npz in (out / "proposals").rglob("dog.npz"):
        with np.load(npz) as data:
            mtime = int(data["signature"][1])
        os.utime(images / "dog.png", ns=(mtime, mtime))
    return images, out


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".")}  # fmt: skip


def test_a_version_1_series_moves_what_is_unambiguous(v1_series) -> None:
    images, out = v1_series
    before = files(out)
    saved = json.loads((out / STATE_NAME).read_text(encoding="utf-8"))
    assert saved["version"] == 1 and sorted(before) == [
        "proposals/e159c4e35c8c/cat.npz", "proposals/e159c4e35c8c/dog.npz",
        "work/cat.png", "work/dog.json", "work/dog.png", "work/sub__b.png",
    ]  # fmt: skip

    state = load_or_create(out, images, recursive=True)
    after = files(out)
    # dog.png alone had the name "dog": its autosave, provenance and proposal moved
    assert after[f"work/{work_name('dog.png')}.png"] == before["work/dog.png"]
    assert after[f"work/{work_name('dog.png')}.json"] == before["work/dog.json"]
    dog_npz = f"proposals/e159c4e35c8c/{work_name('dog.png')}.npz"
    assert after[dog_npz] == before["proposals/e159c4e35c8c/dog.npz"]
    np.testing.assert_array_equal(state.load_autosaved("dog.png"), band(8))
    assert state.autosaved_provenance("dog.png") == {"task": "sod", "model": "focus_large_sod"}
    proposal = ProposalStore(out, "model-x").load("dog.png", images / "dog.png")
    assert proposal is not None and proposal.uncertainty == 0.25
    # files two keys shared stay where they are, byte for byte, and belong to neither
    for shared in ["work/cat.png", "work/sub__b.png", "proposals/e159c4e35c8c/cat.npz"]:
        assert after[shared] == before[shared]
    assert set(after) == {*before, f"work/{work_name('dog.png')}.png",
                          f"work/{work_name('dog.png')}.json", dog_npz} - {
        "work/dog.png", "work/dog.json", "proposals/e159c4e35c8c/dog.npz"}  # fmt: skip
    assert state.unattached[out / "work" / "cat.png"] == ["cat.jpg", "cat.png"]
    assert sorted(state.unattached[out / "work" / "sub__b.png"]) == ["sub/b.png", "sub__b.png"]
    for key in ["cat.png", "cat.jpg", "sub/b.png"]:
        item = state.queue.item(key)
        assert not item.autosaved and state.load_autosaved(key) is None
        assert item.status is Status.CORRECTED  # the decision is kept, only the file is not
    assert ProposalStore(out, "model-x").load("cat.png", images / "cat.png") is None
    state.discard_autosaved("cat.jpg")
    assert (out / "work" / "cat.png").read_bytes() == before["work/cat.png"]

    saved = json.loads((out / STATE_NAME).read_text(encoding="utf-8"))
    assert saved["version"] == VERSION
    again = load_or_create(out, images, recursive=True)  # nothing more to move
    assert files(out) == after and not again.unattached
    np.testing.assert_array_equal(again.load_autosaved("dog.png"), band(8))


def test_an_interrupted_move_finishes(v1_series) -> None:
    images, out = v1_series
    os.link(out / "work" / "dog.png", out / "work" / f"{work_name('dog.png')}.png")
    state = load_or_create(out, images, recursive=True)  # killed after the link, last time
    assert not (out / "work" / "dog.png").exists()
    np.testing.assert_array_equal(state.load_autosaved("dog.png"), band(8))


def test_a_taken_new_name_is_never_overwritten(v1_series) -> None:
    images, out = v1_series
    newer = out / "work" / f"{work_name('dog.png')}.png"
    shutil.copy(out / "work" / "cat.png", newer)
    state = load_or_create(out, images, recursive=True)
    assert (out / "work" / "dog.png").is_file()  # left alone
    assert state.queue.item("dog.png").autosaved
    assert newer.read_bytes() == (out / "work" / "cat.png").read_bytes()


# --- several writers ------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    for i, name in enumerate(["a.png", "b.png", "c.png", "d.png"]):
        image_file(images / name, i)
    return images


def statuses(out: Path, images: Path) -> dict[str, str]:
    return {item.key: item.status.value for item in load_or_create(out, images).queue}


def test_two_viewers_keep_each_others_decisions(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first, second = load_or_create(out, folder), load_or_create(out, folder)
    first.record_accept("a.png", {"layout": "duts-tr", "name": "a"})
    second.mark("b.png", Status.REJECTED)
    assert second.merged == ["a.png"]
    assert second.queue.item("a.png").status is Status.ACCEPTED  # the others' news, in memory
    first.autosave("c.png", band(0))
    second.mark("d.png", Status.SKIPPED)
    first.save()  # e.g. moving to the next image
    reopened = load_or_create(out, folder)
    assert statuses(out, folder) == {"a.png": "accepted", "b.png": "rejected",
                                     "c.png": "corrected", "d.png": "skipped"}  # fmt: skip
    assert reopened.queue.item("a.png").export == {"layout": "duts-tr", "name": "a"}
    np.testing.assert_array_equal(reopened.load_autosaved("c.png"), band(0))
    backup = json.loads((out / (STATE_NAME + ".bak")).read_text(encoding="utf-8"))
    assert {i["key"]: i["status"] for i in backup["items"]}["d.png"] == "skipped"


def test_both_changing_one_image_keeps_the_later_and_the_export(folder, tmp_path) -> None:
    out = tmp_path / "out"
    first, second = load_or_create(out, folder), load_or_create(out, folder)
    first.record_accept("a.png", {"layout": "duts-tr", "name": "a"})
    second.mark("a.png", Status.REJECTED)  # later: wins, the exported files stay named
    item = load_or_create(out, folder).queue.item("a.png")
    assert item.status is Status.REJECTED and item.export == {"layout": "duts-tr", "name": "a"}


def test_an_order_from_a_cluster_run_reaches_an_open_viewer(folder, tmp_path) -> None:
    from napari_focus.distributed import order_series

    out = tmp_path / "out"
    viewer = load_or_create(out, folder)
    viewer.queue.jump(1)
    order_series(out, folder, {"d.png": 1, "c.png": 2, "b.png": 3, "a.png": 4})
    viewer.mark("a.png", Status.REJECTED)
    assert viewer.queue.keys() == ["d.png", "c.png", "b.png", "a.png"]
    assert viewer.queue.current.key == "b.png"
    saved = json.loads((out / STATE_NAME).read_text(encoding="utf-8"))
    assert [i["key"] for i in saved["items"]] == ["d.png", "c.png", "b.png", "a.png"]
    assert {i["key"]: i["status"] for i in saved["items"]}["a.png"] == "rejected"


def test_a_file_found_by_the_other_writer_joins(folder, tmp_path) -> None:
    out = tmp_path / "out"
    first = load_or_create(out, folder)
    image_file(folder / "e.png", 9)
    second = load_or_create(out, folder)
    second.mark("e.png", Status.REJECTED)
    first.mark("a.png", Status.SKIPPED)
    assert first.queue.item("e.png").status is Status.REJECTED
    assert first.queue.item("e.png").path == folder.resolve() / "e.png"
    assert statuses(out, folder)["e.png"] == "rejected"


def test_a_newer_writer_is_never_overwritten(folder, tmp_path) -> None:
    from napari_focus.atomic import WriteError

    out = tmp_path / "out"
    state = load_or_create(out, folder)
    newer = json.dumps({"schema": "napari-focus-queue", "version": VERSION + 1, "items": []})
    (out / STATE_NAME).write_text(newer, encoding="utf-8")
    with pytest.raises(WriteError, match=f"state version {VERSION + 1}"):
        state.mark("a.png", Status.REJECTED)
    assert (out / STATE_NAME).read_text(encoding="utf-8") == newer


def _mark_all(out: str, images: str, keys: list[str], status: str) -> None:
    state = load_or_create(out, images)
    for key in keys:
        state.mark(key, status)


def test_two_processes_marking_at_once_lose_nothing(tmp_path: Path) -> None:
    images = tmp_path / "images"
    keys = [f"img{i:02d}.png" for i in range(24)]
    for i, key in enumerate(keys):
        image_file(images / key, i)
    out = tmp_path / "out"
    load_or_create(out, images)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_mark_all, args=(str(out), str(images), keys[0::2], "accepted")),
        context.Process(target=_mark_all, args=(str(out), str(images), keys[1::2], "rejected")),
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    found = statuses(out, images)
    assert all(found[key] == "accepted" for key in keys[0::2])
    assert all(found[key] == "rejected" for key in keys[1::2])


def test_a_writer_holding_the_lock_too_long_gets_a_clear_error(folder, tmp_path, monkeypatch):
    from napari_focus.atomic import WriteError
    from napari_focus.filelock import held
    from napari_focus.series import state as state_module

    out = tmp_path / "out"
    state = load_or_create(out, folder)
    monkeypatch.setattr(state_module, "LOCK_TIMEOUT_S", 0.2)
    before = (out / STATE_NAME).read_bytes()
    with held(state.lock_path, 1.0), pytest.raises(WriteError, match="another napari-focus"):
        state.mark("a.png", Status.REJECTED)
    assert (out / STATE_NAME).read_bytes() == before
    state.save()  # free again
    assert statuses(out, folder)["a.png"] == "rejected"


_COLLEAGUE = """
import os, sys
from napari_focus.series import Status, load_or_create
out, images, warm = sys.argv[1:4]
if os.geteuid() == 0:  # root ignores permissions: warm up lazy imports, then be nobody
    load_or_create(warm, images).mark("b.png", Status.REJECTED)
    os.setgid(65534)
    os.setuid(65534)
load_or_create(out, images).mark("b.png", Status.REJECTED)
"""


def test_a_colleague_saves_a_shared_series_whose_lock_file_is_not_theirs() -> None:
    """A series folder both may write to: the lock file the first writer made under a
    0022 umask (0644) is the other's too; a lock needs no write access to its file."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as shared:  # /tmp: reachable for another user
        shared = Path(shared)
        os.chmod(shared, 0o755)
        images = shared / "images"
        for i, name in enumerate(["a.png", "b.png"]):
            image_file(images / name, i)
        out = shared / "out"
        load_or_create(out, images).mark("a.png", Status.ACCEPTED)
        os.chmod(out, 0o777)
        lock = next(out.glob("*.lock"))
        os.chmod(lock, 0o444 if os.geteuid() != 0 else 0o644)  # not writable by them
        child = subprocess.run(
            [sys.executable, "-c", _COLLEAGUE, str(out), str(images), str(shared / "warm")],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )  # fmt: skip
        assert child.returncode == 0, child.stderr
        assert statuses(out, images) == {"a.png": "accepted", "b.png": "rejected"}


@pytest.mark.skipif(os.name == "nt", reason="POSIX locks")
def test_a_file_system_that_locks_only_writable_files_says_what_to_ask(tmp_path, monkeypatch):
    """NFS emulates flock with byte-range locks, which need a descriptor that may write:
    another user's lock file, open read-only, cannot be locked there."""
    import errno

    from napari_focus import filelock

    lock = tmp_path / "shared.lock"
    lock.touch()

    def nfs_flock(fd, operation):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(filelock, "_open", lambda path: open(path, "rb"))  # noqa: SIM115
    monkeypatch.setattr(filelock.fcntl, "flock", nfs_flock)
    with pytest.raises(PermissionError, match=r"chmod g\+w"), filelock.held(lock, 1.0):
        pass


def test_a_series_open_in_another_window_is_said(tmp_path, monkeypatch):
    import time

    from napari_focus.atomic import host_id
    from napari_focus.series.presence import MARK_PREFIX, Presence

    first = Presence(tmp_path)
    assert first.others_text() is None
    second = Presence(tmp_path)
    assert second.others_text() == "another window of this napari"
    first.leave()
    second.leave()
    assert not list(tmp_path.iterdir())

    crashed = tmp_path / f"{MARK_PREFIX}{host_id()}-999999999-0a0b"  # no such process
    crashed.touch()
    elsewhere = tmp_path / f"{MARK_PREFIX}otherhost-4242-0c0d"
    elsewhere.touch()
    old = tmp_path / f"{MARK_PREFIX}oldhost-77-0e0f"
    old.touch()
    os.utime(old, (time.time() - 2 * 86400, time.time() - 2 * 86400))  # a day and more
    third = Presence(tmp_path)
    assert third.others_text() == "a napari on another computer (process 4242)"
    assert not crashed.exists()  # removed: its process ended
    third.leave()
