"""Export helpers and the export command: sample names, COCO run-length encoding, the
layout of each task, and `napari-focus export` on folders of images and masks."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from test_datasets import FOCUS_LAYOUTS, H, W, check_split, make_sample

from napari_focus.datasets import (
    LAYOUTS,
    ExportError,
    UnusableNameError,
    fitting_name,
    get_layout,
    layout_for_task,
    read_records,
    sanitize_name,
)
from napari_focus.datasets import rle as our_rle
from napari_focus.datasets.cli import add_export_parser, run_export

mask_util = pytest.importorskip("pycocotools.mask")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "etc_passwd"),
        ("a/b\\c", "a_b_c"),
        ("..", None),
        ("", None),
        ("\x00\x01\n", None),
        ("  image 01.JPG ", "image_01"),
        ("scan.v2.final.png", "scan_v2_final"),
        ("ünïcode-ok", "ünïcode-ok"),
        ("x" * 101, None),
        ("CON", None),
        ("tab\there", "tab_here"),
    ],
)
def test_sanitize(raw: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ExportError):
            sanitize_name(raw)
    else:
        assert sanitize_name(raw) == expected


def test_dash_layouts() -> None:
    assert sanitize_name("cat", get_layout("cod10k-train")) == "NF-cat"
    assert sanitize_name("1-5", get_layout("istd-train")) == "1-5"
    with pytest.raises(ExportError, match="NonCAM"):
        sanitize_name("COD10K-NonCAM-3", get_layout("cod10k-train"))
    # the loaders test the field with the extension: 'NonCAM.jpg' is not 'NonCAM'
    assert sanitize_name("a-NonCAM", get_layout("cod10k-train")) == "a-NonCAM"
    assert sanitize_name("a-NonCAM.png", get_layout("istd-train")) == "a-NonCAM"


def test_an_unusable_name_is_said_in_each_interface_s_words(tmp_path: Path) -> None:
    """The API says "choose another name"; export names samples after files ("rename the
    image file"); the widget's words are checked in the GUI tests."""
    import contextlib
    import io

    import numpy as np
    from PIL import Image

    from napari_focus.cli import main

    with pytest.raises(UnusableNameError, match=r"too long .*; choose another name$"):
        sanitize_name("x" * 120)
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    long = "y" * 120  # too long for a sample: exported under its start and a hash
    for name in ("CON", long):
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(images / f"{name}.png")
        Image.fromarray(np.full((40, 40), 255, np.uint8)).save(masks / f"{name}.png")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["export", str(images), str(masks), "--root", str(tmp_path / "ds"),
                     "--layout", "generic"])  # fmt: skip
    assert code == 1
    assert ("failed: CON.png: sample name 'CON' is a reserved device name on Windows; "
            "rename the image file") in err.getvalue()  # fmt: skip
    assert [p.name for p in (tmp_path / "ds" / "images").iterdir()] == [
        f"{fitting_name(long, get_layout('generic'))}.png"
    ]


@given(st.text(min_size=90, max_size=300))
@settings(max_examples=200, deadline=None)
def test_a_name_too_long_is_offered_shortened_for_every_layout(raw: str) -> None:
    fitted = fitting_name(raw)
    assert fitted == fitting_name(raw) and (fitted == raw or fitted != fitting_name(raw + "x"))
    for layout in map(get_layout, LAYOUTS):
        for name in (fitted, fitting_name(raw, layout)):
            try:
                sanitize_name(name, layout)
            except UnusableNameError as error:
                assert "too long" not in str(error)


def test_a_name_a_layout_takes_is_kept_as_it_is() -> None:
    for raw, layout in [("a" * 99, "duts-tr"), ("IMG_2024-" + "x" * 90, "cod10k-train"),
                        ("my photo " * 11, "duts-tr")]:  # fmt: skip
        assert fitting_name(raw, get_layout(layout)) == raw
    assert fitting_name("a" * 99) != "a" * 99  # a dash layout would prefix it: too long


