"""The pieces of distributed prediction that need no Ray: resources, manifest, ranking,
series order, leftover temporary files."""

from __future__ import annotations

import contextlib
import io
import math
import os

import numpy as np
import pytest
from PIL import Image

from napari_focus.distributed import (
    order_series,
    plan_resources,
    ranking_rows,
    read_manifest,
    read_ranking,
    write_manifest,
    write_ranking,
)
from napari_focus.distributed.inputs import plan_outputs
from napari_focus.io import write_mask

OLD_TIME_NS = 1_000_000_000 * 10**9


def test_resources_default_to_one_worker_per_gpu_or_node():
    cpu = {"CPU": 16.0}
    assert plan_resources(cpu, 8, num_workers=None, gpus_per_worker=None, cpus_per_worker=None) == (
        plan_resources(cpu, 8, num_workers=2, gpus_per_worker=0, cpus_per_worker=None)
    )
    plan = plan_resources(cpu, 8, num_workers=None, gpus_per_worker=None, cpus_per_worker=None)
    assert (plan.workers, plan.gpus_per_worker, plan.cpus_per_worker) == (2, 0.0, 8.0)
    gpu = {"CPU": 32.0, "GPU": 4.0}
    plan = plan_resources(gpu, 16, num_workers=None, gpus_per_worker=0.5, cpus_per_worker=None)
    assert (plan.workers, plan.gpus_per_worker, plan.cpus_per_worker) == (8, 0.5, 1.0)
    assert plan.calls_per_worker == 2  # a batch in the model while the last one is written
    with pytest.raises(ValueError, match="has 0 GPUs; use --device cpu to run on CPUs"):
        plan_resources(cpu, 8, num_workers=None, gpus_per_worker=1, cpus_per_worker=None)
    with pytest.raises(ValueError, match="largest node has 8"):
        plan_resources(cpu, 8, num_workers=None, gpus_per_worker=0, cpus_per_worker=12)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_manifest_round_trip_and_ranking(tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    images = tmp_path / "images"
    rows = [
        {"source": str(images / "a.png"), "name": "a", "mask": "m/a.png", "status": "written",
         "uncertainty": 0.2, "foreground": 0.5, "seconds": 1.5, "width": 8, "height": 6,
         "worker": "node:1"},
        {"source": str(images / "sub/b.png"), "name": "b", "mask": "m/b.png",
         "status": "failed", "error": "ValueError: too small"},
        {"source": str(images / "c.png"), "name": "c", "mask": "m/c.png", "status": "skipped"},
        {"source": str(images / "d.png"), "name": "d", "mask": "m/d.png", "status": "written",
         "uncertainty": 0.7, "foreground": 0.1, "seconds": 1.0, "width": 8, "height": 8},
    ]  # fmt: skip
    path = write_manifest(rows, tmp_path / f"manifest{suffix}")
    if suffix == ".csv":  # the Parquet manifest's columns, in its order
        from napari_focus.distributed.manifest import COLUMNS

        assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(COLUMNS)
        assert COLUMNS[0] == "source"
    back = read_manifest(path)
    assert [r["name"] for r in back] == ["a", "b", "c", "d"]
    assert back[0]["uncertainty"] == 0.2 and back[0]["width"] == 8
    assert math.isnan(back[1]["uncertainty"]) and back[1]["width"] is None
    assert back[1]["error"] == "ValueError: too small" and back[2]["error"] == ""

    ranked = ranking_rows(back)
    assert [(r.rank, r.path) for r in ranked] == [
        (1, "d.png"),
        (2, "a.png"),
        (3, "c.png"),
        (4, "sub/b.png"),
    ]
    assert ranked[-1].error == "ValueError: too small"
    ranks = read_ranking(write_ranking(back, tmp_path / "rank.csv"))
    assert ranks == {"d.png": 1, "a.png": 2, "c.png": 3, "sub/b.png": 4}


def test_order_series_resumes_with_its_statuses(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / f"{name}.png")
    state = order_series(tmp_path / "series", images, {"c.png": 1, "a.png": 2})
    assert state.queue.keys() == ["c.png", "a.png", "b.png"]
    assert state.queue.current.key == "c.png"
    state.mark("a.png", "accepted")
    state.queue.jump(2)
    state.save()
    again = order_series(tmp_path / "series", images, {"a.png": 1, "b.png": 2, "c.png": 3})
    assert again.queue.keys() == ["a.png", "b.png", "c.png"]
    assert again.queue.item("a.png").status == "accepted"
    assert again.queue.current.key == "b.png"
    with pytest.raises(ValueError, match="not a ranking CSV"):
        bad = tmp_path / "bad.csv"
        bad.write_text("name,score\na,1\n")
        order_series(tmp_path / "series", images, bad)


def test_leftover_temporary_files_are_recognised(tmp_path):
    from napari_focus.atomic import TEMP_PREFIX, temp_path
    from napari_focus.distributed.journal import leftover_temps

    long = "/data/" + "long-name-" * 30 + ".png"  # shortened in its temporary names
    job, long_job = plan_outputs(["/data/cat.png", long], tmp_path, probability=True).todo
    write_mask(job.mask, np.ones((4, 4), np.uint8))
    leftovers = [temp_path(job.mask), temp_path(job.probability), temp_path(long_job.mask)]
    leftovers += [  # written by a worker on another node, or by an older version
        tmp_path / f"{TEMP_PREFIX}zzzzzzzz-77-0123abcd-cat.png",
        tmp_path / f"{TEMP_PREFIX}77-0123abcd-cat_probability.png",
    ]
    others = [temp_path(tmp_path / "dog.png"), tmp_path / ".cat.k2x_9abc.png"]
    others += [tmp_path / f"{TEMP_PREFIX}zzzzzzzz-77-0123abcd-dog.png"]
    old = temp_path(job.mask)  # from an earlier run: not this run's to remove
    for path in [*leftovers, *others, old]:
        path.write_bytes(b"")
    os.utime(old, ns=(OLD_TIME_NS, OLD_TIME_NS))
    found = leftover_temps([*job.outputs(), *long_job.outputs()], since_ns=OLD_TIME_NS + 1)
    assert sorted(found) == sorted(leftovers)


def test_a_csv_manifest_saved_again_by_a_spreadsheet_still_reads(tmp_path):
    rows = [{"source": "/images/a.png", "name": "a", "mask": "m/a.png", "status": "written",
             "uncertainty": 0.25}]  # fmt: skip
    path = write_manifest(rows, tmp_path / "manifest.csv")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # Excel's UTF-8 byte-order mark
    back = read_manifest(path)
    assert back[0]["name"] == "a" and back[0]["source"] == "/images/a.png"  # every column
    ranking = write_ranking(back, tmp_path / "rank.csv")
    ranking.write_bytes(b"\xef\xbb\xbf" + ranking.read_bytes())
    assert read_ranking(ranking) == {"a.png": 1}


def test_reading_another_programs_table_as_a_manifest_is_refused(tmp_path):
    table = tmp_path / "scores.csv"
    table.write_text("sample,score\ncat,0.5\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"napari-focus manifest \(no source, status column"):
        read_manifest(table)


def test_a_ctrl_c_that_a_library_turned_into_its_own_error_is_still_an_interrupt():
    """Ray Data's iterator, stopped by Ctrl-C inside its lock, raises "release unlocked
    lock": the run is interrupted (exit 130, rerun goes on), not failed (exit 2)."""
    from napari_focus.interrupts import interrupted_inside

    def iterate():
        try:
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("release unlocked lock")

    try:
        iterate()
    except RuntimeError as error:
        assert interrupted_inside(error)
    plain = RuntimeError("the actor died")
    plain.__context__ = ValueError("no")
    assert not interrupted_inside(plain)
    looped = RuntimeError("a")
    looped.__context__ = ValueError("b")
    looped.__context__.__context__ = looped  # a cycle ends the search
    assert not interrupted_inside(looped)


def test_ray_options_that_cannot_work_are_refused_before_ray_starts(tmp_path):
    """--device cuda ran on CPU workers without a word; float16 on CPU workers failed in
    every worker, with hundreds of lines of tracebacks, after Ray had started."""
    pytest.importorskip("ray")
    from napari_focus.cli import main

    image = tmp_path / "a.png"
    write_mask(image, np.ones((40, 40), np.uint8))
    common = ["predict", str(image), "--task", "sod", "--engine", "ray", "--out",
              str(tmp_path / "out")]  # fmt: skip
    for extra, said in (
        (["--device", "cuda", "--gpus-per-worker", "0"], "--device cuda asks for a GPU and "
         "--gpus-per-worker 0 for none"),
        (["--device", "cpu", "--precision", "float16"], "--precision float16 needs a GPU and "
         "the workers run on CPUs"),
        (["--address", "localhost"], "--address localhost: give the head node as HOST:PORT"),
        (["--address", "http://head:8265"], "--address http://head:8265: give the head node"),
    ):  # fmt: skip
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert main([*common, *extra]) == 2
        assert said in err.getvalue(), err.getvalue()
    assert not (tmp_path / "out").exists()


def test_ray_sources_say_a_file_found_under_two_names(tmp_path):
    """As the local engine says it: a link beside its file is left out, and noted."""
    from napari_focus.distributed.inputs import find_sources

    write_mask(tmp_path / "a.png", np.ones((40, 40), np.uint8))
    (tmp_path / "0_latest.png").symlink_to("a.png")
    found = find_sources([str(tmp_path)])
    assert found.sources == [str(tmp_path / "a.png")]
    assert found.other_names == [(tmp_path / "0_latest.png", tmp_path / "a.png")]


def test_ray_sources_take_a_file_once_when_two_inputs_name_it(tmp_path):
    """Inputs a.png and a link to it (named as two arguments, or by a list file): the
    file is predicted once, as the local engine predicts it."""
    from napari_focus.distributed.inputs import find_sources
    from napari_focus.input_files import find_inputs

    write_mask(tmp_path / "a.png", np.ones((40, 40), np.uint8))
    (tmp_path / "b.png").symlink_to("a.png")
    (tmp_path / "both.txt").write_text(f"{tmp_path / 'b.png'}\n{tmp_path / 'a.png'}\n")
    for inputs in ([tmp_path / "a.png", tmp_path / "b.png"], [tmp_path / "both.txt"]):
        found = find_sources([str(i) for i in inputs])
        local = find_inputs([str(i) for i in inputs])
        assert found.sources == [str(p) for p in local.images] == [str(tmp_path / "a.png")]
        assert found.other_names == local.other_names == [
            (tmp_path / "b.png", tmp_path / "a.png")
        ]
