"""The training reader reads every layout export_sample writes; augmentation as specified."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic_shapes import shape_sample

from napari_focus.datasets import LAYOUTS, export_sample, get_layout
from napari_focus.training.augment import (
    OFFICIAL_SHORT_SIDES,
    AugmentConfig,
    augment,
    resize_labels,
    targets_from_classes,
)
from napari_focus.training.data import (
    BACKGROUND,
    FOREGROUND,
    IGNORE,
    DatasetError,
    collect_samples,
    list_samples,
    same_source_groups,
    split_samples,
)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reader_reads_what_export_wrote(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(1)
    written = {}
    for i in range(3):
        image, mask = shape_sample(rng, 64)
        name = f"img-{i}"
        result = export_sample(tmp_path, layout, name, image, mask)
        written[result.name] = (image, mask)
    samples, problems = list_samples(tmp_path, layout)
    assert problems == []
    assert [s.name for s in samples] == list(written)
    spec = get_layout(layout)
    for sample in samples:
        image, classes = sample.load()
        source, mask = written[sample.name]
        assert classes.dtype == np.uint8 and set(np.unique(classes)) <= {FOREGROUND, BACKGROUND}
        np.testing.assert_array_equal(classes == FOREGROUND, mask)
        if spec.image_format != "JPEG":  # lossless formats give the pixels back
            np.testing.assert_array_equal(image, source)
        else:
            assert np.abs(image.astype(int) - source).mean() < 10  # JPEG of noise
        assert sample.target_is_semantic == (spec.semantic_dir is not None)
        assert len(sample.sha256()) == 64


def test_reader_reports_listed_samples_with_missing_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for i in range(2):
        export_sample(tmp_path, "cod10k-train", f"cam-{i}", *shape_sample(rng, 48))
    missing = tmp_path / "COD10K-v3" / "Train" / "Image" / "cam-0.jpg"
    missing.unlink()
    samples, problems = list_samples(tmp_path, "cod10k-train")
    assert [s.name for s in samples] == ["cam-1"]
    assert len(problems) == 1 and "cam-0" in problems[0]


def test_samples_whose_files_cannot_be_read_are_left_out_before_training(
    tmp_path: Path,
) -> None:
    """A sample whose image or mask is empty or no image is a problem listed at the start
    (the output recorded it as trained on when too few steps met it)."""
    rng = np.random.default_rng(4)
    for name in ("good", "empty", "text", "badmask"):
        export_sample(tmp_path, "generic", name, *shape_sample(rng, 48))
    images, masks = tmp_path / "images", tmp_path / "masks"  # generic: the root itself
    (images / "empty.png").write_bytes(b"")
    (images / "text.png").write_text("not an image")
    (masks / "badmask.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a PNG cut after its signature
    samples, problems = collect_samples(tmp_path, ["generic"])
    assert [s.key for s in samples] == ["generic/good"]
    assert problems == [
        "generic/badmask: cannot read its files: badmask.png is not an image file that can be "
        "read: its contents are in no image format napari-focus reads, whatever its name says; "
        "copy the image again, or leave it out",
        "generic/empty: cannot read its files: empty.png is empty (0 bytes; an interrupted copy "
        "or download?): copy the image again, or leave it out",
        "generic/text: cannot read its files: text.png is not an image file that can be read: "
        "its contents are in no image format napari-focus reads, whatever its name says; copy "
        "the image again, or leave it out",
    ]


def test_reader_rejects_a_damaged_semantic_file_and_empty_roots(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no training samples"):
        collect_samples(tmp_path, ["duts-tr"])
    export_sample(tmp_path, "duts-tr", "a", *shape_sample(np.random.default_rng(3), 48))
    (sample,) = list_samples(tmp_path, "duts-tr")[0]
    from PIL import Image

    Image.fromarray(np.full((48, 48), 7, np.uint8)).save(sample.target)
    with pytest.raises(DatasetError, match="other than 0, 1 and 255"):
        sample.load()
    json_path = tmp_path / "DUTS" / "DUTS_Semantic_Train.json"
    json_path.write_text("{not json")
    with pytest.raises(DatasetError, match="not a readable FOCUS semantic JSON"):
        list_samples(tmp_path, "duts-tr")
    # asked for another layout, the damaged one holds no samples: the reason stays
    with pytest.raises(DatasetError, match=r"no training samples .* cod10k-train: export"):
        collect_samples(tmp_path, ["cod10k-train"])


def test_split_is_stable_when_samples_are_added(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    for i in range(10):
        export_sample(tmp_path, "generic", f"s{i}", *shape_sample(rng, 40))
    samples, _ = collect_samples(tmp_path, ["generic"])
    train, val = split_samples(samples[:8], val_fraction=0.25)
    assert len(val) == 2 and len(train) == 6
    train2, _val2 = split_samples(samples, val_fraction=0.25)
    kept = {s.key for s in val}
    assert all(s.key not in kept for s in train2)
    _, chosen = split_samples(samples, val_names=["s3", "generic/s4"])
    assert [s.name for s in chosen] == ["s3", "s4"]
    with pytest.raises(DatasetError, match="no exported sample is named nope"):
        split_samples(samples, val_names=["nope"])
    with pytest.raises(DatasetError, match=r"hold out fewer samples \(fewer --val names"):
        split_samples(samples[:2], val_names=["s0", "s1"])
    cod = tmp_path / "cod"
    export_sample(cod, "cod10k-train", "top", *shape_sample(rng, 40))  # exported as NF-top
    cod_samples, _ = collect_samples(cod, ["cod10k-train"])
    with pytest.raises(DatasetError, match=r"named top \(did you mean NF-top\?\)"):
        split_samples(cod_samples, val_names=["top"])


def test_one_photo_in_several_layouts_stays_on_one_side_of_the_split(tmp_path: Path) -> None:
    """The same photos exported into two layouts: validation never scores an image the
    training saw in the other layout; a layout named twice is read once; samples of one
    layout split as they did before."""
    rng = np.random.default_rng(7)
    for i in range(8):
        image, mask = shape_sample(rng, 40)
        for layout in ("duts-tr", "generic"):
            export_sample(tmp_path, layout, f"p{i}", image, mask)
    samples, _ = collect_samples(tmp_path, ["duts-tr", "generic", "duts-tr"])
    assert len(samples) == 16
    groups = same_source_groups(tmp_path, samples)
    assert groups["generic/p3"] == groups["duts-tr/p3"] != groups["duts-tr/p4"]
    for seed in range(5):
        train, val = split_samples(samples, val_fraction=0.25, seed=seed, groups=groups)
        assert len(val) == 4 and len(train) == 12
        seen = {groups[s.key] for s in train}
        assert not any(groups[s.key] in seen for s in val), seed
    _, chosen = split_samples(samples, val_names=["generic/p2"], groups=groups)
    assert sorted(s.key for s in chosen) == ["duts-tr/p2", "generic/p2"]

    # a group larger than the share asked for is not taken after a smaller one was
    sizes = {f"generic/p{i}": "generic/p0" if i < 5 else f"generic/p{i}" for i in range(8)}
    generic = [s for s in samples if s.layout == "generic"]
    for seed in range(10):
        _, val = split_samples(generic, val_fraction=0.25, seed=seed, groups=sizes)
        assert len(val) in (2, 5), (seed, [s.key for s in val])  # 2 asked: never 6

    alone, _ = collect_samples(tmp_path, ["generic"])
    assert split_samples(alone, val_fraction=0.25, groups=same_source_groups(tmp_path, alone)) == (
        split_samples(alone, val_fraction=0.25)
    )


def test_augmentation_keeps_image_and_labels_aligned() -> None:
    rng = np.random.default_rng(5)
    image = np.zeros((300, 200, 3), np.uint8)
    classes = np.ones((300, 200), np.uint8)
    image[100:200, 50:150] = 255
    classes[100:200, 50:150] = FOREGROUND
    config = AugmentConfig(canvas=256)
    assert config.crop == 320
    for _ in range(10):
        out_image, out_classes = augment(image, classes, rng, config)
        assert out_image.shape == (256, 256, 3) and out_classes.shape == (256, 256)
        valid = out_classes != IGNORE
        assert (out_image[~valid] == 128).all()  # padding value of the official mapper
        fg = out_classes == FOREGROUND
        if fg.any():  # the bright square stays where the foreground label is
            assert out_image[fg].mean() > out_image[valid & ~fg].mean() + 100


def test_augmentation_sides_and_targets_follow_the_official_mapper() -> None:
    assert OFFICIAL_SHORT_SIDES == (128, 153, 179, 204, 230, 256, 281, 307, 332, 358, 384,
                                    409, 435, 460, 486, 512)  # fmt: skip
    classes = np.array([[0, 1], [255, 1]], np.uint8)
    labels, masks = targets_from_classes(classes)
    assert labels.tolist() == [0, 1]
    assert masks[0].tolist() == [[True, False], [False, False]]
    assert masks[1].tolist() == [[False, True], [False, True]]
    labels, masks = targets_from_classes(np.full((2, 2), 255, np.uint8))
    assert labels.tolist() == [] and masks.shape == (0, 2, 2)


def test_labels_are_resized_as_the_official_mapper_resizes_them() -> None:
    """The mapper's float64 label map goes through torch's nearest (source floor(i * in /
    out)), not PIL's pixel-centre nearest (floor((i + 0.5) * in / out))."""
    column = np.arange(3, dtype=np.uint8)[:, None]
    assert resize_labels(column, 5, 1)[:, 0].tolist() == [0, 0, 1, 1, 2]  # PIL: 0 0 1 2 2
    row = np.array([[7, 9]], np.uint8)
    assert resize_labels(row, 1, 3).tolist() == [[7, 7, 9]]  # PIL: 7 9 9
    assert resize_labels(np.arange(12, dtype=np.uint8).reshape(3, 4), 3, 4).tolist() == (
        np.arange(12).reshape(3, 4).tolist()
    )


