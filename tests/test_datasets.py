"""Export into FOCUS training layouts, re-read the way FOCUS reads them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_focus.datasets import (
    LAYOUTS,
    ExportError,
    SampleExistsError,
    UnusableNameError,
    export_sample,
    get_layout,
    read_records,
    sample_paths,
)
from napari_focus.datasets.export import dataset_dir

mask_util = pytest.importorskip("pycocotools.mask")

H, W = 40, 60
FOCUS_LAYOUTS = [name for name in LAYOUTS if name != "generic"]
# a name as the official datasets spell them (COD10K/ISTD loaders split at '-')
OFFICIAL_NAMES = {
    "duts-tr": ["ILSVRC2012_test_00000004", "sun_aaadqbupbrmsgoia"],
    "cod10k-train": ["COD10K-CAM-1-Aquatic-1-BatFish-2", "COD10K-NonCAM-1-Aquatic-1"],
    "camo-train": ["camourflage_00001", "camourflage_00002"],
    "istd-train": ["1-1", "1-2"],
    "defocus-train": ["motion0001", "out_of_focus0001"],
    "casia-train": ["Tp_D_CND_M_N_ani00018_sec00096_00138", "Tp_S_NNN_S_N_arc00013_arc00013_01"],
}


def make_sample(seed: int, h: int = H, w: int = W) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
    mask[top : top + h // 3, left : left + w // 3] = 1
    mask[rng.random((h, w)) < 0.05] ^= 1
    return image, mask


def build_official(root: Path, layout: str) -> list[str]:
    """A tiny split laid out as the official prepare_*.py scripts leave it."""
    spec = get_layout(layout)
    names = OFFICIAL_NAMES[layout]
    base = root / spec.dataset_dir
    images, inst_anns, sem_anns = [], [], []
    for i, name in enumerate(names, start=1):
        image, mask = make_sample(100 + i)
        paths = sample_paths(root, spec, name)
        for p in paths.all():
            p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(paths.image, format=spec.image_format)
        gt = np.where(mask > 0, 255, 0).astype(np.uint8)
        for p in [paths.mask, *paths.extra_masks]:
            Image.fromarray(gt).save(p)
        Image.fromarray(np.asarray(Image.open(paths.mask)) + 1).save(paths.semantic)
        file_name = paths.image.name
        images.append({"id": i, "file_name": file_name, "width": W, "height": H})
        enc = mask_util.encode(np.asfortranarray(gt))
        enc["counts"] = enc["counts"].decode()
        inst_anns.append({
            "id": i, "image_id": i, "file_name": file_name, "category_id": 1,
            "segmentation": enc, "area": mask_util.area(enc).tolist(),
            "bbox": mask_util.toBbox(enc).tolist(), "iscrowd": 0,
        })  # fmt: skip
        segs = []
        for sid, cat, part in ((2 * i - 1, 1, gt != 0), (2 * i, 2, gt == 0)):
            e = mask_util.encode(np.asfortranarray(part.astype(np.uint8)))
            segs.append({"id": sid, "category_id": cat, "area": mask_util.area(e).tolist(),
                         "bbox": mask_util.toBbox(e).tolist(), "iscrowd": 0})  # fmt: skip
        sem_anns.append({"image_id": i, "file_name": file_name, "segments_info": segs})
    inst_cats = [{"id": 1, "name": "foreground", "supercategory": "foreground"}]
    sem_cats = [
        {"id": 1, "name": "foreground", "supercategory": "foreground", "is_thing": 1},
        {"id": 2, "name": "background", "supercategory": "background", "is_thing": 0},
    ]
    (base / spec.instance_json).write_text(
        json.dumps({"images": images, "annotations": inst_anns, "categories": inst_cats})
    )
    (base / spec.semantic_json).write_text(
        json.dumps({"images": images, "annotations": sem_anns, "categories": sem_cats})
    )
    return names


def focus_entries(root: Path, layout: str) -> list[dict]:
    """What the FOCUS register_*.py loader makes of the semantic JSON (file paths)."""
    spec = get_layout(layout)
    base = dataset_dir(root, spec)
    data = json.loads((base / spec.semantic_json).read_text())
    out = []
    for ann in data["annotations"]:
        if spec.name_needs_dash and ann["file_name"].split("-")[1] == "NonCAM":  # as FOCUS does
            continue
        stem = ann["file_name"].split(".")[0]
        out.append({
            "file_name": base / spec.image_dir /
            (os.path.splitext(ann["file_name"])[0] + spec.image_ext),
            "pan_seg_file_name": base / spec.mask_dir / (stem + spec.mask_suffix),
            "sem_seg_file_name": base / spec.semantic_dir / (stem + spec.mask_suffix),
            "ann": ann,
        })  # fmt: skip
    return out


def check_split(root: Path, layout: str, strict: bool = True) -> None:
    """Everything a FOCUS run would read is complete and consistent. ``strict=False``
    (right after a crash) allows orphan files and instance-only entries."""
    spec = get_layout(layout)
    base = dataset_dir(root, spec)
    inst = json.loads((base / spec.instance_json).read_text())
    sem = json.loads((base / spec.semantic_json).read_text())
    for data in (inst, sem):
        ids = [x["id"] for x in data["images"]]
        assert len(ids) == len(set(ids))
        names = [x["file_name"] for x in data["annotations"]]
        assert len(names) == len(set(names)), "duplicate entries"
    ann_ids = [a["id"] for a in inst["annotations"]]
    assert len(ann_ids) == len(set(ann_ids))
    seg_ids = [s["id"] for a in sem["annotations"] for s in a["segments_info"]]
    assert len(seg_ids) == len(set(seg_ids))
    inst_by_name = {a["file_name"]: a for a in inst["annotations"]}
    for entry in focus_entries(root, layout):
        ann = entry["ann"]
        image = np.asarray(Image.open(entry["file_name"]).convert("RGB"))
        gt = np.asarray(Image.open(entry["pan_seg_file_name"]))
        semantic = np.asarray(Image.open(entry["sem_seg_file_name"]))
        assert gt.ndim == 2 and set(np.unique(gt)) <= {0, 255}
        assert semantic.shape == gt.shape == image.shape[:2]
        np.testing.assert_array_equal(semantic, (gt + 1).astype(np.uint8))
        assert set(np.unique(semantic)) <= {0, 1}
        fg = gt > 0
        fg_seg, bg_seg = ann["segments_info"]
        assert (fg_seg["category_id"], bg_seg["category_id"]) == (1, 2)
        assert fg_seg["area"] == fg.sum() and bg_seg["area"] == (~fg).sum()
        inst_ann = inst_by_name[ann["file_name"]]
        assert inst_ann["image_id"] == ann["image_id"]
        np.testing.assert_array_equal(mask_util.decode(inst_ann["segmentation"]), fg)
        assert inst_ann["area"] == int(fg.sum())
        assert inst_ann["bbox"] == mask_util.toBbox(inst_ann["segmentation"]).tolist()
    for folder in (spec.image_dir, spec.mask_dir, spec.semantic_dir):
        on_disk = [p for p in (base / folder).iterdir() if not p.name.startswith(".")]
        for path in on_disk:  # no half-written file under a visible name
            with Image.open(path) as img:
                img.load()
        if strict:
            assert len(on_disk) == len(sem["annotations"]) == len(inst["annotations"])
            assert not [p for p in (base / folder).iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("layout", FOCUS_LAYOUTS)
@pytest.mark.parametrize("existing", [False, True], ids=["empty", "official"])
def test_export_layout(tmp_path: Path, layout: str, existing: bool) -> None:
    old = build_official(tmp_path, layout) if existing else []
    spec = get_layout(layout)
    written = []
    for seed in range(3):
        image, mask = make_sample(seed)
        result = export_sample(tmp_path, layout, f"new-sample {seed}.png", image, mask)
        written.append((result, image, mask))
        assert result.status == "written"
        assert result.provenance == tmp_path / "napari_focus_provenance.jsonl"
    check_split(tmp_path, layout)
    entries = {e["file_name"].name: e for e in focus_entries(tmp_path, layout)}
    assert len(entries) == len(written) + len(old) - (existing and layout == "cod10k-train")
    for result, image, mask in written:
        assert result.image.name == result.name + spec.image_ext
        with Image.open(result.image) as img:
            assert img.format == spec.image_format  # CASIA: PNG data named .jpg
            pixels = np.asarray(img.convert("RGB"))
        if spec.image_format == "JPEG":
            assert np.abs(pixels.astype(int) - image).mean() < 4
        else:
            np.testing.assert_array_equal(pixels, image)
        gt = np.asarray(Image.open(result.mask))
        np.testing.assert_array_equal(gt, np.where(mask > 0, 255, 0))
        np.testing.assert_array_equal(np.asarray(Image.open(result.semantic)), (mask == 0) * 1)
        assert result.image_id is not None and result.segment_ids is not None
    ids = [r.image_id for r, _, _ in written]
    assert len(set(ids)) == 3 and min(ids) == len(old) + 1


def test_train_reads_the_samples_official_training_reads(tmp_path: Path) -> None:
    """COD10K's official split lists its NonCAM images, which FOCUS training skips."""
    from napari_focus.training.data import list_samples

    build_official(tmp_path, "cod10k-train")
    export_sample(tmp_path, "cod10k-train", "a-NonCAM", *make_sample(7))  # 'NonCAM.jpg'
    samples, problems = list_samples(tmp_path, "cod10k-train")
    official = [e["file_name"].stem for e in focus_entries(tmp_path, "cod10k-train")]
    assert [s.name for s in samples] == official == ["COD10K-CAM-1-Aquatic-1-BatFish-2", "a-NonCAM"]
    assert problems == [
        "cod10k-train: 1 of its listed samples left out, as FOCUS training leaves them out "
        "(second '-' field 'NonCAM': no camouflaged object)"
    ]


