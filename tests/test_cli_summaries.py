"""What the commands print as they run and when they end: counts that add up, advice
only where it applies, each command's own exit codes, log files without a progress
bar's redrawn frames, no Python exception class names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image
from test_cli import run_cli

from napari_focus.cli import build_parser


@pytest.fixture
def weights(tiny_checkpoint) -> Path:
    return tiny_checkpoint


@pytest.fixture
def photos(focus_reference, tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    source = Image.open(focus_reference / "input.png").convert("RGB")
    for n, size in enumerate([(80, 64), (64, 64), (72, 56)]):
        source.resize(size, Image.BILINEAR).save(folder / f"photo{n}.png")
    return folder


def test_predict_counts_the_inputs_that_matched_nothing(photos, weights, tmp_path) -> None:
    out = tmp_path / "masks"
    missing, pattern = tmp_path / "nonexist.png", str(tmp_path / "nomatch*.jpg")
    common = ["--task", "sod", "--weights", weights, "--device", "cpu", "--out", out, "--quiet"]
    code, err = run_cli("predict", photos / "photo0.png", missing, pattern, *common)
    assert code == 1, err
    assert f"napari-focus: 1 written, 0 skipped, 0 failed, 2 inputs matched no image -> {out}" in (
        err
    )
    assert "already exist" not in err  # nothing was skipped
    code, err = run_cli("predict", photos / "photo0.png", *common)
    assert code == 0
    assert f"0 written, 1 skipped (already exist; --overwrite to redo), 0 failed -> {out}" in err
    code, err = run_cli("predict", photos / "photo0.png", *common, "--overwrite")
    assert code == 0 and f"1 written, 0 skipped, 0 failed -> {out}" in err
    assert "already exist" not in err


def test_a_log_file_gets_plain_progress_lines(photos, weights, tmp_path, monkeypatch) -> None:
    """stderr redirected to a file (run_cli's is no terminal): lines, no tqdm frames."""
    from napari_focus import cli_common

    monkeypatch.setattr(cli_common, "PLAIN_PROGRESS_SECONDS", 0.0)
    code, err = run_cli("predict", photos, "--task", "sod", "--weights", weights,
                        "--device", "cpu", "--out", tmp_path / "masks")  # fmt: skip
    assert code == 0, err
    assert "\r" not in err and "%|" not in err
    lines = [line for line in err.splitlines() if line.startswith("napari-focus: FOCUS ")]
    assert lines[0].startswith("napari-focus: FOCUS 1/3 images (33%), "), err
    assert "left" in lines[0]


def test_no_exception_class_names_in_rank_and_export(photos, weights, tmp_path) -> None:
    import numpy as np
    import tifffile

    tifffile.imwrite(photos / "complex.tif", np.ones((64, 64), np.complex64))  # no picture
    code, err = run_cli("rank", photos, "--task", "sod", "--weights", weights, "--device",
                        "cpu", "--out", tmp_path / "rank.csv", "--quiet")  # fmt: skip
    assert code == 1, err
    failed = [line for line in err.splitlines() if line.startswith("  failed:")]
    assert failed and failed[0].startswith("  failed: complex.tif: unsupported dtype"), err
    assert "Error" not in err


def test_export_quiet_says_only_the_summary_and_the_problems(photos, tmp_path) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    for n in (0, 1):
        Image.new("L", Image.open(photos / f"photo{n}.png").size, 255).save(masks / f"photo{n}.png")
    root = tmp_path / "datasets"
    code, err = run_cli("export", photos, masks, "--root", root, "--layout", "generic", "--quiet")
    assert code == 1, err
    lines = err.splitlines()
    assert lines[0].startswith("napari-focus: 2 written, 0 renamed, 0 replaced, 0 skipped, "
                               "0 failed, 1 unpaired -> "), err  # fmt: skip
    assert lines[1:] == [f"  unpaired: {photos / 'photo2.png'}: no mask in {masks}"]
    shutil.rmtree(root)
    code, err = run_cli("export", photos, masks, "--root", root, "--layout", "generic")
    assert code == 1 and "  unpaired: " in err.splitlines()[0]


def test_each_command_lists_its_own_exit_codes(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices
    helps = {name: sub[name].format_help().split("exit codes:", 1)[1] for name in
             ("predict", "export", "rank", "train", "annotate", "doctor")}  # fmt: skip
    assert "143 when stopped by SIGTERM" in helps["predict"]
    assert "(143: by SIGTERM)" in helps["train"]
    assert "143 by SIGTERM" in helps["export"]
    assert "143 by SIGTERM (nothing is written" in helps["rank"]
    assert "napari was closed by Ctrl-C" in helps["annotate"]
    assert "(143: by SIGTERM)" in helps["annotate"]
    for name in ("annotate", "doctor"):
        assert "predict:" not in helps[name], name
    assert "143" not in helps["doctor"]
    assert "no display" in helps["annotate"] and "  1  " not in helps["annotate"]
    assert "  2  " not in helps["doctor"]
    assert "--device" not in helps["export"] and "download" not in helps["export"]
    assert "MASKS_DIR" in helps["export"] and "--gt" in helps["rank"]
    assert "--restart" in helps["train"]
