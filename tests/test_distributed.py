"""Distributed prediction on a local Ray instance (2 CPUs) with the tiny model, against the
local `napari-focus predict`; plus the inputs and the refusals before any work (the
pieces that need no Ray at all are in test_distributed_manifest.py).

Each tiny-model prediction costs seconds on a CPU and each Ray worker loads its own
model, so the Ray runs are few: one folder run (reused by the rerun test) and one run
with a killed worker.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from napari_focus import FocusPredictor
from napari_focus.cli import main
from napari_focus.distributed import (
    journal,
    read_manifest,
    read_ranking,
)
from napari_focus.distributed.inputs import find_sources, list_sources, plan_outputs
from napari_focus.series.references import reference_mask_path

OLD_TIME_NS = 1_000_000_000 * 10**9


def run_cli(*args: str | os.PathLike) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:
            code = exit_.code
    return code, err.getvalue()


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def weights(tiny_mlp, tmp_path_factory) -> Path:
    arch, state = tiny_mlp
    predictor = FocusPredictor.from_state_dict(state, "sod", architecture=arch, device="cpu")
    folder = tmp_path_factory.mktemp("weights")
    return predictor.save_inference_checkpoint(folder / "tiny_sod.safetensors", dtype=torch.float32)


@pytest.fixture(scope="module")
def images(focus_reference, tmp_path_factory) -> Path:
    """photo.png (RGB), gray.png (8-bit gray), tall.jpg, broken.png (corrupt), notes.txt."""
    folder = tmp_path_factory.mktemp("images")
    source = Image.open(focus_reference / "input.png").convert("RGB")
    source.resize((80, 64), Image.BILINEAR).save(folder / "photo.png")
    source.convert("L").crop((60, 40, 188, 168)).resize((64, 64)).save(folder / "gray.png")
    source.resize((64, 96), Image.BILINEAR).save(folder / "tall.jpg", quality=90)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def both_runs(ray_local, images, weights, tmp_path_factory):
    """The folder through the local CLI and through --engine ray (with a series)."""
    root = tmp_path_factory.mktemp("runs")
    common = ("--task", "sod", "--weights", weights, "--probability", "--quiet")
    local = run_cli("predict", images, "--out", root / "local", "--device", "cpu", *common)
    distributed = run_cli(
        "predict", images, "--out", root / "ray", "--engine", "ray", "--num-workers", "1",
        "--series", root / "series", *common,
    )  # fmt: skip
    return root, local, distributed


def test_ray_engine_writes_the_local_masks(both_runs, images):
    """Same masks as the local engine; the corrupt file is a failed row, not a crash."""
    root, (local_code, local_err), (code, err) = both_runs
    assert local_code == 1, local_err
    assert code == 1, err  # because of broken.png
    assert "3 written, 0 skipped" in err and "1 failed" in err
    assert "broken.png" in err

    outputs = sorted(p.name for p in (root / "local").iterdir())
    assert outputs == [
        "gray.png", "gray_probability.png", "photo.png", "photo_probability.png",
        "tall.png", "tall_probability.png",
    ]  # fmt: skip
    assert sorted(p.name for p in (root / "ray").iterdir()) == sorted(
        [*outputs, "focus_manifest.parquet", "focus_rank.csv"]
    )
    for name in ("gray", "photo", "tall"):
        local_mask = (root / "local" / f"{name}.png").read_bytes()
        assert (root / "ray" / f"{name}.png").read_bytes() == local_mask, name
        # probabilities are float sums whose last bits follow the thread count
        local_prob = np.array(Image.open(root / "local" / f"{name}_probability.png"), int)
        prob = np.array(Image.open(root / "ray" / f"{name}_probability.png"), int)
        assert np.abs(prob - local_prob).max() <= 1

    rows = {
        Path(r["source"]).name: r for r in read_manifest(root / "ray" / "focus_manifest.parquet")
    }
    assert sorted(rows) == ["broken.png", "gray.png", "photo.png", "tall.jpg"]
    broken = rows.pop("broken.png")
    local_reason = local_err.split(f"failed: {images / 'broken.png'}: ")[-1].strip()
    assert broken["status"] == "failed" and broken["error"].endswith(local_reason)
    assert math.isnan(broken["uncertainty"])
    for name, row in rows.items():
        assert row["status"] == "written" and row["error"] == "", name
        mask = np.array(Image.open(row["mask"])) > 0
        assert row["foreground"] == pytest.approx(mask.mean())
        assert (row["height"], row["width"]) == mask.shape
        assert 0 <= row["uncertainty"] <= 1 and row["seconds"] > 0
        assert row["probability"].endswith(f"{row['name']}_probability.png")


def test_ranking_and_series_follow_the_uncertainty(both_runs, images):
    root, _, _ = both_runs
    rows = read_manifest(root / "ray" / "focus_manifest.parquet")
    by_doubt = sorted(
        (r for r in rows if r["status"] == "written"), key=lambda r: -r["uncertainty"]
    )
    expected = [Path(r["source"]).name for r in by_doubt] + ["broken.png"]
    ranks = read_ranking(root / "ray" / "focus_rank.csv")
    assert sorted(ranks, key=ranks.get) == expected

    from napari_focus.series.open_state import load_or_create

    state = load_or_create(root / "series", images)
    assert state.queue.keys() == expected
    assert state.queue.current.key == expected[0]
    # the widget's "existing masks" folder: each image finds its predicted mask
    for key in expected[:-1]:
        found = reference_mask_path(images / key, root / "ray", relative=key)
        assert found == root / "ray" / f"{Path(key).stem}.png"
    assert reference_mask_path(images / "broken.png", root / "ray") is None


def test_rerun_skips_everything(both_runs, images, weights):
    root, _, _ = both_runs
    out = root / "ray"
    for path in out.iterdir():
        if path.suffix == ".png":
            os.utime(path, ns=(OLD_TIME_NS, OLD_TIME_NS))
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    first = {r["source"]: r for r in read_manifest(out / "focus_manifest.parquet")}

    valid = [images / "photo.png", images / "gray.png", images / "tall.jpg"]
    code, err = run_cli(
        "predict", *valid, "--task", "sod", "--weights", weights, "--out", out,
        "--probability", "--engine", "ray", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "0 written, 3 skipped" in err and "0 failed" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == before
    rows = read_manifest(out / "focus_manifest.parquet")
    assert [Path(r["source"]).name for r in rows] == ["photo.png", "gray.png", "tall.jpg"]
    for row in rows:  # the scores of the run that wrote the outputs are kept
        assert row["status"] == "skipped"
        assert row["uncertainty"] == first[row["source"]]["uncertainty"]
        assert row["worker"] == first[row["source"]]["worker"]

    (out / "gray_probability.png").unlink()  # the map is made again, the mask kept
    code, err = run_cli(
        "predict", *valid, "--task", "sod", "--weights", weights, "--out", out,
        "--probability", "--engine", "ray", "--quiet",
    )  # fmt: skip
    assert code == 0 and "1 written (1 existing file(s) among them kept), 2 skipped" in err, err
    assert (out / "gray.png").stat().st_mtime_ns == before["gray.png"]
    assert (out / "gray_probability.png").is_file()


def _actor_pids() -> list[int]:
    import psutil

    pids = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if "FocusWorker" in " ".join(process.info["cmdline"] or []):
                pids.append(process.info["pid"])
    return pids


def test_killed_worker_is_retried_and_nothing_is_written_twice(
    ray_local, focus_reference, weights, tmp_path, caplog
):
    from napari_focus.distributed import predict_dataset

    # Ray Data's debug record of its settings has a formatting error that pytest's log
    # capture raises (logging's own handlers print it and go on)
    caplog.set_level(logging.INFO, logger="ray.data._internal.execution.streaming_executor")

    folder = tmp_path / "images"
    names = _turned_photos(focus_reference, folder, 30, lambda i: (64 + 8 * i, 72))
    # inputs as a list file, one entry a file:// URI
    listing = tmp_path / "inputs.txt"
    entries = [f"images/{n}.png" for n in names[:-1]] + [(folder / f"{names[-1]}.png").as_uri()]
    listing.write_text("# six images\n" + "\n".join(entries) + "\n")
    out = tmp_path / "masks"

    result: dict = {}

    def run() -> None:
        try:
            result["run"] = predict_dataset(
                listing, out, task="sod", weights=weights, num_workers=2, batch_size=1,
                probability=True, progress=False,
            )  # fmt: skip
        except BaseException as error:
            result["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    first_seen: dict[str, tuple[int, int]] = {}
    killed, written_at_kill = None, 0
    deadline = time.monotonic() + 600
    while thread.is_alive() and time.monotonic() < deadline:
        if out.is_dir():
            for path in out.iterdir():
                # temp files are renamed away at any moment: only final outputs count
                if path.name.startswith(".") or path.suffix != ".png":
                    continue
                if path.name not in first_seen:
                    stat = path.stat()
                    first_seen[path.name] = (stat.st_ino, stat.st_mtime_ns)
        masks = [n for n in first_seen if not n.endswith("_probability.png")]
        if killed is None and masks:
            pids = _actor_pids()
            if pids:
                killed, written_at_kill = pids[0], len(masks)
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    thread.join(timeout=60)
    assert "error" not in result, result.get("error")
    assert killed is not None and written_at_kill < len(names)

    run = result["run"]
    assert [r["name"] for r in run.rows] == names
    assert [r["status"] for r in run.rows] == ["written"] * len(names), run.rows
    expected = sorted([f"{n}.png" for n in names] + [f"{n}_probability.png" for n in names])
    assert sorted(p.name for p in out.iterdir()) == sorted([*expected, "focus_manifest.parquet"])
    for name in expected:  # every output written once: the file first seen is the last
        stat = (out / name).stat()
        assert first_seen.get(name, (stat.st_ino, stat.st_mtime_ns)) == (
            stat.st_ino,
            stat.st_mtime_ns,
        ), name
    assert len(read_manifest(run.manifest)) == len(names)


# --- without Ray ---------------------------------------------------------------------------


def test_sources_from_folders_globs_lists_and_uris(images, tmp_path):
    pytest.importorskip("pyarrow")  # object-store URIs go through pyarrow's file systems
    remote = tmp_path / "bucket"
    remote.mkdir()
    for name in ("x.png", "gray.png", "readme.txt"):
        (remote / name).write_bytes(b"")
    listing = tmp_path / "more.list"
    listing.write_text(f"# inputs\n{images / 'photo.png'}\n\n{images}/*.jpg\nmissing.png\n")
    sources, unmatched = list_sources(
        [str(images / "gray.png"), remote.as_uri(), str(listing), str(tmp_path / "nope")]
    )
    assert sources == [
        str(images / "gray.png"),
        (remote / "gray.png").as_uri(),
        (remote / "x.png").as_uri(),
        str(images / "photo.png"),
        str(images / "tall.jpg"),
    ]
    assert unmatched == [  # in the local engine's words
        f"'{tmp_path / 'missing.png'}' does not exist (no such file or folder); check the "
        f"path (listed in {listing})",
        f"'{tmp_path / 'nope'}' does not exist (no such file or folder); check the path",
    ]

    plan = plan_outputs(sources, tmp_path / "out", image_format="tif", probability=True)
    assert [j.name for j in plan.todo] == ["gray", "x", "photo", "tall"]
    assert plan.todo[0].probability == str(tmp_path / "out" / "gray_probability.tif")
    ((clash, reason),) = plan.clashes
    assert clash.source == (remote / "gray.png").as_uri() and "same output name" in reason


def _tree(focus_reference: Path, root: Path) -> Path:
    """top.png, a/x.png, b/x.png (one stem twice), b/deep/y.jpg, .hidden/z.png."""
    source = Image.open(focus_reference / "input.png").convert("RGB")
    files = {"top.png": 0, "a/x.png": 40, "b/x.png": 80, "b/deep/y.jpg": 120, ".hidden/z.png": 0}
    for name, left in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        source.crop((left, 20, left + 96, 100)).resize((64, 56)).save(path)
    return root


def test_recursive_sources_keep_their_subfolders_local_and_as_uris(focus_reference, tmp_path):
    pytest.importorskip("pyarrow")
    tree = _tree(focus_reference, tmp_path / "tree")
    out = tree / "masks"  # inside the tree: its masks are no inputs
    out.mkdir()
    Image.new("L", (64, 56)).save(out / "x.png")
    expected = {"top.png": "", "a/x.png": "a", "b/deep/y.jpg": "b/deep", "b/x.png": "b"}
    for given, named in ((str(tree), str), (tree.as_uri(), lambda p: Path(p).as_uri())):
        found = find_sources([given], recursive=True, exclude=[out])
        relative = {s.split(str(tree.as_uri() if "://" in s else tree))[1][1:]: s
                    for s in found.sources}  # fmt: skip
        assert sorted(relative) == sorted(expected) and found.unmatched == []
        for key, subfolder in expected.items():
            assert relative[key] == named(tree / key)
            assert found.subfolders[relative[key]] == subfolder
    from napari_focus.series.state_file import STATE_NAME

    (tree / "a" / "series").mkdir()  # the widget's series folder: no input images
    (tree / "a" / "series" / STATE_NAME).write_text("{}")
    Image.new("L", (64, 56)).save(tree / "a" / "series" / "autosave.png")
    listing = tmp_path / "self.list"  # a list that lists itself is read once
    listing.write_text(f"{listing}\n{tree.as_uri()}\n")
    for given in ([str(tree)], [tree.as_uri()], [str(listing)]):
        found = find_sources(given, recursive=True, exclude=[out])
        assert len(found.sources) == 4 and found.unmatched == [], (given, found)
    flat = find_sources([str(tree)])  # not recursive: the folder's own images only
    assert flat.sources == [str(tree / "top.png")] and flat.subfolders == {flat.sources[0]: ""}

    found = find_sources([str(tree)], recursive=True, exclude=[out])
    plan = plan_outputs(found.sources, out, subfolders=found.subfolders)
    assert plan.clashes == [] and plan.existing == []
    assert sorted(Path(job.mask).relative_to(out).as_posix() for job in plan.todo) == [
        "a/x.png", "b/deep/y.png", "b/x.png", "top.png",
    ]  # fmt: skip


def test_a_model_the_workers_cannot_load_is_a_clear_error(ray_local, images, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ray.data._internal.execution.streaming_executor")
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    code, err = run_cli(
        "predict", images / "photo.png", "--task", "sod", "--weights", bad, "--out",
        tmp_path / "out", "--engine", "ray", "--quiet",
    )  # fmt: skip
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"napari-focus: cannot load the model: {bad}"), last
    rows = read_manifest(tmp_path / "out" / "focus_manifest.parquet")
    assert [r["status"] for r in rows] == ["pending"]


def test_recursive_writes_each_mask_into_its_subfolder_and_ranks_by_relative_path(
    ray_local, focus_reference, weights, tmp_path
):
    """--recursive on a tree: one stem in two subfolders gives two masks, the manifest,
    the ranking and the series name images by their paths below the folder."""
    tree = _tree(focus_reference, tmp_path / "tree")
    out = tree / "masks"
    code, err = run_cli(
        "predict", tree, "--recursive", "--out", out, "--engine", "ray", "--task", "sod",
        "--weights", weights, "--num-workers", "1", "--series", tmp_path / "series", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "4 written, 0 skipped" in err and "not included" not in err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["a/x.png", "b/deep/y.png", "b/x.png", "top.png"]
    assert (out / "a" / "x.png").read_bytes() != (out / "b" / "x.png").read_bytes()
    rows = read_manifest(out / "focus_manifest.parquet")
    assert {Path(r["mask"]).relative_to(out).as_posix() for r in rows} == set(written)
    ranks = read_ranking(out / "focus_rank.csv")
    assert sorted(ranks) == ["a/x.png", "b/deep/y.jpg", "b/x.png", "top.png"]

    from napari_focus.series.open_state import load_or_create

    # as the Series tab opens it (include subfolders; start masks: the output folder)
    state = load_or_create(tmp_path / "series", tree, recursive=True, exclude=[out])
    assert state.queue.keys() == sorted(ranks, key=ranks.get)
    assert "'start masks' " + str(out) in err and "include subfolders ticked" in err
    for key in ranks:  # the Series tab's start masks: each image finds its own mask
        found = reference_mask_path(tree / key, out, relative=key)
        assert found == out / Path(key).with_suffix(".png")

    code, err = run_cli(
        "predict", tree, "--out", tmp_path / "flat", "--engine", "ray", "--task", "sod",
        "--weights", weights, "--num-workers", "1", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "not included" not in err  # --quiet: the summary only (the note is the local
    # engine's, tested there)
    assert sorted(p.name for p in (tmp_path / "flat").glob("*.png")) == ["top.png"]

    # the first run's masks, inside the tree, are no images of a run elsewhere (the note
    # is the local engine's, tested there; --quiet: Ray Data's debug lines under pytest)
    assert find_sources([str(tree)], recursive=True).mask_folders == [out]
    again = tmp_path / "again"
    code, err = run_cli(
        "predict", tree, "--recursive", "--out", again, "--engine", "ray", "--task", "sod",
        "--weights", weights, "--num-workers", "1", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert sorted(p.relative_to(again).as_posix() for p in again.rglob("*.png")) == written


def test_the_image_folder_of_a_recursive_run_is_the_folder_its_masks_mirror(tmp_path):
    """All images in one subfolder: the ranking and the series name them by their path
    below the folder given, as their masks lie below the output folder."""
    from napari_focus.distributed.manifest import image_folder_of

    tree, out = tmp_path / "tree", tmp_path / "out"
    rows = [
        {"source": str(tree / "a" / "x.png"), "mask": str(out / "a" / "x.png")},
        {"source": str(tree / "a" / "deep" / "y.png"), "mask": str(out / "a" / "deep" / "y.png")},
        {"source": str(tree / "a" / "z.png"), "mask": ""},  # a clash: no mask of its own
    ]
    assert image_folder_of(rows) == tree / "a"
    assert image_folder_of(rows, out) == tree
    flat = [{"source": str(tree / d / "x.png"), "mask": str(out / f"{d}.png")} for d in "ab"]
    assert image_folder_of(flat, out) == tree  # two folders' images flat in out
    assert image_folder_of([{"source": "s3://b/x.png", "mask": str(out / "x.png")}], out) is None


def test_a_ranking_that_cannot_be_written_is_said_and_a_rerun_writes_it(
    ray_local, images, weights, tmp_path, monkeypatch, caplog
):
    import errno

    # as in the test above: keeps Ray's unformattable data-context record out of caplog
    caplog.set_level(logging.INFO, logger="ray.data._internal.execution.streaming_executor")

    from napari_focus.atomic import WriteError
    from napari_focus.distributed import manifest as manifest_module

    real_write_ranking = manifest_module.write_ranking

    def full_disk(rows, path, image_folder=None):
        raise WriteError(path, OSError(errno.ENOSPC, "No space left on device"))

    out = tmp_path / "out"
    args = ("predict", images / "photo.png", "--task", "sod", "--weights", weights,
            "--out", out, "--engine", "ray", "--quiet")  # fmt: skip
    monkeypatch.setattr(manifest_module, "write_ranking", full_disk)
    code, err = run_cli(*args)
    assert code == 1, err
    assert "the ranking was not written: could not write" in err and "the disk is full" in err
    assert "Traceback" not in err and "1 written" in err
    assert (out / "photo.png").is_file() and (out / "focus_manifest.parquet").is_file()
    monkeypatch.setattr(manifest_module, "write_ranking", real_write_ranking)
    code, err = run_cli(*args)  # what the message says to do
    assert code == 0, err
    assert "0 written, 1 skipped" in err and "ranking" in err
    assert len(read_ranking(out / "focus_rank.csv")) == 1


def test_engine_ray_without_ray_says_how_to_install(images, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code, err = run_cli(
        "predict", images / "photo.png", "--task", "sod", "--out", tmp_path, "--engine", "ray"
    )
    assert code == 2
    assert "pip install 'ray[data]>=2.60,<3' (napari-focus's 'ray' extra)" in err
    assert not any(tmp_path.iterdir())


def test_bad_settings_stop_before_any_work(images, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "out"
    common = ("predict", images / "photo.png", "--task", "sod", "--out", out, "--engine", "ray")
    code, err = run_cli(*common, "--manifest", tmp_path / "results.json")
    assert code == 2 and "a manifest is a .parquet or .csv file" in err
    code, err = run_cli(*common, "--weights", tmp_path / "missing.safetensors")
    assert code == 2 and f"--weights {tmp_path / 'missing.safetensors'}: no such file" in err
    code, err = run_cli(*common, "--device", "cuda:1")
    assert code == 2 and "--gpus-per-worker" in err
    assert not out.exists()
    out.mkdir()  # every output there already (a rerun): the settings are refused as before
    Image.new("L", (80, 64)).save(out / "photo.png")
    for flag, value, words in [
        ("--num-workers", "0", "--num-workers must be at least 1"),
        ("--gpus-per-worker", "-1", "--gpus-per-worker must be 0 (CPU) or more"),
        ("--cpus-per-worker", "0", "--cpus-per-worker: must be above 0"),
    ]:
        code, err = run_cli(*common, flag, value)
        assert code == 2 and words in err, err
    assert sorted(p.name for p in out.iterdir()) == ["photo.png"]


@pytest.mark.parametrize("kind", ["other table", "binary", "folder"])
def test_a_file_that_is_no_manifest_is_never_replaced(images, tmp_path, kind):
    from napari_focus.distributed.engine import predict_dataset

    manifest = tmp_path / ("results.csv" if kind != "binary" else "results.parquet")
    if kind == "folder":
        manifest.mkdir()
    elif kind == "binary":
        manifest.write_bytes(b"\x00\x01 not parquet")
    else:
        manifest.write_text("sample,score\ncat,0.5\n", encoding="utf-8")
    before = None if kind == "folder" else manifest.read_bytes()
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="will not replace it; move it away") as info:
        predict_dataset(images / "photo.png", out, task="sod", manifest=manifest)
    assert str(manifest) in str(info.value)
    assert not out.exists()  # refused before any work
    assert kind == "folder" or manifest.read_bytes() == before


@pytest.mark.parametrize("blocked", ["out", "manifest"])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(images, tmp_path, blocked):
    from napari_focus.distributed.engine import predict_dataset

    blocker = tmp_path / "a file"
    blocker.write_text("in the way", encoding="utf-8")
    out = blocker if blocked == "out" else tmp_path / "out"
    manifest = blocker / "results.csv" if blocked == "manifest" else None
    with pytest.raises(ValueError, match="choose another output folder or manifest") as info:
        predict_dataset(images / "photo.png", out, task="sod", manifest=manifest)
    assert f"could not write {blocker}" in str(info.value)
    assert not (tmp_path / "out").exists() and blocker.read_text(encoding="utf-8") == "in the way"


def test_an_image_sharing_its_stem_gets_no_other_images_mask(images, tmp_path):
    """photo.png and photo.jpg both name photo.png in --out: the run writes one and fails
    the other; the series' start-mask lookup then gives neither image that mask (it
    cannot tell whose it is), and the failed row names no output."""
    pytest.importorskip("ray")
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("photo.png", "gray.png"):
        (folder / name).write_bytes((images / name).read_bytes())
    Image.open(images / "photo.png").save(folder / "photo.jpg", quality=90)
    out = tmp_path / "masks"
    out.mkdir()
    for name in ("photo", "gray"):  # outputs of an earlier run: nothing left to predict
        Image.fromarray(np.full((64, 64), 255, np.uint8)).save(out / f"{name}.png")
    code, err = run_cli(
        "predict", folder, "--task", "sod", "--out", out, "--engine", "ray",
        "--series", tmp_path / "series", "--quiet",
    )  # fmt: skip
    assert code == 1, err
    assert "0 written, 2 skipped" in err and "1 failed" in err
    assert f"failed: {folder / 'photo.png'}: same output name as {folder / 'photo.jpg'}" in err
    assert "images that share a stem with another start without one: rename one" in err
    rows = {Path(r["source"]).name: r for r in read_manifest(out / "focus_manifest.parquet")}
    assert rows["photo.png"]["status"] == "failed"
    assert rows["photo.png"]["mask"] == rows["photo.png"]["probability"] == ""
    assert rows["photo.jpg"]["mask"] == str(out / "photo.png")

    from napari_focus.series import find_reference_mask
    from napari_focus.series.open_state import load_or_create

    state = load_or_create(tmp_path / "series", folder)
    assert sorted(state.queue.keys()) == ["gray.png", "photo.jpg", "photo.png"]
    assert reference_mask_path(folder / "photo.png", out) is None
    assert find_reference_mask(folder / "photo.png", out) is None
    assert reference_mask_path(folder / "photo.jpg", out) is None  # whose mask it is: unknown
    assert reference_mask_path(folder / "gray.png", out) == out / "gray.png"
    # a mask beside its image, named by the stem, is still found
    assert reference_mask_path(folder / "photo.jpg", folder) == folder / "photo.png"


def _turned_photos(
    focus_reference: Path, folder: Path, degrees: int, size, count: int = 6
) -> list[str]:
    """``count`` images ``img_i.png`` in ``folder``: the reference photo turned
    ``degrees * i`` and resized to ``size(i)``; returns their names."""
    source = Image.open(focus_reference / "input.png").convert("RGB")
    folder.mkdir()
    names = [f"img_{i}" for i in range(count)]
    for i, name in enumerate(names):
        source.rotate(degrees * i).resize(size(i), Image.BILINEAR).save(folder / f"{name}.png")
    return names


def test_an_interrupted_run_records_every_mask_it_wrote(
    ray_local, focus_reference, weights, tmp_path, caplog
):
    """Ctrl-C while a worker is writing a batch: the manifest (or, for a mask written
    after the stop, the next run's) has every mask on disk with its scores; the summary
    says what was done; the rerun goes on."""
    caplog.set_level(logging.INFO, logger="ray.data._internal.execution.streaming_executor")
    folder = tmp_path / "images"
    # ten worker calls: with two of six images in flight at the stop, a run of six could
    # finish every one before the stop (seen on a loaded 2-core machine)
    names = _turned_photos(focus_reference, folder, 45, lambda i: (64, 64), count=30)
    out = tmp_path / "masks"
    # three images a worker call: the first mask is on disk while its row is not back
    args = ("predict", folder, "--task", "sod", "--weights", weights, "--out", out,
            "--engine", "ray", "--num-workers", "1", "--batch-size", "3", "--quiet")  # fmt: skip

    def interrupt_at_first_mask() -> None:
        deadline = time.monotonic() + 300
        while not (out / "img_0.png").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        watcher = threading.Thread(target=interrupt_at_first_mask)
        watcher.start()
        code, err = run_cli(*args)
        watcher.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130, err
    rows = read_manifest(out / "focus_manifest.parquet")
    written = [r for r in rows if r["status"] == "written"]
    pending = [r for r in rows if r["status"] == "pending"]
    assert written and pending and len(written) + len(pending) == len(names), rows
    assert f"napari-focus: interrupted: {len(written)} written, 0 skipped" in err
    assert f"{len(pending)} not done (run the same command again to go on)" in err
    for row in written:
        assert Path(row["mask"]).is_file() and 0 <= row["uncertainty"] <= 1, row
    on_disk = _settled_masks(out)

    code, err = run_cli(*args)
    assert code == 0, err
    assert f"{len(names) - len(on_disk)} written, {len(on_disk)} skipped" in err
    rows = read_manifest(out / "focus_manifest.parquet")
    assert sorted(r["name"] for r in rows if r["status"] == "skipped") == sorted(on_disk)
    for row in rows:  # the scores of every mask, whichever run recorded it
        assert 0 <= row["uncertainty"] <= 1 and row["width"] == 64, row
    # the journal read was removed; its stop file stays (this Ray instance stays up)
    hidden = sorted(p.name for p in out.rglob(".*") if p.is_file())
    assert hidden == [], hidden
    kept = [p.name for p in (out / ".napari_focus_results").rglob("*") if p.is_file()]
    assert kept == ["stop"], kept


def _settled_masks(out: Path) -> set[str]:
    """The masks on disk once the stopped worker has finished the write it was in
    (every mask it journaled is there, and nothing new for a second)."""
    deadline, seen, since = time.monotonic() + 120, None, time.monotonic()
    while time.monotonic() < deadline:
        masks = {p.stem for p in out.glob("img_*.png")}
        rows = journal.read_rows((out / journal.JOURNAL_FOLDER).glob("*"))
        journaled = {Path(row["mask"]).stem for row in rows}
        lines = sum(len(p.read_text().splitlines()) for p in out.rglob("*.jsonl"))
        if masks != seen or len(journaled) != lines:
            seen, since = masks, time.monotonic()
        elif time.monotonic() - since > 1:
            return masks
        time.sleep(0.05)
    raise AssertionError(f"the stopped worker still writes in {out}")


def test_quiet_keeps_rays_own_lines_off_the_terminal(images, weights, tmp_path):
    """--quiet: only the command's own lines (a new local Ray instance, one worker)."""
    pytest.importorskip("ray")
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "napari_focus", "predict", str(images / "photo.png"), "--task",
         "sod", "--weights", str(weights), "--out", str(tmp_path / "out"), "--engine", "ray",
         "--quiet"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("napari-focus: ") for line in lines), lines
    assert "1 written" in lines[-1] and "(1 Ray worker, " in lines[-1]


