"""`napari-focus predict` as a pipeline: same bytes as a serial run, --out checked
before the model loads, SIGINT/SIGTERM end in order with a summary."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli import REPO_ROOT, run_cli

from napari_focus import FocusPredictor
from napari_focus.io import read_image, write_mask, write_probability
from napari_focus.mask_provenance import MadeBy
from napari_focus.pipeline import Job, run_pipeline


@pytest.fixture(scope="module")
def weights(tiny_mlp, tmp_path_factory) -> Path:
    arch, state = tiny_mlp
    predictor = FocusPredictor.from_state_dict(state, "sod", architecture=arch, device="cpu")
    return predictor.save_inference_checkpoint(tmp_path_factory.mktemp("w") / "tiny.safetensors")


@pytest.fixture(scope="module")
def folder(focus_reference, tmp_path_factory) -> Path:
    """Four images: two of one size (PNG, JPEG), two others (one gray), a broken file."""
    out = tmp_path_factory.mktemp("mixed")
    source = Image.open(focus_reference / "input.png").convert("RGB")
    source.resize((80, 64), Image.BILINEAR).save(out / "a.png")
    source.transpose(Image.FLIP_LEFT_RIGHT).resize((80, 64)).save(out / "b.jpg", quality=90)
    source.resize((64, 64), Image.BILINEAR).save(out / "c.png")
    source.convert("L").resize((70, 50)).save(out / "f.png")
    (out / "g.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return out


def test_the_throughput_line_counts_what_was_processed(folder, weights, tmp_path):
    out = tmp_path / "masks"
    args = ("predict", folder, "--task", "sod", "--weights", weights, "--out", out,
            "--device", "cpu")  # fmt: skip
    code, err = run_cli(*args)
    assert code == 1, err
    assert "napari-focus: 5 images in " in err and " images/s" in err  # g.png failed
    code, err = run_cli(*args)  # the masks exist: only the broken file is read again,
    assert "failed: " in err and "images/s" not in err, err  # a rate of no image written
    good = [folder / name for name in ("a.png", "b.jpg", "c.png", "f.png")]
    code, err = run_cli("predict", *good, *args[2:])  # all exist: nothing read, no rate
    assert code == 0, err
    assert "images/s" not in err, err


def test_pipelined_cli_writes_the_bytes_of_a_serial_run(folder, weights, tmp_path):
    """Readers ahead and a writer behind change no byte (at batch size 1: larger batches
    equal it up to float rounding, tests/test_batching.py)."""
    out = tmp_path / "masks"
    code, err = run_cli(
        "predict", folder, "--task", "sod", "--weights", weights, "--out", out,
        "--probability", "--device", "cpu", "--batch-size", "1", "--workers", "3", "--quiet",
    )  # fmt: skip
    assert code == 1, err  # g.png is broken
    assert "4 written" in err and "images/s" not in err
    assert err.count("in no image format") == 1, err  # --quiet: in the summary only

    serial = tmp_path / "serial"
    predictor = FocusPredictor.from_checkpoint(weights, device="cpu")
    for path in sorted(folder.iterdir()):
        if path.name == "g.png":
            continue
        result = predictor.predict(read_image(path))
        record = MadeBy.of_run("sod", None, weights).text()  # as predict records it
        write_mask(serial / f"{path.stem}.png", result.mask, record=record)
        write_probability(
            serial / f"{path.stem}_probability.png", result.probability, record=record
        )
    names = sorted(os.listdir(serial))
    assert sorted(os.listdir(out)) == names and len(names) == 8
    for name in names:
        assert (out / name).read_bytes() == (serial / name).read_bytes(), name


def test_run_pipeline_reports_each_image_in_order_of_completion(folder, weights, tmp_path):
    predictor = FocusPredictor.from_checkpoint(weights, device="cpu")
    jobs = [Job(folder / n, tmp_path / f"{Path(n).stem}.png") for n in ("g.png", "c.png")]
    seen = []
    summary = run_pipeline(predictor, jobs, workers=1, on_done=lambda j, e: seen.append((j, e)))
    assert summary.written == 1 and len(summary.failures) == 1
    assert summary.interrupted is None and summary.images_per_second > 0
    assert seen[0][0].source.name == "g.png" and seen[0][1]
    assert seen[1] == (jobs[1], None)
    assert (tmp_path / "c.png").is_file()
    with pytest.raises(ValueError, match="workers"):
        run_pipeline(predictor, jobs, workers=0)


def test_an_output_that_appears_during_the_run_is_kept(folder, weights, tmp_path):
    """Planned while absent, saved by someone (napari, say) before the writer got to it:
    without overwrite it stays, and the image fails saying so; with overwrite it goes."""
    predictor = FocusPredictor.from_checkpoint(weights, device="cpu")
    saved = tmp_path / "c.png"
    saved.write_bytes(b"corrected by hand")
    probability = tmp_path / "c_probability.png"
    job = Job(folder / "c.png", saved, probability, overwrite=False)  # predict's default
    summary = run_pipeline(predictor, [job], workers=1)
    assert summary.written == 0 and summary.failures == [
        (folder / "c.png", "c.png appeared in the output folder while the run went on; it is "
                           "kept (--overwrite replaces it)")
    ]  # fmt: skip
    assert saved.read_bytes() == b"corrected by hand" and not probability.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    summary = run_pipeline(predictor, [replace(job, overwrite=True)], workers=1)
    assert summary.written == 1 and saved.read_bytes().startswith(b"\x89PNG")
    assert probability.is_file()


def test_a_full_disk_stops_the_run_instead_of_failing_every_image(
    folder, weights, tmp_path, monkeypatch
):
    import errno

    from napari_focus import io
    from napari_focus.atomic import WriteError

    written: list[str] = []

    def fills_up(path, mask, **_how):
        if written:
            raise WriteError(path, OSError(errno.ENOSPC, "No space left on device"))
        written.append(Path(path).name)
        return Path(path)

    monkeypatch.setattr(io, "write_mask", fills_up)
    images = sorted(p for p in folder.iterdir() if p.suffix == ".png")
    assert len(images) >= 3
    predictor = FocusPredictor.from_checkpoint(weights, device="cpu")
    jobs = [Job(image, tmp_path / image.name) for image in images for _ in range(3)]
    summary = run_pipeline(predictor, jobs, workers=1, batch_size=1)
    assert summary.written == 1 and summary.stopped is not None
    assert "the disk is full" in summary.stopped, summary.stopped
    assert summary.not_done >= len(jobs) - 6  # stopped at once, not after every image
    assert summary.written + len(summary.failures) + summary.not_done == len(jobs)


def test_a_failure_without_a_message_is_still_reported_in_words(
    folder, weights, tmp_path, monkeypatch
):
    predictor = FocusPredictor.from_checkpoint(weights, device="cpu")

    def bare_assert(inputs, *, batch_size=None):
        raise AssertionError  # e.g. a shape check deep in the model: str() is ""

    monkeypatch.setattr(predictor, "predict_prepared", bare_assert)
    seen = []
    summary = run_pipeline(predictor, [Job(folder / "c.png", tmp_path / "c.png")], workers=1,
                           on_done=lambda j, e: seen.append(e))  # fmt: skip
    assert seen == ["AssertionError"] and summary.failures[0][1] == "AssertionError"


@pytest.mark.parametrize("blocker", ["file", "readonly"])
def test_unusable_out_is_reported_before_the_model_loads(folder, tmp_path, blocker, request):
    if blocker == "file":
        out = tmp_path / "taken"
        out.write_text("a file where the folder should be")
        target = out / "masks"
    else:
        out = tmp_path / "locked"
        out.mkdir()
        if os.geteuid() == 0:  # root ignores folder permissions: a read-only file system
            mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs",
                                      str(out)], capture_output=True)  # fmt: skip
            if mounted.returncode:
                pytest.skip(f"root ignores folder permissions, and no read-only tmpfs here: "
                            f"{mounted.stderr.decode().strip()}")  # fmt: skip
            request.addfinalizer(lambda: subprocess.run(["umount", str(out)], check=False))
        else:
            out.chmod(0o500)
        target = out
    missing_weights = tmp_path / "never_read.safetensors"  # loading would fail differently
    code, err = run_cli(
        "predict", folder / "a.png", "--task", "sod", "--weights", missing_weights,
        "--out", target, "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert code == 2, err
    assert "--out" in err and str(target) in err
    assert "cannot load the model" not in err and "--weights" not in err
    assert list(tmp_path.glob("**/.napari_focus-tmp-*")) == []
    if blocker == "readonly" and os.geteuid() != 0:
        out.chmod(0o700)


def test_precision_the_device_cannot_run_is_refused_first(folder, tmp_path):
    code, err = run_cli(
        "predict", folder / "a.png", "--task", "sod", "--weights", tmp_path / "unread.pth",
        "--out", tmp_path / "masks", "--device", "cpu", "--precision", "float16", "--quiet",
    )  # fmt: skip
    assert code == 2, err
    assert "--precision float16" in err and "CUDA or MPS" in err
    assert "cannot load the model" not in err and not (tmp_path / "masks").exists()
    (tmp_path / "masks").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "masks" / "a.png")  # nothing left to do
    code, err = run_cli(
        "predict", folder / "a.png", "--task", "sod", "--out", tmp_path / "masks",
        "--device", "cpu", "--precision", "float16", "--quiet",
    )  # fmt: skip
    assert code == 2 and "--precision float16" in err, err  # as with work to do
    code, err = run_cli("predict", folder / "a.png", "--task", "sod", "--out", "")
    assert code == 2 and "argument --out: is empty (an unset shell variable?)" in err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_ends_the_run_with_a_summary_and_no_partial_files(
    focus_reference, weights, tmp_path, signum
):
    images = tmp_path / "images"
    images.mkdir()
    source = Image.open(focus_reference / "input.png").convert("RGB")
    for i in range(8):
        source.rotate(i * 10).resize((96, 72)).save(images / f"img{i:02d}.png")
    out = tmp_path / "masks"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "napari_focus.cli", "predict", str(images), "--task", "sod",
            "--weights", str(weights), "--out", str(out), "--device", "cpu", "--probability",
        ],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tmp_path,
        # as in a terminal: a test run in the background may have SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not (out.is_dir() and any(out.glob("*_probability.png"))):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no output appeared"
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    assert "interrupted:" in err and "written" in err
    assert "not done; the same command goes on with them (it skips the masks written)" in err
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    masks = sorted(out.glob("img??.png"))
    assert 1 <= len(masks) < 8
    for mask in masks:  # everything on disk is complete
        assert set(np.unique(np.array(Image.open(mask)))) <= {0, 255}
        assert (out / f"{mask.stem}_probability.png").is_file()
