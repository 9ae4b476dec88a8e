"""EXIF orientation: phone photos stored sideways with an Orientation tag are read
upright (as detectron2's ``read_image``, the official training's reader, reads them),
predicted masks are in that frame, and exported samples never carry a tag that would
turn the image away from its mask."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from napari_focus.cli import main
from napari_focus.datasets import export_sample
from napari_focus.datasets.image_bytes import without_app1
from napari_focus.io import apply_orientation, image_shape, read_image
from napari_focus.series.images import load_series_image
from napari_focus.training.data import collect_samples

ORIENTATIONS = range(1, 9)
TRANSPOSED = (5, 6, 7, 8)  # orientations that swap height and width


def stored_pixels(height: int = 40, width: int = 64) -> np.ndarray:
    """An RGB picture with no symmetry (a bright bar left, a gradient, a corner mark),
    smooth enough to survive JPEG at quality 95 nearly unchanged."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 90)], -1)
    rgb[:, :10] = 255
    rgb[:8, -8:] = (0, 0, 0)
    return rgb.astype(np.uint8)


def save_tagged(path: Path, pixels: np.ndarray, orientation: int, **options) -> Path:
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, **options)
    return path


def detectron2_view(path: Path) -> np.ndarray:
    """The pixels as detectron2's read_image gives them (PIL's exif_transpose)."""
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("suffix", [".png", ".webp", ".jpg"])
def test_read_image_applies_the_orientation(tmp_path, orientation, suffix) -> None:
    pixels = stored_pixels()
    options = {"lossless": True} if suffix == ".webp" else {"quality": 95}
    path = save_tagged(tmp_path / f"o{orientation}{suffix}", pixels, orientation, **options)
    image = read_image(path)
    expected = detectron2_view(path)
    np.testing.assert_array_equal(image, expected)
    if suffix != ".jpg":  # lossless: the turned pixels are the saved ones
        np.testing.assert_array_equal(image, apply_orientation(pixels, orientation))
    turned = orientation in TRANSPOSED
    assert image.shape[:2] == ((64, 40) if turned else (40, 64))
    assert image_shape(path) == image.shape[:2]
    assert image.flags.c_contiguous


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_tiff_orientation_tag_is_applied(tmp_path, orientation) -> None:
    pixels = stored_pixels()
    path = tmp_path / "o.tif"
    tifffile.imwrite(path, pixels, photometric="rgb", extratags=[(274, 3, 1, orientation, True)])
    np.testing.assert_array_equal(read_image(path), detectron2_view(path))
    gray = tmp_path / "g.tif"
    tifffile.imwrite(gray, pixels[..., 0].astype(np.uint16) * 257,
                     extratags=[(274, 3, 1, orientation, True)])  # fmt: skip
    np.testing.assert_array_equal(
        read_image(gray), apply_orientation(pixels[..., 0].astype(np.uint16) * 257, orientation)
    )


def test_damaged_or_odd_tags_leave_the_pixels_as_stored(tmp_path) -> None:
    pixels = stored_pixels()
    for value in (0, 9, 300):
        path = save_tagged(tmp_path / f"odd{value}.png", pixels, value)
        np.testing.assert_array_equal(read_image(path), pixels)


def test_series_reads_the_photo_upright(tmp_path) -> None:
    path = save_tagged(tmp_path / "phone.jpg", stored_pixels(), 6, quality=95)
    assert load_series_image(path).shape == (64, 40, 3)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_export_of_a_tagged_jpeg_pairs_image_and_mask(tmp_path, orientation) -> None:
    """The reviewer's case for every orientation: the exported image, read the way the
    official training reads it, has the mask's size and the exported pixels."""
    source = save_tagged(tmp_path / "phone.jpg", stored_pixels(), orientation, quality=95)
    image = read_image(source)
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[:, :10] = 1  # the bright bar, wherever the orientation put it
    mask[:10] = 1
    result = export_sample(
        tmp_path / "root", "duts-tr", "phone", image, mask,
        provenance={"source_path": str(source)},
    )  # fmt: skip
    with Image.open(result.image) as exported:
        assert exported.getexif().get(0x0112, 1) == 1
    with Image.open(result.mask) as written:
        mask_size = written.size
    official = detectron2_view(result.image)
    assert official.shape[:2] == image.shape[:2] == mask_size[::-1]
    error = np.abs(official.astype(int) - image)
    assert error.mean() < 1.5 and error.max() <= 16  # one JPEG re-encoding at quality 95
    record = json.loads((tmp_path / "root" / "napari_focus_provenance.jsonl").read_text())
    if orientation == 1:
        assert result.image.read_bytes() == source.read_bytes()
        assert record["image_file"] == "copied from the source file"
    else:
        assert record["image_file"] == "encoded as JPEG, quality 95"