def test_a_camo_test_image_s_name_is_not_taken_over(tmp_path: Path) -> None:
    """CAMO's GT/ holds the test split's masks too: exporting a training sample of a
    test image's name would replace the mask the official test split is built from."""
    base = tmp_path / "CAMO-V.1.0-CVIU2019"
    (base / "Images" / "Test").mkdir(parents=True)
    (base / "GT").mkdir()
    Image.fromarray(make_sample(1)[0]).save(base / "Images" / "Test" / "camourflage_00001.jpg")
    test_mask = base / "GT" / "camourflage_00001.png"
    Image.fromarray(np.full((H, W), 255, np.uint8)).save(test_mask)
    before = test_mask.read_bytes()
    for policy in ("error", "skip", "replace"):
        with pytest.raises(UnusableNameError, match=r"test image .*Images/Test/camourflage_00001"):
            export_sample(tmp_path, "camo-train", "camourflage_00001", *make_sample(2),
                          on_exists=policy)  # fmt: skip
    result = export_sample(tmp_path, "camo-train", "camourflage_00001", *make_sample(2),
                           on_exists="rename")  # fmt: skip
    assert (result.status, result.name) == ("renamed", "camourflage_00001_1")
    assert test_mask.read_bytes() == before
    check_split(tmp_path, "camo-train")