def test_a_journal_read_by_the_next_run_keeps_a_stop_its_workers_may_still_need(tmp_path):
    """The next run takes a stopped run's rows and removes its journal; the stop file
    stays for a day where the stopped run's workers are on a cluster that stays up."""
    root = tmp_path / journal.JOURNAL_FOLDER
    local, staying, old = root / "local", root / "staying", root / "old"
    for folder, stays in ((local, False), (staying, True), (old, True)):
        journal.append(str(folder), {"source": "a.png", "mask": str(tmp_path / "a.png")})
        journal.request_stop(folder, workers_stay=stays)
    two_days_ago = time.time() - 2 * journal.STALE_AFTER_S
    os.utime(old / journal.STOP_NAME, (two_days_ago, two_days_ago))

    journal.remove([local, staying, old])
    assert not local.exists() and not old.exists()
    assert [p.name for p in staying.iterdir()] == [journal.STOP_NAME]
    assert journal.stop_requested(str(staying))
    journal.remove([staying])  # the run after keeps it too, until it is a day old
    assert journal.stop_requested(str(staying))


def test_series_of_other_images_or_a_file_is_refused_before_any_work(
    both_runs, images, weights, focus_reference, tmp_path
):
    root = both_runs[0]
    other = tmp_path / "other"
    other.mkdir()
    Image.open(focus_reference / "input.png").convert("RGB").resize((64, 48)).save(
        other / "photo.png"  # another picture of a name the series holds
    )
    saved = (root / "series" / ".napari_focus_queue.json").read_bytes()
    common = ("--task", "sod", "--weights", weights, "--engine", "ray", "--quiet")
    code, err = run_cli("predict", other, "--out", tmp_path / "m", "--series", root / "series",
                        *common)  # fmt: skip
    assert code == 2, err
    assert (f"napari-focus: --series {root / 'series'} keeps the series of the images of "
            f"{images.resolve()}, not of {other}; choose another --series folder") in err
    assert not (tmp_path / "m").exists()
    assert (root / "series" / ".napari_focus_queue.json").read_bytes() == saved
    (tmp_path / "afile").write_text("")
    code, err = run_cli("predict", other, "--out", tmp_path / "m", "--series",
                        tmp_path / "afile", *common)  # fmt: skip
    assert code == 2 and f"--series {tmp_path / 'afile'} is a file" in err, err
    assert "Traceback" not in err and not (tmp_path / "m").exists()
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / ".napari_focus_queue.json").write_text(
        '{"schema": "napari-focus-queue", "version": 99, "items": []}'
    )
    code, err = run_cli("predict", other, "--out", tmp_path / "m", "--series", newer, *common)
    assert code == 2 and f"--series {newer}: " in err and "has state version 99" in err, err
    assert not (tmp_path / "m").exists()


