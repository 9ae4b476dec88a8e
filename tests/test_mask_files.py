"""One rule for what is foreground in a mask file (``> 128`` as the official evaluation,
any colour channel), used by every reader of mask files; one rule for which images the
series and the model accept."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_focus.cli import main
from napari_focus.datasets import export_sample
from napari_focus.mask_files import binary_mask, read_mask_file
from napari_focus.quality import as_binary, mask_metrics
from napari_focus.series import find_reference_mask
from napari_focus.series.images import UnusableImageError, load_series_image
from napari_focus.training.data import collect_samples
from napari_focus.transforms import check_image, to_rgb_uint8

H, W = 48, 64


def square(value: int = 255, dtype=np.uint8) -> np.ndarray:
    mask = np.zeros((H, W), dtype)
    mask[10:30, 20:50] = value
    return mask


def soft_square() -> np.ndarray:
    """A 0/255 square whose one-pixel rim is anti-aliased: half of it 64, half 192."""
    mask = square().astype(np.int32)
    mask[9, 20:50] = 64
    mask[30, 20:50] = 192
    return mask.astype(np.uint8)


def jpeg_bytes(array: np.ndarray, quality: int = 75) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def test_the_rule_on_every_scale() -> None:
    truth = square() > 0
    soft = soft_square()
    expected_soft = truth.copy()
    expected_soft[30, 20:50] = True  # 192 > 128; the 64 rim stays background
    np.testing.assert_array_equal(binary_mask(soft), expected_soft)
    np.testing.assert_array_equal(binary_mask(square(1)), truth)  # 0/1
    np.testing.assert_array_equal(binary_mask(square(1, np.int32)), truth)
    np.testing.assert_array_equal(binary_mask(square(65535, np.uint16)), truth)
    np.testing.assert_array_equal(binary_mask(square(255, np.uint16)), truth)  # 8-bit in 16
    np.testing.assert_array_equal(binary_mask(square(1, np.float32)), truth)
    np.testing.assert_array_equal(binary_mask(square(255, np.float64)), truth)
    np.testing.assert_array_equal(binary_mask(truth), truth)
    # label images (napari's Labels saved as .tif, instance masks): ids, not gray levels
    labels = square(1) + 2 * (np.arange(W)[None, :] > 40) * (square(1) > 0)  # ids 1 and 3
    np.testing.assert_array_equal(binary_mask(labels.astype(np.uint8)), truth)
    np.testing.assert_array_equal(binary_mask(square(1, np.int32) * 500), truth)
    # the official threshold: 128 itself is background, 129 foreground
    assert binary_mask(np.array([[128, 129]], np.uint8)).tolist() == [[False, True]]
    assert binary_mask(np.array([[128 * 257, 128 * 257 + 1]], np.uint16)).tolist() == [
        [False, True]
    ]


def test_colour_masks_count_any_channel() -> None:
    truth = square() > 0
    for channel in range(3):
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[..., channel] = square()
        np.testing.assert_array_equal(binary_mask(rgb), truth, err_msg=f"channel {channel}")
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0] = square()
    rgba[..., 3] = 255  # an opaque alpha is no foreground
    np.testing.assert_array_equal(binary_mask(rgba), truth)
    np.testing.assert_array_equal(binary_mask(square()[..., None]), truth)


def test_label_images_and_transparency_masks(tmp_path: Path) -> None:
    """A VOC/CVAT label image (palette index 1 = dark red, 255 = void) is its non-zero
    indices; a gray palette stays under the 128 rule; one colour with the shape in its
    alpha is that alpha."""
    truth = square() > 0
    indices = np.where(truth, 1, 0).astype(np.uint8)
    label = Image.fromarray(indices, mode="P")
    label.putpalette([0, 0, 0, 128, 0, 0] + [0, 0, 0] * 253 + [224, 224, 192])
    label.save(tmp_path / "voc.png")
    np.testing.assert_array_equal(read_mask_file(tmp_path / "voc.png"), truth)
    soft = np.where(truth, 255, 20).astype(np.uint8)  # 20: below the rule's 128
    Image.fromarray(soft).convert("P").save(tmp_path / "gray_palette.png")
    assert Image.open(tmp_path / "gray_palette.png").mode == "P"
    np.testing.assert_array_equal(read_mask_file(tmp_path / "gray_palette.png"), truth)
    red = np.zeros((H, W, 3), np.uint8)
    red[..., 0] = square()  # red on black, saved with an adaptive palette: red may be 0
    quantized = Image.fromarray(red).quantize(2)
    quantized.save(tmp_path / "quantized.png")
    np.testing.assert_array_equal(read_mask_file(tmp_path / "quantized.png"), truth)
    cut_out = np.full((H, W, 4), 255, np.uint8)
    cut_out[..., 3] = square()  # white everywhere, the shape in the transparency
    np.testing.assert_array_equal(binary_mask(cut_out), truth)
    Image.fromarray(cut_out).save(tmp_path / "cut_out.png")
    np.testing.assert_array_equal(read_mask_file(tmp_path / "cut_out.png"), truth)
    shapes = np.zeros((H, W, 4), np.uint8)
    shapes[..., :3] = 255  # a transparent background stored as white
    shapes[truth] = [255, 0, 0, 255]  # opaque red shapes
    np.testing.assert_array_equal(binary_mask(shapes), truth)
    drawn = np.zeros((H, W, 4), np.uint8)
    drawn[..., 3] = 255
    drawn[:2, :, 3] = 0  # a transparent margin; inside, black and white draw the mask
    drawn[truth, :3] = 255
    np.testing.assert_array_equal(binary_mask(drawn), truth & (drawn[..., 3] > 0))
    for gray in (0, 255):  # gray + alpha (LA): the shape in the transparency
        pixels = np.zeros((H, W, 2), np.uint8)
        pixels[..., 0] = gray
        pixels[..., 1] = square()
        Image.fromarray(pixels, "LA").save(tmp_path / f"la{gray}.png")
        np.testing.assert_array_equal(read_mask_file(tmp_path / f"la{gray}.png"), truth)


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (-square(1, np.int16), "from -1 to 0"),
        (square(70000, np.int32), "to 70000"),
        (np.full((H, W), np.nan, np.float32), "NaN"),
        (square(300, np.float32), "0-255"),
        (np.zeros((2, H, W), np.uint8), "shape"),
        (square(1).astype(np.complex64), "not numbers"),
    ],
)
def test_what_is_no_mask_is_refused(array, words) -> None:
    with pytest.raises(ValueError, match=words):
        binary_mask(array)


def test_jpeg_mask_noise_is_no_foreground(tmp_path: Path) -> None:
    path = tmp_path / "mask.jpg"
    path.write_bytes(jpeg_bytes(square()))
    noisy = np.asarray(Image.open(path))
    assert ((noisy > 0) & ~(square() > 0)).any()  # the file does hold noise
    found = read_mask_file(path)
    assert (found != (square() > 0)).mean() < 0.005
    # a faint shape only (no value past 128): compression noise in a JPEG, never label
    # ids, so background as the official threshold says; in a PNG, a label image's id
    path.write_bytes(jpeg_bytes(square(60)))
    assert 0 < np.asarray(Image.open(path)).max() <= 128
    assert not read_mask_file(path).any()
    Image.fromarray(square(60)).save(tmp_path / "labels.png")
    np.testing.assert_array_equal(read_mask_file(tmp_path / "labels.png"), square() > 0)


def test_export_cli_reads_masks_by_the_rule(tmp_path: Path) -> None:
    """JPEG noise, a soft rim and a red mask through `napari-focus export`: the exported
    masks are what the official evaluation would call foreground."""
    images, masks, root = tmp_path / "images", tmp_path / "masks", tmp_path / "datasets"
    images.mkdir()
    masks.mkdir()
    photo = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    for name in ("noisy", "soft", "red"):
        Image.fromarray(photo).save(images / f"{name}.png")
    (masks / "noisy.png").write_bytes(_png_of_jpeg(jpeg_bytes(square())))
    Image.fromarray(soft_square()).save(masks / "soft.png")
    red = np.zeros((H, W, 3), np.uint8)
    red[..., 0] = square()
    Image.fromarray(red).save(masks / "red.png")

    code = main(["export", str(images), str(masks), "--root", str(root), "--layout", "generic"])
    assert code == 0
    base = next(p for p in root.rglob("masks") if p.is_dir())
    for name in ("noisy", "soft", "red"):
        exported = np.asarray(Image.open(base / f"{name}.png")) > 0
        expected = binary_mask(np.asarray(Image.open(masks / f"{name}.png")))
        np.testing.assert_array_equal(exported, expected, err_msg=name)
    assert (np.asarray(Image.open(base / "red.png")) > 0).sum() == 20 * 30
    noisy = np.asarray(Image.open(base / "noisy.png")) > 0
    assert (noisy != (square() > 0)).mean() < 0.005  # no specks of JPEG noise


def _png_of_jpeg(data: bytes) -> bytes:
    """A PNG holding a JPEG's decoded noise (as a mask re-saved after a JPEG step)."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_training_reads_a_red_generic_mask_as_foreground(tmp_path: Path) -> None:
    """The old reader took luminance (red 255,0,0 -> 76) and called it background."""
    root = tmp_path / "datasets"
    photo = np.full((H, W, 3), 100, np.uint8)
    result = export_sample(root, "generic", "a", photo, square() > 0)
    red = np.zeros((H, W, 3), np.uint8)
    red[..., 0] = square()
    Image.fromarray(red).save(result.mask)  # a user's own colour mask in the folder
    (sample,), _ = collect_samples(root, ["generic"])
    _, classes = sample.load()
    np.testing.assert_array_equal(classes == 0, square() > 0)