def test_generic_layout(tmp_path: Path) -> None:
    image, mask = make_sample(0)
    result = export_sample(tmp_path, "generic", "cells/01.tif", image, mask)
    assert result.image == tmp_path / "images" / "cells_01.png"
    assert result.mask == tmp_path / "masks" / "cells_01.png"
    assert result.semantic is None and result.instance_json is None
    np.testing.assert_array_equal(np.asarray(Image.open(result.image)), image)
    np.testing.assert_array_equal(np.asarray(Image.open(result.mask)), (mask > 0) * 255)
    assert not list(tmp_path.glob("*.json"))


def test_semantic_value_wraps_like_official(tmp_path: Path) -> None:
    image, mask = make_sample(1)
    result = export_sample(tmp_path, "defocus-train", "a", image, mask)
    with Image.open(result.semantic) as img:
        assert img.format == "BMP" and img.mode == "L"
        values = np.asarray(img)
    official = np.asarray(Image.open(result.mask)).astype(np.uint8) + 1  # prepare_*.convert()
    np.testing.assert_array_equal(values, official)
    assert values[mask > 0].max() == 0 and values[mask == 0].min() == 1


def test_policies(tmp_path: Path) -> None:
    layout = "duts-tr"
    image, mask = make_sample(0)
    first = export_sample(tmp_path, layout, "s", image, mask)
    js = first.semantic_json.read_bytes(), first.instance_json.read_bytes()
    with pytest.raises(SampleExistsError, match="already exists"):
        export_sample(tmp_path, layout, "s", image, 1 - mask)
    assert (first.semantic_json.read_bytes(), first.instance_json.read_bytes()) == js
    skipped = export_sample(tmp_path, layout, "s", image, 1 - mask, on_exists="skip")
    assert skipped.status == "skipped" and skipped.provenance is None
    assert skipped.image_id == first.image_id
    renamed = [export_sample(tmp_path, layout, "s", image, mask, on_exists="rename")]
    renamed.append(export_sample(tmp_path, layout, "s", image, mask, on_exists="rename"))
    assert [r.name for r in renamed] == ["s_1", "s_2"]
    assert {r.status for r in renamed} == {"renamed"}
    new_mask = np.zeros_like(mask)
    new_mask[:5, :5] = 1
    replaced = export_sample(tmp_path, layout, "s", image, new_mask, on_exists="replace")
    assert replaced.status == "replaced"
    assert (replaced.image_id, replaced.annotation_id, replaced.segment_ids) == (
        first.image_id, first.annotation_id, first.segment_ids
    )  # fmt: skip
    inst = json.loads(first.instance_json.read_text())
    assert [a["file_name"] for a in inst["annotations"]] == ["s.jpg", "s_1.jpg", "s_2.jpg"]
    assert inst["annotations"][0]["area"] == 25
    check_split(tmp_path, layout)
    assert len(read_records(tmp_path)) == 4
    with pytest.raises(ExportError, match="on_exists"):
        export_sample(tmp_path, layout, "t", image, mask, on_exists="overwrite")