def test_stored_pixels_are_copied_without_the_tag(tmp_path) -> None:
    """An image layer opened by a reader that ignores EXIF (napari's own) holds the
    stored pixels: the source is then copied losslessly, its EXIF/XMP left out."""
    pixels = stored_pixels()
    source = save_tagged(tmp_path / "phone.jpg", pixels, 6, quality=90)
    with Image.open(source) as img:
        stored = np.asarray(img.convert("RGB"))
    result = export_sample(
        tmp_path / "root", "duts-tr", "phone", stored, np.ones(stored.shape[:2], bool),
        provenance={"source_path": str(source)},
    )  # fmt: skip
    with Image.open(result.image) as exported:
        assert exported.getexif().get(0x0112, 1) == 1
        np.testing.assert_array_equal(np.asarray(exported.convert("RGB")), stored)
    assert detectron2_view(result.image).shape[:2] == Image.open(result.mask).size[::-1]
    data = result.image.read_bytes()
    assert data == without_app1(source.read_bytes()) and len(data) < source.stat().st_size
    record = json.loads((tmp_path / "root" / "napari_focus_provenance.jsonl").read_text())
    assert record["image_file"] == "copied from the source file without its EXIF/XMP metadata"


def test_tagged_png_source_is_written_untagged(tmp_path) -> None:
    pixels = stored_pixels()
    source = save_tagged(tmp_path / "scan.png", pixels, 8)
    result = export_sample(
        tmp_path / "root", "generic", "scan", pixels, np.ones((40, 64), bool),
        provenance={"source_path": str(source)},
    )  # fmt: skip
    with Image.open(result.image) as exported:
        assert exported.getexif().get(0x0112, 1) == 1
    np.testing.assert_array_equal(read_image(result.image), pixels)  # PNG: lossless


def test_without_app1_refuses_what_is_no_jpeg() -> None:
    assert without_app1(b"\x89PNG....") is None
    assert without_app1(b"\xff\xd8\xff\xe1\x00") is None  # cut short


def test_export_cli_and_training_read_the_oriented_frame(tmp_path) -> None:
    """Phone photos with masks drawn on the upright view (as every viewer shows them),
    through `napari-focus export` and the training reader."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for orientation in (3, 6, 8):
        path = save_tagged(images / f"p{orientation}.jpg", stored_pixels(), orientation,
                           quality=95)  # fmt: skip
        upright = read_image(path)
        mask = np.where(upright.min(-1) > 200, 255, 0).astype(np.uint8)  # the white bar
        Image.fromarray(mask).save(masks / f"p{orientation}.png")
    root = tmp_path / "datasets"
    assert main(["export", str(images), str(masks), "--root", str(root), "--task", "sod"]) == 0
    samples, problems = collect_samples(root, ["duts-tr"])
    assert problems == [] and len(samples) == 3
    for sample in samples:
        rgb, classes = sample.load()
        assert rgb.shape[:2] == classes.shape
        bar = rgb.min(-1) > 200
        # foreground (class 0) is where the white bar is in the upright image
        assert ((classes == 0) == bar).mean() > 0.99 and (classes == 0).sum() >= 10 * 40


def test_training_reads_a_tagged_generic_image_upright(tmp_path) -> None:
    root = tmp_path / "datasets"
    pixels = stored_pixels()
    upright = apply_orientation(pixels, 6)
    export_sample(root, "generic", "a", upright, upright[..., 0] == 255)
    # a user drops a tagged photo of the same scene into the folder by hand
    image_path = next((root).rglob("a.png"))
    save_tagged(image_path, pixels, 6)
    (sample,), _ = collect_samples(root, ["generic"])
    rgb, classes = sample.load()
    np.testing.assert_array_equal(rgb, upright)
    assert classes.shape == rgb.shape[:2]



def test_predict_cli_masks_are_in_the_upright_frame(tmp_path, focus_reference, tiny_checkpoint):
    """A photo stored sideways with its tag and the same photo stored upright give the
    same mask, in the upright frame (the frame of every viewer and of training)."""
    with Image.open(focus_reference / "input.png") as reference:
        pixels = np.asarray(reference.convert("RGB").resize((80, 64), Image.BILINEAR))
    folder = tmp_path / "photos"
    folder.mkdir()
    save_tagged(folder / "sideways.png", pixels, 6)
    Image.fromarray(apply_orientation(pixels, 6)).save(folder / "upright.png")
    save_tagged(folder / "phone.jpg", pixels, 8, quality=95)
    out = tmp_path / "masks"
    code = main([
        "predict", str(folder), "--task", "sod", "--weights", str(tiny_checkpoint),
        "--out", str(out), "--device", "cpu", "--quiet",
    ])  # fmt: skip
    assert code == 0
    sideways, upright = read_image(out / "sideways.png"), read_image(out / "upright.png")
    assert sideways.shape == (80, 64) and 0 < sideways.mean() < 255  # not a constant mask
    np.testing.assert_array_equal(sideways, upright)
    assert read_image(out / "phone.png").shape == (80, 64)