def test_references_and_metrics_use_the_rule(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(images / "a.png")
    Image.fromarray(soft_square()).save(masks / "a.png")
    found = find_reference_mask(images / "a.png", masks)
    np.testing.assert_array_equal(found, binary_mask(soft_square()))
    np.testing.assert_array_equal(as_binary(soft_square()), found)
    red = np.zeros((H, W, 3), np.uint8)
    red[..., 1] = square()
    np.testing.assert_array_equal(as_binary(red), square() > 0)
    # the 64 rim of the soft mask is background for the metrics as for the evaluation
    exact = binary_mask(soft_square()).astype(np.float32)
    assert mask_metrics(exact, soft_square())["mae"] == 0.0


# --- one acceptance rule for images -------------------------------------------------------

CANDIDATES = {
    "uint8": np.full((40, 40), 7, np.uint8),
    "uint16": np.full((40, 40), 4000, np.uint16),
    "int8": np.full((40, 40), 7, np.int8),
    "int16": np.arange(1600, dtype=np.int16).reshape(40, 40),
    "int16-negative": np.arange(-800, 800, dtype=np.int16).reshape(40, 40),
    "int32": np.arange(1600, dtype=np.int32).reshape(40, 40) * 100,
    "uint32": np.full((40, 40), 4000, np.uint32),
    "int64": np.full((40, 40, 3), 4000, np.int64),
    "float32": np.full((40, 40), 0.5, np.float32),
    "float-nan": np.where(np.eye(40, dtype=bool), np.nan, 0.5).astype(np.float32),
    "complex": np.zeros((40, 40), np.complex64),
}


@pytest.mark.parametrize("name", sorted(CANDIDATES))
def test_series_and_model_accept_the_same_images(tmp_path: Path, name: str) -> None:
    array = CANDIDATES[name]
    path = tmp_path / f"{name}.tif"
    tifffile.imwrite(path, array, photometric="rgb" if array.ndim == 3 else None)
    try:
        to_rgb_uint8(array)
    except ValueError as error:
        model_words = str(error)
    else:
        model_words = None
    if model_words is None:
        loaded = load_series_image(path)
        assert loaded.dtype == array.dtype
        check_image(loaded)
    else:
        with pytest.raises(UnusableImageError) as info:
            load_series_image(path)
        assert model_words in str(info.value) and path.name in str(info.value)
    assert (model_words is None) == (name not in ("float-nan", "complex"))


def test_other_integer_types_convert_like_floats_of_the_same_numbers() -> None:
    values = np.arange(1600).reshape(40, 40)
    as_float = to_rgb_uint8(values.astype(np.float64))
    for dtype in (np.int16, np.int32, np.int64, np.uint32, np.uint64):
        np.testing.assert_array_equal(to_rgb_uint8(values.astype(dtype)), as_float)
    small = np.full((40, 40), 100)
    np.testing.assert_array_equal(
        to_rgb_uint8(small.astype(np.int8)), to_rgb_uint8(small.astype(np.uint8))
    )
    signed = to_rgb_uint8(np.arange(-800, 800, dtype=np.int16).reshape(40, 40))
    assert signed.min() == 0 and signed.max() == 255  # stretched from min to max
    wide = to_rgb_uint8(np.arange(1600, dtype=np.int64).reshape(40, 40) * 100_000)
    assert wide.min() == 0 and wide.max() == 255