def test_a_file_of_the_user_s_at_the_ranking_s_name_is_refused_before_any_work(
    images, weights, tmp_path
):
    pytest.importorskip("ray")  # --engine ray asks for Ray first
    out = tmp_path / "masks"
    out.mkdir()
    (out / "focus_rank.csv").write_text("my precious notes\n")
    code, err = run_cli("predict", images, "--task", "sod", "--weights", weights, "--out", out,
                        "--engine", "ray", "--quiet")  # fmt: skip
    assert code == 2, err
    assert (f"napari-focus: {out / 'focus_rank.csv'} exists and is not a ranking CSV: the run "
            "would replace it with its ranking") in err  # fmt: skip
    assert (out / "focus_rank.csv").read_text() == "my precious notes\n"
    assert sorted(p.name for p in out.iterdir()) == ["focus_rank.csv"]


def test_an_unreadable_series_state_is_said_when_set_aside(ray_local, images, weights, tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    (series / ".napari_focus_queue.json").write_text("{ not json")
    code, err = run_cli("predict", images, "--task", "sod", "--weights", weights, "--out",
                        tmp_path / "m", "--engine", "ray", "--num-workers", "1", "--series",
                        series, "--quiet")  # fmt: skip
    assert code == 1, err  # broken.png
    assert (f"napari-focus: note: the series state in --series {series} could not be read; "
            "it was set aside as .napari_focus_queue.json.bad-") in err  # fmt: skip
    assert "resumed from nothing: it starts afresh" in err
