"""Batched inference equals one image at a time; host-side edges equal the tensor path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from napari_focus import FocusPredictor
from napari_focus.model.edge_prior import edge_injected_u8
from napari_focus.model.postprocess import final_mask, final_masks
from napari_focus.presets import input_preset
from napari_focus.transforms import normalize_and_pad, prepare_view, resize_rgb, resized_shape


@pytest.fixture(scope="module")
def predictor(tiny_mlp):
    """The tiny model at a 96-pixel short side (the official 512 costs seconds per image)."""
    arch, state = tiny_mlp
    predictor = FocusPredictor.from_state_dict(state, "sod", architecture=arch, device="cpu")
    predictor.input = dataclasses.replace(
        predictor.input, short_side=96, max_long_side=400, tta_short_sides=(64, 96)
    )
    return predictor


@pytest.fixture(scope="module")
def photo(focus_reference) -> np.ndarray:
    return np.array(Image.open(focus_reference / "input.png").convert("RGB"))


def _mixed_images(photo: np.ndarray) -> list[np.ndarray]:
    """Sizes chosen so that some share a padded size (96x160) and others do not."""
    pil = Image.fromarray(photo)
    sizes = [(260, 180), (250, 180), (180, 180), (272, 180), (200, 150), (260, 180)]
    images = [np.array(pil.resize(size, Image.BILINEAR)) for size in sizes]
    images[-1] = np.ascontiguousarray(images[-1][::-1])  # same size, other pixels
    images.append(np.array(pil.convert("L").resize((64, 48))))  # gray
    return images


def test_host_edges_equal_the_tensor_path(photo):
    preset = input_preset()
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    for rgb in (photo, noise, np.zeros((40, 50, 3), np.uint8), np.full((33, 47, 3), 255, np.uint8)):
        view = prepare_view(rgb, 512, 2048, preset)
        resized = resize_rgb(rgb, resized_shape(*rgb.shape[:2], 512, 2048))
        np.testing.assert_array_equal(view.resized, resized)
        expected = edge_injected_u8(normalize_and_pad(resized, preset)[0])
        assert view.edges.dtype == np.uint8
        np.testing.assert_array_equal(view.edges, expected)


def test_predict_batch_equals_predict_one_by_one(predictor, photo):
    images = _mixed_images(photo)
    padded = {predictor.prepare(image).views[0].padded_hw for image in images}
    assert 1 < len(padded) < len(images)  # shared and distinct canvases
    singles = [predictor.predict(image) for image in images]
    for batch_size in (3, 8):
        batched = predictor.predict_batch(images, batch_size=batch_size)
        assert len(batched) == len(images)
        for image, one, many in zip(images, singles, batched, strict=True):
            assert many.probability.shape == image.shape[:2]
            np.testing.assert_allclose(many.probability, one.probability, atol=1e-5, rtol=0)
            np.testing.assert_array_equal(many.mask, one.mask)


def test_predict_batch_with_tta_equals_predict(predictor, photo):
    images = _mixed_images(photo)[:3]
    batched = predictor.predict_batch(images, tta=True, batch_size=4)
    for image, many in zip(images, batched, strict=True):
        one = predictor.predict(image, tta=True)
        np.testing.assert_allclose(many.probability, one.probability, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(many.mask, one.mask)


def test_batch_size_is_checked(predictor, photo):
    with pytest.raises(ValueError, match="batch_size"):
        predictor.predict_batch([photo], batch_size=0)


def _final_mask_by_walking(cls: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The official rule written as the plain loop over the top four pairs."""
    probs = torch.softmax(cls, -1)[:, :-1]
    masks = logits.sigmoid()
    flat = masks.flatten(1)
    quality = (flat * flat).sum(1) / (flat.sum(1) + 1e-6)
    top, index = probs.flatten().topk(4)
    labels, queries = (index % 2).tolist(), (index // 2).tolist()
    scores = (top * quality[index // 2]).tolist()
    chosen: list[tuple[int, int]] = []
    for score, label, query in zip(scores, labels, queries, strict=True):
        if len(chosen) < 2 and score > 0.5 and (not chosen or label != chosen[-1][0]):
            chosen.append((label, query))
    if len(chosen) == 2:
        by_class = dict(chosen)
        return (masks[by_class[0]] > masks[by_class[1]]).to(torch.uint8)
    best = scores.index(max(scores))
    prob = masks[queries[best]]
    return (prob > 0.5 if labels[best] == 0 else prob < 0.5).to(torch.uint8)


def test_batched_final_mask_follows_the_official_walk():
    generator = torch.Generator().manual_seed(0)
    cls = torch.randn(200, 2, 3, generator=generator) * 3
    logits = torch.randn(200, 2, 9, 11, generator=generator) * 2 + torch.randn(200, 2, 1, 1) * 2
    batched = final_masks(cls, logits)
    for i in range(len(cls)):
        expected = _final_mask_by_walking(cls[i], logits[i])
        assert torch.equal(batched[i], expected), i
        assert torch.equal(final_mask(cls[i], logits[i]), expected)


def test_batches_at_the_official_size_equal_single_images_up_to_float_rounding(
    tiny_mlp, photo
):
    """What the README promises for --batch-size: batch size 1 is predict bit for bit;
    a larger batch moves probabilities by about 1e-5 and flips at most a rare mask pixel
    where the model is that undecided (400x300 photos at the official 512 short side)."""
    arch, state = tiny_mlp
    predictor = FocusPredictor.from_state_dict(state, "sod", architecture=arch, device="cpu")
    pil = Image.fromarray(photo)
    images = [
        np.array(pil.resize((400, 300), Image.BILINEAR)),
        np.array(pil.transpose(Image.FLIP_LEFT_RIGHT).resize((400, 300), Image.BILINEAR)),
        np.array(pil.crop((10, 5, 250, 185)).resize((400, 300), Image.BILINEAR)),
    ]
    assert len({predictor.prepare(image).views[0].padded_hw for image in images}) == 1
    singles = [predictor.predict(image) for image in images]
    for one, again in zip(singles, predictor.predict_batch(images, batch_size=1), strict=True):
        np.testing.assert_array_equal(again.probability, one.probability)
        np.testing.assert_array_equal(again.mask, one.mask)
    for one, many in zip(singles, predictor.predict_batch(images, batch_size=3), strict=True):
        np.testing.assert_allclose(many.probability, one.probability, atol=5e-5, rtol=0)
        assert np.mean(many.mask != one.mask) <= 1e-4
