"""Hostile inputs: float ranges that overflow, ragged lists, extreme aspect ratios,
bombs in an export folder, and output paths checked before any prediction."""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_atomic_io import png_bomb, tiff_bomb
from test_datasets import check_split, make_sample

from napari_focus.datasets.cli import add_export_parser
from napari_focus.presets import input_preset
from napari_focus.series import add_rank_parser
from napari_focus.transforms import resized_shape, to_rgb_uint8

PRESET = input_preset()


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_the_whole_float_range_is_stretched_not_zeroed(dtype) -> None:
    info = np.finfo(dtype)
    image = np.zeros((40, 40), dtype)
    image[:20] = info.min
    image[20:] = info.max
    image[0, 0] = 0
    out = to_rgb_uint8(image)[..., 0]
    assert out[1, 0] == 0 and out[30, 0] == 255 and out[0, 0] in (127, 128)


def test_a_ragged_list_gets_our_message() -> None:
    with pytest.raises(ValueError, match=r"ragged sequence.*expected a 2-D"):
        to_rgb_uint8([[0] * 40] * 39 + [[0] * 39])


@pytest.mark.parametrize("size", [(32, 140_000), (140_000, 32), (40, 200_000)])
def test_extreme_aspect_ratios_say_what_was_received(size) -> None:
    with pytest.raises(ValueError, match=rf"{size[0]} x {size[1]} pixels.*too elongated"):
        resized_shape(*size, PRESET.short_side, PRESET.max_long_side)


def test_the_most_elongated_accepted_size_works() -> None:
    ratio = 2 * PRESET.max_long_side  # the short side rounds to one pixel
    h, w = resized_shape(32, 32 * ratio - 32, PRESET.short_side, PRESET.max_long_side)
    assert h == 1 and w == PRESET.max_long_side
    from napari_focus.transforms import resize_rgb

    assert resize_rgb(np.zeros((32, 64, 3), np.uint8), (h, w)).shape == (1, w, 3)


def _cli(add, argv: list[str]) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser(prog="napari-focus")
    add(parser.add_subparsers(dest="command", required=True))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        args = parser.parse_args(argv)
        code = args.func(args)
    return code, out.getvalue(), err.getvalue()


def test_export_goes_on_after_bombs_and_bad_pairs(tmp_path: Path) -> None:
    images, masks, root = tmp_path / "img", tmp_path / "msk", tmp_path / "root"
    images.mkdir()
    masks.mkdir()
    for i in range(3):
        image, mask = make_sample(i)
        Image.fromarray(image).save(images / f"ok{i}.png")
        Image.fromarray(mask * 255).save(masks / f"ok{i}.png")
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 64
    png_bomb(images / "a_bomb.png", side)
    Image.fromarray(make_sample(5)[1] * 255).save(masks / "a_bomb.png")
    tiff_bomb(images / "b_bomb.tif", side)
    Image.fromarray(make_sample(6)[1] * 255).save(masks / "b_bomb.png")
    (images / "c_garbage.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.fromarray(make_sample(7)[1] * 255).save(masks / "c_garbage.png")
    Image.fromarray(make_sample(8)[0]).save(images / "d_mask_bomb.png")
    png_bomb(masks / "d_mask_bomb.png", side)
    code, out, err = _cli(add_export_parser, ["export", str(images), str(masks),
                                              "--root", str(root), "--layout", "duts-tr"])
    assert code == 1
    for name in ("a_bomb.png", "b_bomb.tif", "c_garbage.png", "d_mask_bomb.png"):
        assert f"failed: {name}" in err
    assert err.count("NAPARI_FOCUS_MAX_PIXELS") == 3
    assert [line.split(":")[1].split()[0] for line in out.splitlines()] == [
        "ok0.png", "ok1.png", "ok2.png"
    ]
    assert "3 written" in err and "4 failed" in err
    check_split(root, "duts-tr")


def test_export_checks_the_root_first(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    (tmp_path / "file").write_text("x")
    code, _, err = _cli(add_export_parser, ["export", str(tmp_path / "img"),
                                            str(tmp_path / "msk"), "--root",
                                            str(tmp_path / "file" / "ds"), "--layout", "generic"])
    assert code == 2 and "--root" in err and "is a file, not a folder; choose another --root" in err


@pytest.mark.parametrize(
    ("flag", "where", "message"),
    [("--out", "file/rank.csv", "is a file, not a folder"),
     ("--out", "folder", "is a folder"),
     ("--report", "file", "it is a file, not a folder; choose another --report folder"),
     ("--report", "file/sub", "is a file, not a folder")],
)  # fmt: skip
def test_rank_checks_outputs_before_predicting(tmp_path: Path, monkeypatch, flag, where, message):
    import napari_focus.cli_common

    def no_model(args):  # type: ignore[no-untyped-def]
        raise AssertionError("the model was loaded before the outputs were checked")

    # rank looks the loader up in cli_common when it runs
    monkeypatch.setattr(napari_focus.cli_common, "load_predictor_from_args", no_model)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(make_sample(0)[0]).save(images / "a.png")
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    code, _, err = _cli(add_rank_parser, ["rank", str(images), "--task", "sod", "--quiet",
                                          flag, str(tmp_path / where)])
    assert code == 2, err
    assert flag in err and message in err and err.count("choose") == 1, err  # one remedy


def test_an_out_that_is_a_file_is_refused_with_one_remedy(tmp_path: Path) -> None:
    from napari_focus.cli import main

    image = tmp_path / "a.png"
    Image.fromarray(make_sample(0)[0]).save(image)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["predict", str(image), "--task", "sod", "--out", str(image)])
    assert code == 2 and err.getvalue().strip() == (
        f"napari-focus: --out {image}: {image} is a file, not a folder; choose another --out"
    )


def test_rank_names_the_pattern_that_matched_no_image(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(make_sample(0)[0]).save(images / "a.png")
    code, _, err = _cli(add_rank_parser, ["rank", str(images), "--task", "sod", "--quiet",
                                          "--pattern", "*.bmp"])  # fmt: skip
    assert code == 2
    assert err.strip() == f"napari-focus: no images in {images} match --pattern '*.bmp'"