def test_orphan_files_count_as_existing(tmp_path: Path) -> None:
    image, mask = make_sample(0)
    paths = sample_paths(tmp_path, "duts-tr", "orphan")
    paths.image.parent.mkdir(parents=True)
    paths.image.write_bytes(b"left by a killed export")
    with pytest.raises(SampleExistsError, match="interrupted"):
        export_sample(tmp_path, "duts-tr", "orphan", image, mask)
    assert export_sample(tmp_path, "duts-tr", "orphan", image, mask, on_exists="replace")
    check_split(tmp_path, "duts-tr")


@pytest.mark.parametrize(
    ("mask", "match"),
    [
        (np.zeros((H, W + 1)), "does not match"),
        (np.zeros((H, W, 1)), "2-D"),
        (np.full((H, W), np.nan), "NaN"),
        (-np.ones((H, W), np.int16), "negative"),
        (np.zeros((H, W), dtype=object), "dtype"),
    ],
)
def test_bad_masks_write_nothing(tmp_path: Path, mask: np.ndarray, match: str) -> None:
    image, _ = make_sample(0)
    with pytest.raises(ExportError, match=match):
        export_sample(tmp_path / "root", "duts-tr", "a", image, mask)
    assert not (tmp_path / "root").exists()


def test_bad_images_and_proposals(tmp_path: Path) -> None:
    _, mask = make_sample(0)
    with pytest.raises(ExportError, match="image"):
        export_sample(tmp_path / "r", "duts-tr", "a", np.zeros((H, W, 2)), mask)
    with pytest.raises(ExportError, match="proposal"):
        export_sample(
            tmp_path / "r", "duts-tr", "a", np.zeros((H, W)), mask,
            provenance={"proposal": np.zeros((2, 2))},
        )  # fmt: skip
    assert not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match="unknown layout"):
        export_sample(tmp_path / "r", "coco", "a", np.zeros((H, W)), mask)


def test_images_too_wide_for_jpeg_are_refused_before_any_write(tmp_path: Path) -> None:
    image = np.zeros((32, 65501), np.uint8)
    mask = np.zeros(image.shape, bool)
    with pytest.raises(ExportError, match=r"at most 65,500 pixels.*PNG layout") as info:
        export_sample(tmp_path / "r", "duts-tr", "wide", image, mask)
    assert "32 x 65501" in str(info.value)
    assert not (tmp_path / "r").exists()
    result = export_sample(tmp_path / "r", "generic", "wide", image, mask)  # PNG: no limit
    assert Image.open(result.image).size == (65501, 32)