def test_semantic_json_order_is_the_training_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    for name in ("b-2", "a-1", "c-3"):
        export_sample(tmp_path, "istd-train", name, *shape_sample(rng, 40))
    samples, _ = list_samples(tmp_path, "istd-train")
    listed = json.loads((tmp_path / "ISTD_Dataset" / "COD_SEMANTIC_train.json").read_text())
    assert [s.name for s in samples] == [
        a["file_name"].split(".")[0] for a in listed["annotations"]
    ]


def test_a_sample_too_elongated_for_the_model_is_named(tmp_path: Path, tiny_mlp) -> None:
    """Training and validation both resize; an image beyond 4096:1 cannot be resized, and
    the error says which sample it is (not only the image's size)."""
    import torch

    from napari_focus import FocusPredictor
    from napari_focus.training.batches import TrainBatches
    from napari_focus.training.validate import score_samples

    export_sample(tmp_path, "generic", "strip", np.zeros((32, 140_000), np.uint8),
                  np.ones((32, 140_000), bool))  # fmt: skip
    samples, _ = collect_samples(tmp_path, ["generic"])
    batches = TrainBatches(samples, 1, AugmentConfig(canvas=128), seed=0)
    with pytest.raises(DatasetError, match=r"sample generic/strip \(.*strip.png\): .*elongated"):
        batches(0, torch.device("cpu"))
    arch, state = tiny_mlp
    predictor = FocusPredictor.from_state_dict(state, "sod", architecture=arch, device="cpu")
    with pytest.raises(DatasetError, match=r"sample generic/strip .*elongated"):
        score_samples(predictor, samples)
