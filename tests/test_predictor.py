"""FocusPredictor behaviour beyond the golden numbers: TTA, inputs, devices."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from napari_focus import FocusPredictor
from napari_focus.io import read_image
from napari_focus.transforms import prepare_view


@pytest.fixture(scope="module")
def predictor(tiny_mlp):
    arch, state = tiny_mlp
    return FocusPredictor.from_state_dict(state, "cod", architecture=arch, device="cpu")


@pytest.fixture(scope="module")
def small_image(focus_reference) -> np.ndarray:
    rgb = Image.open(focus_reference / "input.png").convert("RGB")
    return np.array(rgb.resize((72, 50), Image.BILINEAR))


def _sem_seg(predictor, rgb: np.ndarray, short_side: int) -> torch.Tensor:
    """``sem_seg`` of one view at the image's resolution."""
    view = prepare_view(rgb, short_side, 4480, predictor.input)
    sems, _ = predictor._forward([view], [rgb.shape[:2]], [False])
    return sems[0]


def test_tta_averages_scales_and_flips(predictor, small_image, monkeypatch):
    preset = dataclasses.replace(predictor.input, tta_short_sides=(64, 96), tta_max_long_side=4480)
    monkeypatch.setattr(predictor, "input", preset)
    result = predictor.predict(small_image, tta=True)

    expected = []
    for side in (64, 96):
        plain = _sem_seg(predictor, small_image, side)
        flipped = _sem_seg(predictor, np.ascontiguousarray(small_image[:, ::-1]), side)
        expected += [plain, flipped.flip(-1)]
    average = torch.stack(expected).mean(0)
    assert result.probability.shape == small_image.shape[:2]
    np.testing.assert_allclose(result.probability, average[0].numpy(), atol=1e-6)
    np.testing.assert_array_equal(result.mask, (average[0] > average[1]).numpy().astype(np.uint8))
    # flipping matters: the average differs from the unflipped passes alone
    assert not torch.allclose(expected[0], expected[1], atol=1e-4)


def test_gray_uint16_input_keeps_resolution(predictor, small_image):
    gray16 = (small_image.mean(-1) * 257).astype(np.uint16)
    result = predictor.predict(gray16)
    assert result.mask.shape == result.probability.shape == gray16.shape
    assert result.mask.dtype == np.uint8 and set(np.unique(result.mask)) <= {0, 1}
    assert result.probability.min() >= 0.0 and result.probability.max() <= 1.0


def test_rgba_equals_rgb(predictor, small_image):
    rgba = np.concatenate([small_image, np.full((*small_image.shape[:2], 1), 7, np.uint8)], -1)
    a, b = predictor.predict(rgba), predictor.predict(small_image)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.probability, b.probability)


def test_bad_image_is_rejected_before_the_model(predictor):
    with pytest.raises(ValueError, match=r"shape \(10, 10, 3\)"):
        predictor.predict(np.zeros((10, 10, 3), np.uint8))


def test_predict_batch_wants_several_images_and_names_the_bad_one(predictor, tmp_path):
    image = np.zeros((40, 48, 3), np.uint8)
    for one in (image, image[..., 0], str(tmp_path / "a.png"), tmp_path / "a.png"):
        with pytest.raises(TypeError, match="for one image use predict"):
            predictor.predict_batch(one)
    with pytest.raises(ValueError, match=r"^images\[1\]: unsupported image layout"):
        predictor.predict_batch([image, np.zeros((40, 48, 2))])
    stack = np.zeros((2, 40, 48), np.uint8)  # two gray images
    assert [r.mask.shape for r in predictor.predict_batch(stack)] == [(40, 48)] * 2


def test_batch_size_and_precision_are_checked_as_a_user_writes_them(predictor):
    image = np.zeros((40, 48, 3), np.uint8)
    for wrong in (0, 2.0, "2", True):
        with pytest.raises(ValueError, match="batch_size must be a whole number of at least 1"):
            predictor.predict_batch([image], batch_size=wrong)
    assert len(predictor.predict_batch([image, image], batch_size=np.int64(2))) == 2
    from napari_focus.runtime import resolve_precision

    assert resolve_precision(" Float32", torch.device("cpu")) == "float32"


def test_a_read_only_image_is_taken_without_a_torch_warning(predictor, recwarn):
    image = np.zeros((512, 600, 3), np.uint8)  # short side 512: no resize, no copy
    image.setflags(write=False)
    predictor.predict(image)
    assert not [w for w in recwarn if "not writable" in str(w.message)]


def test_half_precision_needs_an_accelerator(predictor):
    with pytest.raises(ValueError, match="CUDA or MPS"):
        FocusPredictor(predictor.model, "sod", device="cpu", precision="float16")
    with pytest.raises(ValueError, match="precision"):
        FocusPredictor(predictor.model, "sod", device="cpu", precision="float8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_missing_cuda_is_a_clear_error(predictor):
    with pytest.raises(ValueError, match=r"CPU-only build|no CUDA GPU is visible"):
        FocusPredictor(predictor.model, "sod", device="cuda")


def test_unknown_task_is_rejected(predictor):
    with pytest.raises(ValueError, match="unknown task"):
        FocusPredictor(predictor.model, "xyz", device="cpu")


def test_default_batch_follows_the_device_and_its_memory(monkeypatch):
    from types import SimpleNamespace

    from napari_focus.devices import default_batch_size

    assert default_batch_size(torch.device("cpu")) == 1
    assert default_batch_size(torch.device("mps")) == 2
    for gib, expected in ((8, 4), (16, 4), (24, 8), (80, 8)):
        props = SimpleNamespace(total_memory=gib * 2**30)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _device, p=props: p)
        assert default_batch_size(torch.device("cuda")) == expected, gib


def test_an_image_file_path_is_read_upright_as_the_command_line_reads_it(
    predictor, small_image, tmp_path
):
    stored = np.ascontiguousarray(small_image[:, :48])  # not square: a turn changes the shape
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter clockwise
    Image.fromarray(stored).save(tmp_path / "turned.png", exif=exif.tobytes())
    upright = read_image(tmp_path / "turned.png")
    assert upright.shape[:2] == stored.shape[1::-1]
    expected = predictor.predict(upright)
    for path in (tmp_path / "turned.png", str(tmp_path / "turned.png")):
        result = predictor.predict(path)
        np.testing.assert_array_equal(result.mask, expected.mask)
        np.testing.assert_array_equal(result.probability, expected.probability)
    [batched] = predictor.predict_batch([tmp_path / "turned.png"], batch_size=1)
    np.testing.assert_array_equal(batched.probability, expected.probability)

    (tmp_path / "notes.png").write_text("not an image", encoding="utf-8")
    with pytest.raises(OSError, match=r"notes\.png is not an image file"):
        predictor.predict(tmp_path / "notes.png")
    Image.new("RGB", (20, 16)).save(tmp_path / "speck.png")
    with pytest.raises(ValueError, match=r"speck\.png is 20x16 pixels; FOCUS needs at least"):
        predictor.predict(str(tmp_path / "speck.png"))
