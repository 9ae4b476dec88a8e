"""Folders and files the user may not read (a locked folder on a shared drive): named in
words with what to do, left out, and the other images processed (exit 1), by predict
(both engines' input listing), rank and a series opening (which the widget warns of)."""

from __future__ import annotations

import builtins
import os
from pathlib import Path

import pytest
from PIL import Image
from test_cli import run_cli

from napari_focus.distributed.inputs import find_sources

FOLDER_WORDS = (
    "cannot be read (permission denied): the images in it are left out; make it readable "
    "for you to include them"
)
FILE_WORDS = "cannot be read (permission denied): make it readable for you, or move it out"


@pytest.fixture
def weights(tiny_checkpoint) -> Path:
    return tiny_checkpoint


@pytest.fixture
def deny(monkeypatch):
    """``deny(path, mode=0)``: this user may no longer read ``path`` (mode 000; a folder
    of mode 0o444 may be listed but not entered). Where that does not bite (root), the
    calls that would read it raise the PermissionError they raise for a user: listing
    the folder, looking at anything in it, opening the file."""
    unlisted: list[str] = []  # folders that cannot be listed, files that cannot be opened
    closed: list[str] = []  # folders whose entries cannot be looked at
    restore: list[tuple[Path, int]] = []

    def where(path: object) -> str:
        return os.path.abspath(os.fspath(path))

    def inside(path: object) -> bool:
        return any(where(path).startswith(d + os.sep) for d in closed)

    def refusing(call, refused):
        def guarded(path, *args, **kwargs):
            if not isinstance(path, int) and refused(path):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return call(path, *args, **kwargs)

        return guarded

    def deny_(path: Path, mode: int = 0) -> None:
        restore.append((path, path.stat().st_mode))
        path.chmod(mode)
        if not mode & 0o400:
            unlisted.append(where(path))
        if path.is_dir() and not mode & 0o100:
            closed.append(where(path))
        if not os.access(path, os.R_OK if not mode else os.X_OK) or len(restore) > 1:
            return  # the OS says no (or was told to already)
        opened = lambda p: inside(p) or where(p) in unlisted  # noqa: E731
        monkeypatch.setattr(os, "scandir", refusing(os.scandir, lambda p: where(p) in unlisted))
        monkeypatch.setattr(os, "lstat", refusing(os.lstat, inside))
        monkeypatch.setattr(os, "stat", refusing(os.stat, inside))
        monkeypatch.setattr(builtins, "open", refusing(builtins.open, opened))

    yield deny_
    for path, mode in restore:
        path.chmod(mode)


@pytest.fixture
def folder(tmp_path, focus_reference) -> Path:
    images = tmp_path / "shared drive"
    (images / "locked").mkdir(parents=True)
    photo = Image.open(focus_reference / "input.png").convert("RGB").resize((72, 48))
    photo.save(images / "a.png")
    photo.save(images / "locked" / "b.png")
    return images


def test_predict_leaves_a_locked_subfolder_out_in_words(folder, weights, deny, tmp_path):
    deny(folder / "locked")
    out = tmp_path / "masks"
    common = ("--task", "sod", "--weights", weights, "--device", "cpu", "--out", out)
    code, err = run_cli("predict", folder, *common)  # the subfolder note looks below
    assert code == 0 and "Traceback" not in err, err
    assert (out / "a.png").is_file()
    code, err = run_cli("predict", folder, "--recursive", *common)
    assert code == 1, err
    assert f"napari-focus: {folder / 'locked'} {FOLDER_WORDS}\n" in err
    assert "0 written, 1 skipped" in err and "0 failed, 1 folder not read" in err


def test_a_locked_folder_input_is_said_alone(folder, weights, deny, tmp_path):
    deny(folder)
    code, err = run_cli("predict", folder, "--task", "sod", "--weights", weights,
                        "--device", "cpu", "--out", tmp_path / "masks")  # fmt: skip
    assert code == 2 and f"{folder} {FOLDER_WORDS}" in err, err
    assert "no image file" not in err  # it may hold images: it could not be listed


def test_ray_inputs_say_a_locked_subfolder(folder, deny):
    deny(folder / "locked")
    found = find_sources([str(folder)], recursive=True)
    assert found.sources == [str(folder / "a.png")] and not found.unmatched
    assert found.unreadable == [f"{folder / 'locked'} {FOLDER_WORDS}"]


def test_rank_leaves_a_locked_subfolder_out_in_words(folder, weights, deny, tmp_path):
    deny(folder / "locked")
    code, err = run_cli("rank", folder, "--recursive", "--task", "sod", "--weights", weights,
                        "--device", "cpu", "--out", tmp_path / "ranking.csv")  # fmt: skip
    assert code == 1 and "Traceback" not in err, err
    assert f"{folder / 'locked'} {FOLDER_WORDS}" in err
    assert "ranked 1 image, 0 failed, 1 folder not read" in err


def test_a_locked_file_fails_alone_in_words(folder, weights, deny, tmp_path):
    deny(folder / "a.png")
    code, err = run_cli("predict", folder, "--recursive", "--task", "sod", "--weights",
                        weights, "--device", "cpu", "--out", tmp_path / "masks")  # fmt: skip
    assert code == 1, err
    assert f"failed: {folder / 'a.png'}: a.png {FILE_WORDS}" in err
    assert "1 written" in err and (tmp_path / "masks" / "locked" / "b.png").is_file()
    code, err = run_cli("predict", folder, "--task", "sod", "--weights", weights,
                        "--device", "cpu", "--out", tmp_path / "top")  # fmt: skip
    assert code == 1 and "0 written, 0 skipped, 1 failed" in err, err
    assert "images/s" not in err  # no rate of images that all failed


def test_a_series_opens_without_a_locked_subfolder_and_keeps_its_words(folder, deny, tmp_path):
    from napari_focus.series.open_state import load_or_create

    deny(folder / "locked")
    state = load_or_create(tmp_path / "series", folder, recursive=True)
    assert state.queue.keys() == ["a.png"]
    assert state.unreadable == [f"{folder / 'locked'} {FOLDER_WORDS}"]


def test_a_locked_folder_named_twice_is_said_once(folder, weights, deny, tmp_path):
    """The locked folder as an input of its own and below another: one line, no 'no
    image file' for it, one folder not read."""
    deny(folder / "locked")
    code, err = run_cli("predict", folder, folder / "locked", "--recursive", "--task",
                        "sod", "--weights", weights, "--device", "cpu", "--out",
                        tmp_path / "masks")  # fmt: skip
    assert code == 1, err
    assert err.count(FOLDER_WORDS) == 1 and "no image file" not in err, err
    assert "1 written" in err and "1 folder not read" in err


def test_a_folder_one_may_list_but_not_enter_fails_its_images(folder, weights, deny, tmp_path):
    deny(folder / "locked", 0o444)
    code, err = run_cli("predict", folder, "--recursive", "--task", "sod", "--weights",
                        weights, "--device", "cpu", "--out", tmp_path / "masks")  # fmt: skip
    assert code == 1 and "Traceback" not in err, err
    assert f"failed: {folder / 'locked' / 'b.png'}: b.png {FILE_WORDS}" in err
    assert "1 written" in err