@pytest.mark.parametrize(
    "image",
    [
        np.full((H, W), 1000, np.uint16),
        np.ones((H, W, 4), np.float32) * 0.5,
        np.zeros((H, W), bool),
    ],
)
def test_image_conversions(tmp_path: Path, image: np.ndarray) -> None:
    _, mask = make_sample(0)
    result = export_sample(tmp_path, "istd-train", "1-1", image, mask)
    pixels = np.asarray(Image.open(result.image))
    assert pixels.shape == (H, W, 3) and pixels.dtype == np.uint8


def test_damaged_json_is_not_touched(tmp_path: Path) -> None:
    spec = get_layout("duts-tr")
    path = tmp_path / spec.dataset_dir / spec.instance_json
    path.parent.mkdir(parents=True)
    path.write_text('{"images": [')
    image, mask = make_sample(0)
    with pytest.raises(ExportError, match="not valid JSON"):
        export_sample(tmp_path, "duts-tr", "a", image, mask)
    assert path.read_text() == '{"images": ['
    assert not sample_paths(tmp_path, spec, "a").image.exists()


_READ_ONLY_CHILD = """
import os, sys, numpy as np
from napari_focus.datasets import export_sample, ExportError
image, mask = np.zeros((40, 60, 3), np.uint8), np.ones((40, 60), np.uint8)
if os.geteuid() == 0:  # root ignores permissions: warm up lazy imports, then drop to nobody
    export_sample(sys.argv[2], "duts-tr", "warm", image, mask)
    os.setgid(65534)
    os.setuid(65534)
try:
    export_sample(sys.argv[1], "duts-tr", "a", image, mask)
except ExportError as exc:
    print("EXPORT-ERROR", exc)
    sys.exit(3)
"""


def test_read_only_root(tmp_path: Path) -> None:
    root = tmp_path / "datasets"
    root.mkdir()
    os.chmod(root, 0o555)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _READ_ONLY_CHILD, str(root), str(tmp_path / "warm")],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )  # fmt: skip
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "EXPORT-ERROR" in proc.stdout and "lock" in proc.stdout
        assert list(root.iterdir()) == []
    finally:
        os.chmod(root, 0o755)


def test_provenance(tmp_path: Path) -> None:
    image, mask = make_sample(0)
    proposal = mask.copy()
    proposal[:, :10] = 1
    src = tmp_path / "src.png"
    Image.fromarray(image).save(src)
    export_sample(
        tmp_path / "root", "duts-tr", "x", image, mask,
        provenance={"source_path": src, "task": "sod", "model_size": "large",
                    "weights_id": "hub:org/focus", "weights_revision": "abc123",
                    "threshold": 0.5, "cleanup": {"min_size": 64}, "proposal": proposal,
                    "note": "kept", "extra": {"layer": "x", "tta": False}},
    )  # fmt: skip
    (record,) = read_records(tmp_path / "root")
    assert record["layout"] == "duts-tr" and record["name"] == "x"
    assert record["source_path"] == str(src)
    import hashlib

    assert record["source_sha256"] == hashlib.sha256(image.tobytes()).hexdigest()
    assert record["weights_revision"] == "abc123" and record["cleanup"] == {"min_size": 64}
    before, after = proposal > 0, mask > 0
    assert record["proposal"]["changed_fraction"] == pytest.approx((before != after).mean())
    assert record["proposal"]["iou"] == pytest.approx(
        (before & after).sum() / (before | after).sum()
    )
    assert record["extra"] == {"note": "kept", "layer": "x", "tta": False}  # not nested
    assert "T" in record["time"]


def test_jpeg_source_bytes_are_reused(tmp_path: Path) -> None:
    image, mask = make_sample(0)
    src = tmp_path / "photo.jpg"
    Image.fromarray(image).save(src, quality=80)
    decoded = np.asarray(Image.open(src).convert("RGB"))
    result = export_sample(tmp_path / "r", "duts-tr", "photo", decoded, mask,
                           provenance={"source_path": str(src)})  # fmt: skip
    assert result.image.read_bytes() == src.read_bytes()
