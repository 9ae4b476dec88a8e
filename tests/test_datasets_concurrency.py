"""Two exporting processes at once, and exporting processes killed at any point."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from test_datasets import build_official, check_split, make_sample

from napari_focus.datasets import export_sample, read_records

LAYOUT = "duts-tr"
pytestmark = pytest.mark.skipif(os.name != "posix", reason="uses fork and SIGKILL")
_fork = multiprocessing.get_context("fork")


def _export_many(root: str, prefix: str, count: int) -> None:
    for i in range(count):
        image, mask = make_sample(i)
        export_sample(root, LAYOUT, f"{prefix}{i}", image, mask)
    image, mask = make_sample(99)
    export_sample(root, LAYOUT, "shared", image, mask, on_exists="rename")


def test_two_processes_export_into_one_split(tmp_path: Path) -> None:
    build_official(tmp_path, LAYOUT)
    workers = [
        _fork.Process(target=_export_many, args=(str(tmp_path), prefix, 20))
        for prefix in ("a", "b")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    check_split(tmp_path, LAYOUT)
    sem = json.loads((tmp_path / "DUTS" / "DUTS_Semantic_Train.json").read_text())
    names = {a["file_name"] for a in sem["annotations"]}
    assert len(names) == 2 + 40 + 2
    assert {"shared.jpg", "shared_1.jpg"} <= names
    assert len(read_records(tmp_path)) == 42


def _die_at_replace(k: int) -> None:
    """Make the k-th os.replace of this process kill it, before (even k) or after it."""
    real = os.replace
    calls = [0]

    def replace(src, dst):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == k // 2 + 1:
            if k % 2:
                real(src, dst)
            os._exit(137)
        return real(src, dst)

    os.replace = replace  # type: ignore[assignment]


def _crashing_child(root: str, k: int) -> None:
    _die_at_replace(k)
    image, mask = make_sample(k)
    export_sample(root, LAYOUT, "s", image, 1 - mask, on_exists="replace")
    export_sample(root, LAYOUT, f"n{k}", image, mask, on_exists="replace")
    os._exit(0)


def _recover(root: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        image, mask = make_sample(50 + i)
        export_sample(root, LAYOUT, name, image, mask, on_exists="replace")


def test_kill_at_every_write(tmp_path: Path) -> None:
    """A replace + a new export do 3 + 2 + 2 + 3 + 2 renames; kill before/after each."""
    build_official(tmp_path, LAYOUT)
    image, mask = make_sample(0)
    export_sample(tmp_path, LAYOUT, "s", image, mask)
    for k in range(26):
        child = _fork.Process(target=_crashing_child, args=(str(tmp_path), k))
        child.start()
        child.join(30)
        assert child.exitcode in (0, 137)
        check_split(tmp_path, LAYOUT, strict=False)
    _recover(tmp_path, ["s", *(f"n{k}" for k in range(26))])
    check_split(tmp_path, LAYOUT)


def _loop_child(root: str, seed: int) -> None:
    for i in range(1000):
        image, mask = make_sample(seed * 1000 + i)
        export_sample(root, LAYOUT, f"k{i % 7}", image, mask, on_exists="replace")


def test_sigkill_at_random_times(tmp_path: Path) -> None:
    build_official(tmp_path, LAYOUT)
    rng = random.Random(1234)
    for seed in range(8):
        child = _fork.Process(target=_loop_child, args=(str(tmp_path), seed))
        child.start()
        time.sleep(rng.uniform(0.02, 0.4))
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        check_split(tmp_path, LAYOUT, strict=False)
    _recover(tmp_path, [f"k{i}" for i in range(7)])
    check_split(tmp_path, LAYOUT)
    assert np.all([r["layout"] == LAYOUT for r in read_records(tmp_path)])
