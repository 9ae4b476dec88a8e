"""File names that are not UTF-8 (Linux: an old Latin-1 archive, a Samba share) reach
Python with surrogate escapes. Every command takes them: masks, the ranking, the series
state and exports keep the name; the Ray engine, whose tables are UTF-8, refuses first."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli import run_cli

from napari_focus.atomic import temp_path
from napari_focus.series import Status, load_or_create

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="only Linux file systems take names that are not UTF-8"
)
LATIN1_NAME = os.fsdecode(b"caf\xe9.png")  # 'caf\udce9.png'


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for name in (LATIN1_NAME, "plain.png"):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / name)
    return folder


@pytest.fixture
def weights(tiny_checkpoint, tmp_path) -> Path:
    return Path(shutil.copy(tiny_checkpoint, tmp_path / "tiny.safetensors"))


def test_predict_rank_and_export_keep_a_name_that_is_not_utf8(images, weights, tmp_path):
    from napari_focus.datasets import read_records
    from napari_focus.distributed import read_ranking

    out = tmp_path / "masks"
    code, err = run_cli("predict", images, "--task", "sod", "--weights", weights, "--out", out,
                        "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 0, err
    assert sorted(os.listdir(os.fsencode(out))) == [b"caf\xe9.png", b"plain.png"]

    ranking = tmp_path / "rank.csv"
    code, err = run_cli("rank", images, "--task", "sod", "--weights", weights, "--out",
                        ranking, "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 0, err
    assert b"caf\xe9.png" in ranking.read_bytes()  # the name's own bytes, as ls shows them
    assert set(read_ranking(ranking)) == {LATIN1_NAME, "plain.png"}

    code, err = run_cli("export", images, out, "--root", tmp_path / "ds", "--layout",
                        "duts-tr")  # fmt: skip
    assert code == 0, err
    sources = {Path(r["source_path"]).name for r in read_records(tmp_path / "ds")}
    assert sources == {LATIN1_NAME, "plain.png"}


def test_a_series_of_such_names_keeps_its_decisions(images, tmp_path):
    state = load_or_create(tmp_path / "series", images)
    state.mark(LATIN1_NAME, Status.REJECTED)
    state.autosave(LATIN1_NAME, np.ones((48, 64), bool), {"source": str(images / LATIN1_NAME)})
    reopened = load_or_create(tmp_path / "series", images)
    assert reopened.queue.item(LATIN1_NAME).status is Status.REJECTED
    assert reopened.load_autosaved(LATIN1_NAME).all()


def test_a_long_name_that_is_not_utf8_gets_a_temporary_name(tmp_path):
    name = os.fsdecode(b"\xe9" * 240 + b".png")  # 244 bytes: the temporary name shortens it
    temp = temp_path(tmp_path / name)
    assert temp.suffix == ".png" and len(os.fsencode(temp.name)) <= 255
    temp.write_bytes(b"x")  # the file system takes it


def test_the_ray_engine_refuses_them_before_ray_starts(images, weights, tmp_path):
    from napari_focus.distributed import predict_dataset

    with pytest.raises(ValueError, match=r"file names that are not UTF-8.*--engine local"):
        predict_dataset(images, tmp_path / "out", task="sod", weights=weights,
                        address="127.0.0.1:1")  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_a_journal_an_earlier_version_left_with_such_a_name_no_longer_blocks(tmp_path):
    """An earlier version journaled the provenance line of such a name unescaped, which
    no export could append: every later export and training of the root failed."""
    import json

    from napari_focus.datasets import export_sample, read_records
    from napari_focus.datasets.export import dataset_dir
    from napari_focus.datasets.journal import JOURNAL_NAME

    image, mask = np.zeros((40, 60, 3), np.uint8), np.ones((40, 60), bool)
    export_sample(tmp_path, "duts-tr", "first", image, mask)
    stuck = {"layout": "duts-tr", "name": "bad", "status": "written", "source_path": LATIN1_NAME}
    journal = dataset_dir(tmp_path, "duts-tr") / JOURNAL_NAME
    line = json.dumps(stuck, ensure_ascii=False) + "\n"
    journal.write_text(json.dumps({"renames": [], "provenance": line}))
    export_sample(tmp_path, "duts-tr", "second", image, mask)
    assert not journal.exists()
    records = read_records(tmp_path)
    assert [r["name"] for r in records] == ["first", "bad", "second"]
    assert records[1]["source_path"] == LATIN1_NAME