def test_a_short_name_is_offered_as_it_is() -> None:
    assert fitting_name("cat") == "cat"
    long = "ü" * 151
    assert fitting_name(long).startswith("ü" * 60) and len(fitting_name(long).encode()) <= 147


@given(st.text(max_size=40))
@settings(max_examples=200, deadline=None)
def test_sanitized_names_are_single_safe_components(raw: str) -> None:
    try:
        name = sanitize_name(raw)
    except ExportError:
        return
    assert name and "/" not in name and "\\" not in name and "." not in name
    assert not any(ord(c) < 32 for c in name) and Path(name).name == name


@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**32 - 1), st.floats(0, 1))
@settings(max_examples=300, deadline=None)
def test_rle_matches_pycocotools(h: int, w: int, seed: int, density: float) -> None:
    mask = (np.random.default_rng(seed).random((h, w)) < density).astype(np.uint8) * 255
    ref = mask_util.encode(np.asfortranarray(mask))
    ours = our_rle.encode(mask)
    assert ours == {"size": ref["size"], "counts": ref["counts"].decode()}
    assert our_rle.bbox(mask) == mask_util.toBbox(ref).tolist()
    assert our_rle.area(mask) == mask_util.area(ref).tolist()


def test_layout_for_task() -> None:
    assert [layout_for_task(t) for t in ("sod", "COD", "sd", "dbd", "fd")] == [
        "duts-tr", "cod10k-train", "istd-train", "defocus-train", "casia-train"
    ]  # fmt: skip
    assert set(LAYOUTS) == {*FOCUS_LAYOUTS, "generic"}


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="napari-focus")
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.func is run_export
    return args.func(args)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, masks, root = tmp_path / "img", tmp_path / "msk", tmp_path / "root"
    images.mkdir()
    masks.mkdir()
    for i in range(3):
        image, mask = make_sample(i)
        Image.fromarray(image).save(images / f"im{i}.png")
        names = {0: "im0.bmp", 1: "im1_gt.png", 2: "im2_mask.png"}  # as the series names them
        Image.fromarray(mask * 255).save(masks / names[i])
    Image.fromarray(np.zeros((H, W), np.uint8)).save(masks / "im0_probability.png")
    code = _cli(["export", str(images), str(masks), "--root", str(root), "--task", "fd"])
    assert code == 0, capsys.readouterr().err
    check_split(root, "casia-train")
    assert len(read_records(root)) == 3 and read_records(root)[0]["task"] == "fd"
    # again: names exist -> error by default, skip on request
    assert _cli(["export", str(images), str(masks), "--root", str(root), "--task", "fd"]) == 1
    assert "already exists" in capsys.readouterr().err
    argv = ["export", str(images), str(masks), "--root", str(root), "--layout", "casia-train"]
    assert _cli([*argv, "--on-exists", "skip"]) == 0
    # unpaired files are reported and fail the run
    Image.fromarray(make_sample(9)[0]).save(images / "lonely.png")
    Image.fromarray(make_sample(9)[1]).save(masks / "stray.png")
    assert _cli([*argv, "--on-exists", "skip"]) == 1
    err = capsys.readouterr().err
    assert "lonely.png: no mask" in err and "stray.png: no image" in err
    assert _cli(["export", str(images), str(masks), "--root", str(root)]) == 2
    other = tmp_path / "other"  # a layout alone: its task goes into the provenance
    (images / "lonely.png").unlink()
    (masks / "stray.png").unlink()
    argv = ["export", str(images), str(masks), "--root", str(other), "--layout", "duts-tr"]
    assert _cli(argv) == 0
    assert {record["task"] for record in read_records(other)} == {"sod"}


def test_pil_bmp_keeps_gray_mode() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.array([[0, 255]], np.uint8)).save(buffer, format="BMP")
    with Image.open(buffer) as img:
        assert img.mode == "L"
