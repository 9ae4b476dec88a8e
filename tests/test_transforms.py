"""Input validation/conversion and the FOCUS test-time resize, normalise and pad."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from napari_focus.presets import input_preset
from napari_focus.transforms import normalize_and_pad, resize_rgb, resized_shape, to_rgb_uint8

PRESET = input_preset()
SHORT, LONG = PRESET.short_side, PRESET.max_long_side


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- to_rgb_uint8
def _assert_rgb(out: np.ndarray, shape: tuple[int, int]) -> None:
    assert out.dtype == np.uint8
    assert out.shape == (*shape, 3)


def test_gray_2d_is_repeated_into_three_channels():
    gray = _rng().integers(0, 256, (40, 50), dtype=np.uint8)
    out = to_rgb_uint8(gray)
    _assert_rgb(out, (40, 50))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_gray_with_singleton_channel_axis():
    gray = _rng().integers(0, 256, (40, 50, 1), dtype=np.uint8)
    out = to_rgb_uint8(gray)
    _assert_rgb(out, (40, 50))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray[..., 0])


def test_rgb_uint8_unchanged_and_input_not_modified():
    rgb = _rng().integers(0, 256, (33, 47, 3), dtype=np.uint8)
    before = rgb.copy()
    out = to_rgb_uint8(rgb)
    _assert_rgb(out, (33, 47))
    np.testing.assert_array_equal(out, before)
    np.testing.assert_array_equal(rgb, before)


def test_rgb_non_contiguous_view_is_accepted():
    rgb = _rng().integers(0, 256, (40, 80, 3), dtype=np.uint8)
    view = rgb[:, ::2]
    out = to_rgb_uint8(view)
    np.testing.assert_array_equal(out, view)
    assert out.flags["C_CONTIGUOUS"]


def test_rgba_alpha_is_dropped():
    rgba = _rng().integers(0, 256, (40, 50, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: alpha must not blend the colours away
    out = to_rgb_uint8(rgba)
    _assert_rgb(out, (40, 50))
    np.testing.assert_array_equal(out, rgba[..., :3])
    assert out.flags["C_CONTIGUOUS"]


def test_uint16_is_scaled_and_rounded():
    values = np.array([0, 128, 257, 32896, 65535, 1000], dtype=np.uint16)
    image = np.tile(values, (32, 6))  # 32 x 36
    out = to_rgb_uint8(image)
    expected = np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    np.testing.assert_array_equal(out[0, :6, 0], expected)
    assert list(out[0, :6, 0]) == [0, 0, 1, 128, 255, 4]


def test_uint16_rgb():
    image = np.full((32, 32, 3), 65535, dtype=np.uint16)
    image[..., 1] = 0
    out = to_rgb_uint8(image)
    assert (out[..., 0] == 255).all() and (out[..., 1] == 0).all() and (out[..., 2] == 255).all()


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64])
def test_other_integer_types_read_as_floats_of_the_same_numbers(dtype):
    picture = _rng().integers(0, 128 if dtype == np.int8 else 256, (32, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb_uint8(picture.astype(dtype)), picture)
    if np.iinfo(dtype).max > 255:  # one pixel above 255 stretches, never darkens
        bright = picture.astype(dtype)
        bright[0, 0] = 256
        np.testing.assert_array_equal(
            to_rgb_uint8(bright), to_rgb_uint8(bright.astype(np.float64))
        )
        assert to_rgb_uint8(bright).mean() > 0.9 * picture.mean()


def test_a_nested_list_of_8bit_values_is_that_picture():
    picture = _rng().integers(0, 256, (32, 36), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb_uint8(picture.tolist())[..., 0], picture)


def test_a_tensor_is_taken_as_its_array_even_with_gradients():
    import torch

    picture = _rng().integers(0, 256, (32, 40, 3), dtype=np.uint8)
    tensor = torch.from_numpy(picture.astype(np.float32) / 255).requires_grad_()
    np.testing.assert_array_equal(to_rgb_uint8(tensor), picture)
    exact = torch.from_numpy(picture).to(torch.bfloat16)  # 8 bits: 0-255 held exactly
    np.testing.assert_array_equal(to_rgb_uint8(exact), picture)


def test_negative_integers_are_stretched():
    scan = np.linspace(-100, 100, 32 * 32).reshape(32, 32).astype(np.int16)
    out = to_rgb_uint8(scan)[..., 0]
    assert (out.min(), out.max()) == (0, 255)


def test_bool_maps_to_0_and_255():
    mask = np.zeros((32, 40), dtype=bool)
    mask[:10] = True
    out = to_rgb_uint8(mask)
    _assert_rgb(out, (32, 40))
    assert set(np.unique(out)) == {0, 255}
    assert (out[:10] == 255).all() and (out[10:] == 0).all()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_in_unit_range_is_multiplied_by_255(dtype):
    values = np.array([0.0, 0.2, 0.5, 1.0, 0.999], dtype=dtype)
    image = np.tile(values, (32, 8))  # 32 x 40
    out = to_rgb_uint8(image)
    expected = np.round(values.astype(np.float64) * 255).astype(np.uint8)
    np.testing.assert_array_equal(out[0, :5, 1], expected)
    assert out[0, 1, 1] == 51 and out[0, 3, 1] == 255


def test_float_in_8bit_range_is_taken_as_intensities():
    values = np.array([0.0, 1.4, 100.6, 254.5, 255.0, 2.0], dtype=np.float32)
    image = np.repeat(np.tile(values, (32, 6))[..., None], 3, axis=-1)
    out = to_rgb_uint8(image)
    np.testing.assert_array_equal(out[0, :6, 2], [0, 1, 101, 254, 255, 2])


@pytest.mark.parametrize(
    ("low", "high"), [(-1.0, 1.0), (0.0, 1000.0), (-500.0, -100.0), (10.0, 4096.0)]
)
def test_other_float_ranges_are_stretched_min_to_max(low, high):
    values = np.linspace(low, high, 5)
    image = np.tile(values, (32, 8)).astype(np.float32)
    out = to_rgb_uint8(image)
    row = out[0, :5, 0]
    assert row[0] == 0 and row[-1] == 255
    np.testing.assert_allclose(row.astype(float), [0, 63.75, 127.5, 191.25, 255], atol=0.51)
    assert np.all(np.diff(row.astype(int)) > 0)


@pytest.mark.parametrize("value", [-5.0, 300.0, 0.5, 128.0])
def test_constant_float_image_does_not_crash(value):
    # a constant image has no range to stretch: it must still convert (not divide by zero)
    out = to_rgb_uint8(np.full((32, 32), value, dtype=np.float32))
    _assert_rgb(out, (32, 32))
    assert len(np.unique(out)) == 1


def test_smallest_accepted_size():
    _assert_rgb(to_rgb_uint8(np.zeros((32, 32), np.uint8)), (32, 32))


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(np.zeros(100, np.uint8), id="1-D"),
        pytest.param(np.zeros((1, 40, 40, 3), np.uint8), id="4-D"),
        pytest.param(np.zeros((40, 40, 2), np.uint8), id="2-channels"),
        pytest.param(np.zeros((40, 40, 5), np.uint8), id="5-channels"),
        pytest.param(np.zeros((3, 40, 40), np.uint8), id="channels-first"),
        pytest.param(np.zeros((0, 0), np.uint8), id="empty"),
        pytest.param(np.zeros((0, 40, 3), np.float32), id="empty-rgb"),
        pytest.param(np.zeros((31, 100), np.uint8), id="31x100"),
        pytest.param(np.zeros((100, 31, 3), np.uint8), id="100x31"),
        pytest.param(np.zeros((40, 40), object), id="object"),
        pytest.param(np.zeros((40, 40), np.complex64), id="complex"),
        pytest.param(np.full((40, 40), np.nan, np.float32), id="all-nan"),
        pytest.param(
            np.where(np.eye(40, dtype=bool), np.nan, 0.5).astype(np.float64), id="some-nan"
        ),
        pytest.param(np.full((40, 40, 3), np.inf, np.float32), id="inf"),
        pytest.param(
            np.where(np.eye(40, dtype=bool), -np.inf, 0.5).astype(np.float32), id="minus-inf"
        ),
    ],
)
def test_rejected_inputs_name_shape_and_dtype(image):
    with pytest.raises(ValueError) as info:
        to_rgb_uint8(image)
    message = str(info.value)
    assert str(image.shape) in message
    assert str(image.dtype) in message


# ----------------------------------------------------------------------------- resized_shape
@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((180, 260), (512, 740)),  # the reference input -> resized.png
        ((260, 180), (740, 512)),
        ((512, 700), (512, 700)),
        ((1024, 1024), (512, 512)),
        # int(x + 0.5), not banker's rounding: 512.5 -> 513
        ((1024, 1025), (512, 513)),
        ((1025, 1024), (513, 512)),
        # long side capped at 2048: 512 x 5120 -> scaled by 0.4 -> 204.8 x 2048
        ((100, 1000), (205, 2048)),
        ((1000, 100), (2048, 205)),
        ((32, 4000), (int(32 * 2048 / 4000 + 0.5), 2048)),
        # exactly 4:1 reaches the cap without exceeding it
        ((100, 400), (512, 2048)),
    ],
)
def test_resized_shape_official_rule(size, expected):
    assert resized_shape(*size, SHORT, LONG) == expected


def test_resized_shape_matches_reference_resized_png(focus_reference):
    image = np.array(Image.open(focus_reference / "input.png").convert("RGB"))
    reference = np.array(Image.open(focus_reference / "resized.png").convert("RGB"))
    target = resized_shape(*image.shape[:2], SHORT, LONG)
    assert target == reference.shape[:2] == (512, 740)
    resized = resize_rgb(image, target)
    diff = np.abs(resized.astype(int) - reference.astype(int))
    assert diff.max() <= 1, f"PIL bilinear resize differs from resized.png by up to {diff.max()}"


@given(
    height=st.integers(min_value=32, max_value=20000),
    width=st.integers(min_value=32, max_value=20000),
)
def test_resized_shape_properties(height, width):
    new_h, new_w = resized_shape(height, width, SHORT, LONG)
    short, long = sorted((new_h, new_w))
    assert long <= LONG
    exact_long = max(height, width) * SHORT / min(height, width)
    if exact_long > LONG:  # capped: the long side is exactly the cap, the short side shrinks
        assert long == LONG
        assert 1 <= short <= SHORT
        exact_short = min(height, width) * LONG / max(height, width)
        assert abs(short - exact_short) <= 0.5 + 1e-6
    else:
        assert short == SHORT
        assert abs(long - exact_long) <= 0.5 + 1e-6
    # orientation is kept
    if height < width:
        assert new_h <= new_w
    elif height > width:
        assert new_h >= new_w
    else:
        assert new_h == new_w


@given(
    height=st.integers(min_value=32, max_value=5000),
    width=st.integers(min_value=32, max_value=5000),
)
def test_resized_shape_keeps_aspect_ratio(height, width):
    new_h, new_w = resized_shape(height, width, SHORT, LONG)
    # each side is within half a pixel of the exact scaled value
    scale = SHORT / min(height, width)
    if max(height, width) * scale > LONG:
        scale = LONG / max(height, width)
    assert abs(new_h - height * scale) <= 0.5 + 1e-9
    assert abs(new_w - width * scale) <= 0.5 + 1e-9


# ----------------------------------------------------------------------------- normalize_and_pad
@pytest.mark.parametrize(
    ("size", "padded"), [((50, 70), (64, 96)), ((64, 96), (64, 96)), ((33, 32), (64, 32))]
)
def test_normalize_and_pad(size, padded):
    image = _rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    x = normalize_and_pad(image, PRESET)
    assert x.dtype == torch.float32
    assert tuple(x.shape) == (1, 3, *padded)
    assert x.shape[-1] % PRESET.size_divisibility == 0
    assert x.shape[-2] % PRESET.size_divisibility == 0
    h, w = size
    mean = np.array([123.675, 116.280, 103.530])
    std = np.array([58.395, 57.120, 57.375])
    expected = (image.astype(np.float64) - mean) / std  # RGB order
    np.testing.assert_allclose(
        x[0, :, :h, :w].permute(1, 2, 0).numpy(), expected, rtol=1e-5, atol=1e-5
    )
    # padding (bottom and right) is zero after normalisation
    assert (x[0, :, h:, :] == 0).all()
    assert (x[0, :, :, w:] == 0).all()


def test_normalize_and_pad_constants_match_the_preset():
    assert PRESET.pixel_mean == pytest.approx((123.675, 116.280, 103.530))
    assert PRESET.pixel_std == pytest.approx((58.395, 57.120, 57.375))
    assert PRESET.size_divisibility == 32
    assert (SHORT, LONG) == (512, 2048)
