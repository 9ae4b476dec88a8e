"""`napari-focus predict` end to end on a folder, with the tiny model as a local checkpoint.

Every predict call resizes to a 512 short side, so each costs seconds on a CPU: the
folder is segmented once (module fixture) and the other runs reuse or copy its outputs.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_focus import FocusPredictor
from napari_focus.cli import QT_BINDINGS, main
from napari_focus.io import read_image

REPO_ROOT = Path(__file__).resolve().parents[1]
OLD_TIME_NS = 1_000_000_000 * 10**9  # 2001-09-09: any rewrite moves the mtime past it


# annotate looks for a Qt binding before anything else
needs_qt = pytest.mark.skipif(
    not any(find_spec(name) for name in QT_BINDINGS),
    reason="annotate needs a Qt binding (napari-focus's 'gui' extra)",
)


def run_cli(*args: str | os.PathLike) -> tuple[int, str]:
    """Run ``main([...])`` in-process; returns (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:  # argparse errors
            code = exit_.code
    return code, err.getvalue()


@pytest.fixture(scope="module")
def weights(tiny_mlp, tmp_path_factory) -> Path:
    arch, state = tiny_mlp
    predictor = FocusPredictor.from_state_dict(state, "sod", architecture=arch, device="cpu")
    folder = tmp_path_factory.mktemp("weights")
    return predictor.save_inference_checkpoint(folder / "tiny_sod.safetensors")


@pytest.fixture(scope="module")
def images(focus_reference, tmp_path_factory) -> Path:
    """photo.png (RGB 64x80), gray.png (8-bit gray 64x64, cropped), broken.png, notes.txt."""
    folder = tmp_path_factory.mktemp("images")
    source = Image.open(focus_reference / "input.png").convert("RGB")
    source.resize((80, 64), Image.BILINEAR).save(folder / "photo.png")
    source.convert("L").crop((60, 40, 188, 168)).resize((64, 64)).save(folder / "gray.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def first_run(images, weights, tmp_path_factory):
    """The folder segmented once with --probability: (exit code, stderr, output folder)."""
    out = tmp_path_factory.mktemp("run") / "masks"
    code, err = run_cli(
        "predict", images, "--task", "sod", "--weights", weights, "--out", out,
        "--probability", "--device", "cpu", "--quiet",
    )  # fmt: skip
    return code, err, out


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


def test_folder_run_writes_masks_and_reports_the_broken_file(first_run, images):
    code, err, out = first_run
    assert code == 1, err
    assert sorted(os.listdir(out)) == [
        "gray.png",
        "gray_probability.png",
        "photo.png",
        "photo_probability.png",
    ]
    assert "broken.png" in err
    assert "2 written" in err and "1 failed" in err
    assert "notes.txt" not in err  # not an image: ignored, not a failure

    for name in ("photo", "gray"):
        source = np.array(Image.open(images / f"{name}.png"))
        with Image.open(out / f"{name}.png") as mask_file:
            assert mask_file.mode == "L"
            mask = np.array(mask_file)
        assert mask.dtype == np.uint8
        assert mask.shape == source.shape[:2]
        assert set(np.unique(mask)) <= {0, 255}
        with Image.open(out / f"{name}_probability.png") as prob_file:
            assert prob_file.mode == "L"
            prob = np.array(prob_file)
        assert prob.shape == source.shape[:2]


def test_cli_mask_equals_predictor_output(first_run, images, weights):
    _, _, out = first_run
    predictor = FocusPredictor.from_checkpoint(weights, "sod", device="cpu")
    result = predictor.predict(read_image(images / "photo.png"))
    mask = np.array(Image.open(out / "photo.png"))
    np.testing.assert_array_equal(mask, result.mask.astype(np.uint8) * 255)
    print(f"\nphoto mask: {result.mask.mean():.3f} foreground")
    prob = np.array(Image.open(out / "photo_probability.png"))
    np.testing.assert_array_equal(prob, np.round(result.probability * 255).astype(np.uint8))


def test_rerun_skips_existing_outputs(first_run, images, weights):
    _, _, out = first_run
    for path in out.iterdir():
        os.utime(path, ns=(OLD_TIME_NS, OLD_TIME_NS))
    before = _mtimes(out)

    code, err = run_cli(
        "predict", images, "--task", "sod", "--weights", weights, "--out", out,
        "--probability", "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert code == 1, err  # only because of broken.png
    assert "0 written, 2 skipped" in err
    assert "broken.png" in err
    assert _mtimes(out) == before

    valid = [images / "photo.png", images / "gray.png"]
    code, err = run_cli(
        "predict", *valid, "--task", "sod", "--weights", weights, "--out", out,
        "--probability", "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "0 written, 2 skipped" in err
    assert _mtimes(out) == before


def test_overwrite_rewrites(first_run, images, weights, tmp_path):
    _, _, first_out = first_run
    out = tmp_path / "masks"
    shutil.copytree(first_out, out)
    for path in out.iterdir():
        os.utime(path, ns=(OLD_TIME_NS, OLD_TIME_NS))
    old_mask = (out / "photo.png").read_bytes()

    code, err = run_cli(
        "predict", images / "photo.png", "--task", "sod", "--weights", weights, "--out", out,
        "--overwrite", "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "1 written" in err
    after = _mtimes(out)
    assert after["photo.png"] > OLD_TIME_NS
    # without --probability only the mask is redone; the other files stay as they were
    assert after["photo_probability.png"] == OLD_TIME_NS
    assert after["gray.png"] == OLD_TIME_NS
    assert (out / "photo.png").read_bytes() == old_mask
    assert sorted(os.listdir(out)) == sorted(os.listdir(first_out))  # no temp files left


def test_tif_format_with_glob_pattern(first_run, images, weights, tmp_path):
    _, _, png_out = first_run
    out = tmp_path / "tif"
    code, err = run_cli(
        "predict", str(images / "gr*.png"), "--task", "sod", "--weights", weights,
        "--out", out, "--format", "tif", "--probability", "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert sorted(os.listdir(out)) == ["gray.tif", "gray_probability.tif"]

    mask = tifffile.imread(out / "gray.tif")
    prob = tifffile.imread(out / "gray_probability.tif")
    assert mask.dtype == np.uint8 and mask.shape == (64, 64)
    assert set(np.unique(mask)) <= {0, 255}
    assert prob.dtype == np.float32 and prob.shape == (64, 64)
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    # same model, same image: the TIFF outputs agree with the PNG outputs of the first run
    np.testing.assert_array_equal(mask, np.array(Image.open(png_out / "gray.png")))
    png_prob = np.array(Image.open(png_out / "gray_probability.png"))
    np.testing.assert_array_equal(np.round(prob * 255).astype(np.uint8), png_prob)


def test_nonexistent_input_is_reported(first_run, images, weights, tmp_path):
    _, _, out = first_run
    missing = tmp_path / "does_not_exist.png"
    code, err = run_cli(
        "predict", images / "photo.png", missing, "--task", "sod", "--weights", weights,
        "--out", out, "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert code == 1, err
    assert str(missing) in err
    assert "1 skipped" in err

    code, err = run_cli(
        "predict", missing, str(tmp_path / "*.jpg"), "--task", "sod", "--weights", weights,
        "--out", tmp_path / "never", "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert code == 2, err
    assert str(missing) in err and "*.jpg" in err
    assert not (tmp_path / "never").exists()


def test_output_name_collision_is_reported(first_run, images, weights, tmp_path):
    _, _, out = first_run
    other = tmp_path / "other"
    other.mkdir()
    Image.open(images / "photo.png").save(other / "photo.jpg")
    code, err = run_cli(
        "predict", images / "photo.png", other / "photo.jpg", "--task", "sod",
        "--weights", weights, "--out", out, "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert code == 1, err
    assert "photo.jpg" in err and "same output name" in err


def test_corrupt_weights_exit_code_2(images, tmp_path, weights):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(weights.read_bytes()[:1000])
    out = tmp_path / "masks"
    code, err = run_cli(
        "predict", images / "photo.png", "--task", "sod", "--weights", bad, "--out", out,
        "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert code == 2, err
    assert "cannot load the model" in err and "truncated or corrupt" in err
    assert not out.exists() or not any(out.iterdir())


def test_unknown_task_is_a_usage_error(images, weights):
    code, err = run_cli("predict", images, "--task", "nope", "--weights", weights)
    assert code == 2
    assert "--task" in err


def test_subprocess_missing_weights_exit_code_2(images, tmp_path):
    missing = tmp_path / "no_such_weights.safetensors"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [
            sys.executable, "-m", "napari_focus.cli", "predict", str(images / "photo.png"),
            "--task", "sod", "--weights", str(missing), "--out", str(tmp_path / "masks"),
            "--device", "cpu", "--quiet",
        ],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"--weights {missing}: no such file; check the path" in proc.stderr
    assert "Traceback" not in proc.stderr


@needs_qt
def test_annotate_refuses_a_file_that_is_not_an_image_before_napari_opens(tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    code, err = run_cli("annotate", fake)
    assert code == 2
    assert f"cannot open {fake} as an image" in err and "Traceback" not in err
    code, err = run_cli("annotate", "--weights", tmp_path / "gone.pth")
    assert code == 2 and f"--weights {tmp_path / 'gone.pth'}: no such file" in err


@needs_qt
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11/Wayland sessions")
def test_annotate_without_a_display_says_so_instead_of_qt_aborting(tmp_path):
    """Over plain ssh Qt's xcb plugin aborts the process (exit 134); annotate says
    what to do first. Run in a child process: the check must come before Qt loads."""
    image = tmp_path / "a.png"
    Image.new("RGB", (64, 48)).save(image)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "napari_focus", "annotate", str(image)],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "this session has no display (DISPLAY and WAYLAND_DISPLAY are unset)" in proc.stderr
    assert "xvfb-run" in proc.stderr and "Traceback" not in proc.stderr


def test_ray_options_without_the_ray_engine_are_refused(tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    code, err = run_cli("predict", image, "--task", "sod", "--address", "auto")
    assert code == 2 and "--address is an option of --engine ray" in err
    code, err = run_cli("predict", image, "--task", "sod", "--series", tmp_path / "s")
    assert code == 2 and "--series is an option of --engine ray" in err


def test_a_bad_pixel_limit_is_one_setup_error(tmp_path, monkeypatch):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    ranking = tmp_path / "ranking.csv"
    ranking.write_text("rank,path\n1,a.png\n", encoding="utf-8")  # an earlier good one
    monkeypatch.setenv("NAPARI_FOCUS_MAX_PIXELS", "abc")
    said = "NAPARI_FOCUS_MAX_PIXELS='abc' is not a number of pixels (0 = no limit); correct it"
    code, err = run_cli("predict", image, "--task", "sod", "--out", tmp_path / "out")
    assert code == 2 and said in err
    assert not (tmp_path / "out").exists()
    code, err = run_cli("rank", tmp_path, "--task", "sod", "--out", ranking)
    assert code == 2 and said in err and ranking.read_text() == "rank,path\n1,a.png\n"
    code, err = run_cli("export", tmp_path, tmp_path, "--root", tmp_path / "ds")
    assert code == 2 and said in err and not (tmp_path / "ds").exists()
    code, err = run_cli("train", "--root", tmp_path, "--layout", "generic", "--weights",
                        "sod", "--out", tmp_path / "t.safetensors")  # fmt: skip
    assert code == 2 and f"napari-focus train: {said}" in err


def test_a_folder_with_images_in_subfolders_gets_a_note(tmp_path):
    folder = tmp_path / "photos"
    (folder / "day2").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "day2" / "b.png")
    broken = tmp_path / "w.safetensors"
    broken.write_bytes(b"not weights")  # the note comes before the model would load
    code, err = run_cli("predict", folder, "--task", "sod", "--weights", broken)
    assert code == 2
    assert f"images in subfolders of {folder} are not included; add --recursive" in err


def test_an_unreachable_ray_address_is_said_at_once(tmp_path):
    pytest.importorskip("ray")
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)
    code, err = run_cli(
        "predict", image, "--task", "sod", "--engine", "ray", "--address", f"127.0.0.1:{port}"
    )
    assert code == 2 and f"--address 127.0.0.1:{port}: nothing answers there" in err
