"""Masks record the task and weights that predicted them, so that `predict` into a folder
of another task's masks refuses instead of keeping them as its own (both engines), and
says so when it keeps masks of other weights. Masks without a record are never judged."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from test_cli import run_cli

from napari_focus.io import read_image, write_mask, write_probability
from napari_focus.mask_files import read_mask_file
from napari_focus.mask_provenance import (
    RECORD_KEY,
    MadeBy,
    MasksOfAnotherTask,
    check_existing_masks,
    read_made_by,
)


@pytest.fixture
def weights(tiny_checkpoint, tmp_path) -> Path:
    """The tiny model under the name the messages below show."""
    return Path(shutil.copy(tiny_checkpoint, tmp_path / "tiny.safetensors"))


@pytest.fixture
def photos(focus_reference, tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    source = Image.open(focus_reference / "input.png").convert("RGB")
    for i in range(3):
        source.rotate(15 * i).resize((72, 56), Image.BILINEAR).save(folder / f"p{i}.png")
    return folder


def trained_for(weights: Path, task: str) -> Path:
    """A copy of ``weights`` of the same file name that records ``task`` (a checkpoint
    tuned for that task): a run records the task its weights say."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    copy = weights.parent / f"{task} weights" / weights.name
    if not copy.is_file():
        copy.parent.mkdir(exist_ok=True)
        with safe_open(str(weights), framework="pt") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
            metadata = {**(f.metadata() or {}), "task": task}
        save_file(tensors, str(copy), metadata=metadata)
    return copy


def _predict(photos: Path, out: Path, weights: Path, task: str, *flags) -> tuple[int, str]:
    return run_cli(
        "predict", photos, "--task", task, "--weights", trained_for(Path(weights), task),
        "--out", out, "--device", "cpu", "--quiet", *flags,
    )  # fmt: skip


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_run_records_the_task_its_weights_were_trained_for(weights):
    """--task cod with weights recorded for sod gives sod masks (the run warns): they
    record sod, so a later export into a cod split names them."""
    assert MadeBy.of_run("cod", None, weights) == MadeBy("sod", "tiny.safetensors")
    assert MadeBy.of_run("cod", None, trained_for(weights, "cod")).task == "cod"
    assert MadeBy.of_run("cod", None, "s3://bucket/w.safetensors").task == "cod"


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_mask_keeps_its_record_and_reads_as_before(tmp_path, suffix):
    mask = np.zeros((20, 30), np.uint8)
    mask[4:12, 6:20] = 1
    made_by = MadeBy.of_run("cod", "giant", None)
    assert made_by == MadeBy("cod", "focus_giant_cod.pth")
    path = write_mask(tmp_path / f"m{suffix}", mask, record=made_by.text())
    assert read_made_by(path) == made_by
    np.testing.assert_array_equal(read_image(path), mask * 255)
    np.testing.assert_array_equal(read_mask_file(path), mask.astype(bool))
    probability = write_probability(tmp_path / f"p{suffix}", mask * 0.25, record=made_by.text())
    assert read_made_by(probability) == made_by
    assert read_made_by(write_mask(tmp_path / f"plain{suffix}", mask)) is None
    if suffix == ".tif":  # the record is the only description: no shape JSON beside it
        with tifffile.TiffFile(path) as tif:
            assert tif.pages[0].description == made_by.text()


def test_records_of_other_tools_and_broken_files_are_no_records(tmp_path):
    info = PngInfo()
    info.add_text(RECORD_KEY, "drawn in GIMP")
    Image.new("L", (8, 8)).save(tmp_path / "other.png", pnginfo=info)
    info = PngInfo()
    info.add_text(RECORD_KEY, '{"made_by": "napari-focus", "task": 3}')
    Image.new("L", (8, 8)).save(tmp_path / "odd.png", pnginfo=info)
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00")
    tifffile.imwrite(tmp_path / "described.tif", np.zeros((8, 8), np.uint8), description="x")
    tifffile.imwrite(tmp_path / "whole.tif", np.zeros((8, 8), np.uint8))
    (tmp_path / "cut.tif").write_bytes((tmp_path / "whole.tif").read_bytes()[:8])
    for name in ("other.png", "odd.png", "cut.png", "described.tif", "missing.png", "cut.tif"):
        assert read_made_by(tmp_path / name) is None, name
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.tif").write_text("not a TIFF")
    whole = write_mask(tmp_path / "half.tif", np.eye(64, dtype=bool), record="x").read_bytes()
    (tmp_path / "half.tif").write_bytes(whole[: len(whole) // 2])  # pixels past its end
    names = ("other.png", "cut.png", "cut.tif", "empty.png", "notes.tif", "half.tif")
    found = check_existing_masks([tmp_path / n for n in names], MadeBy("sod", "a.pth"))
    assert found.other_weights == []
    assert found.unreadable == {  # the drawn one is a mask; these are no image at all
        tmp_path / "cut.png": "is not a readable image (damaged or cut)",
        tmp_path / "cut.tif": "is not a readable image (damaged or cut)",
        tmp_path / "empty.png": "is empty (0 bytes)",
        tmp_path / "notes.tif": "is not a readable image (damaged or cut)",
        tmp_path / "half.tif": "is not a readable image (damaged or cut)",
    }


def test_an_empty_or_cut_file_at_a_masks_name_is_no_mask_and_is_never_replaced(
    photos, weights, tmp_path
):
    """A rerun into a folder where a mask's name holds an empty or cut file (a copy that
    ran out of space, a sync client's placeholder) fails that image, saying what to do,
    instead of counting it done; the file stays, as the user's files do."""
    out = tmp_path / "masks"
    assert _predict(photos, out, weights, "sod")[0] == 0
    (out / "p0.png").write_bytes(b"")
    cut = (out / "p1.png").read_bytes()
    (out / "p1.png").write_bytes(cut[: len(cut) // 2])  # its header whole, pixels half
    before = _bytes(out)
    code, err = _predict(photos, out, weights, "sod")
    assert code == 1, err
    assert "0 written, 1 skipped (already exist; --overwrite to redo), 2 failed" in err
    assert (f"failed: {photos / 'p0.png'}: p0.png in --out is empty (0 bytes): delete it, "
            "then run again to predict this image") in err  # fmt: skip
    assert f"failed: {photos / 'p1.png'}: p1.png in --out is not a readable image" in err
    assert _bytes(out) == before
    (out / "p0.png").unlink()
    code, err = _predict(photos, out, weights, "sod")
    assert code == 1 and "1 written, 1 skipped" in err and "p0.png in --out" not in err
    assert read_mask_file(out / "p0.png").shape == (56, 72)

    maps = tmp_path / "maps"  # a kept mask beside a probability map still to write
    assert _predict(photos, maps, weights, "sod")[0] == 0
    (maps / "p2.png").write_bytes(b"")
    code, err = _predict(photos, maps, weights, "sod", "--probability")
    assert code == 1 and "2 written" in err and "p2.png in --out is empty" in err, err
    assert not (maps / "p2_probability.png").exists()

    from napari_focus.distributed import predict_dataset  # the Ray engine, never started

    run = predict_dataset(photos, out, task="sod", weights=trained_for(weights, "sod"),
                          address="127.0.0.1:1")  # fmt: skip
    assert {Path(r["source"]).name: (r["status"], r["error"]) for r in run.rows} == {
        "p0.png": ("skipped", ""),
        "p1.png": ("failed", "p1.png in --out is not a readable image (damaged or cut): "
                   "delete it, then run again to predict this image"),
        "p2.png": ("skipped", ""),
    }  # fmt: skip
    assert (out / "p1.png").read_bytes() == before["p1.png"]


def test_predict_refuses_to_keep_the_masks_of_another_task(photos, weights, tmp_path):
    out = tmp_path / "masks"
    assert _predict(photos, out, weights, "sod")[0] == 0
    assert {read_made_by(p) for p in out.iterdir()} == {MadeBy("sod", "tiny.safetensors")}
    before = _bytes(out)
    code, err = _predict(photos, out, weights, "cod")  # the same --out, another task
    assert code == 2, err
    assert (f"napari-focus: --out {out} holds masks of another task: p0.png, made for task "
            "sod (tiny.safetensors) (and 2 more); this run is --task cod (tiny.safetensors), "
            "and it would keep them as if they were its own: choose another --out, or add "
            "--overwrite to redo them") in err  # fmt: skip
    assert _bytes(out) == before
    # the masks kept beside a probability map still to write count as kept too
    code, err = _predict(photos, out, weights, "cod", "--probability")
    assert code == 2 and "holds masks of another task" in err and _bytes(out) == before

    code, err = _predict(photos, out, weights, "cod", "--overwrite")
    assert code == 0, err
    assert {read_made_by(p) for p in out.iterdir()} == {MadeBy("cod", "tiny.safetensors")}

    maps = tmp_path / "maps"  # only another task's probability maps, kept beside new masks
    assert _predict(photos, maps, weights, "sod", "--probability")[0] == 0
    for mask in maps.glob("p?.png"):
        mask.unlink()
    code, err = _predict(photos, maps, weights, "cod", "--probability")
    assert code == 2 and "p0_probability.png, made for task sod" in err, err


def test_predict_keeps_masks_of_other_weights_and_says_so(photos, weights, tmp_path):
    out = tmp_path / "masks"
    assert _predict(photos, out, weights, "sod")[0] == 0
    tuned = shutil.copy(weights, tmp_path / "tuned.safetensors")
    (out / "p1.png").unlink()
    Image.fromarray(np.full((56, 72), 255, np.uint8)).save(out / "p2.png")  # drawn by hand
    hand_made = (out / "p2.png").read_bytes()
    code, err = _predict(photos, out, tuned, "sod")
    assert code == 0, err
    assert ("napari-focus: note: p0.png in --out was predicted with other weights "
            "(tiny.safetensors); they are kept, as every existing mask is: add --overwrite "
            "to redo them with tuned.safetensors") in err  # fmt: skip
    assert "1 written, 2 skipped" in err
    assert read_made_by(out / "p1.png") == MadeBy("sod", "tuned.safetensors")
    assert (out / "p2.png").read_bytes() == hand_made  # no record: skipped, no word
    code, err = _predict(photos, out, tuned, "cod")  # p0 and p1 are sod's; p2 is not judged
    assert code == 2 and "p0.png, made for task sod (tiny.safetensors) (and 1 more)" in err


def test_the_ray_engine_refuses_another_tasks_masks_before_ray_starts(photos, weights, tmp_path):
    from napari_focus.distributed import predict_dataset

    out = tmp_path / "masks"
    out.mkdir()
    record = MadeBy("sod", "tiny.safetensors").text()
    write_mask(out / "p0.png", np.ones((56, 72), np.uint8), record=record)
    with pytest.raises(MasksOfAnotherTask, match=r"p0\.png, made for task sod") as caught:
        predict_dataset(photos, out, task="cod", weights=trained_for(weights, "cod"),
                        address="127.0.0.1:1")  # fmt: skip
    assert caught.value.run == MadeBy("cod", "tiny.safetensors")
    assert sorted(p.name for p in out.iterdir()) == ["p0.png"]  # no manifest, no journal


def test_export_names_masks_predicted_for_another_task(photos, tmp_path):
    """Masks of a cod run exported into the sod split: exported as given, with a note;
    the provenance line names the weights the mask records."""
    from napari_focus.datasets import read_records

    masks = tmp_path / "masks"
    masks.mkdir()
    record = MadeBy("cod", "focus_large_cod.pth").text()
    for image in sorted(photos.iterdir()):
        write_mask(masks / image.name, np.ones((56, 72), np.uint8), record=record)
    code, err = run_cli("export", photos, masks, "--root", tmp_path / "ds", "--layout",
                        "duts-tr")  # fmt: skip
    assert code == 0, err
    assert (f"napari-focus: note: {masks / 'p0.png'} and 2 more were predicted for task cod "
            "(focus_large_cod.pth), and the duts-tr split is for sod: check MASKS_DIR") in err
    records = read_records(tmp_path / "ds")
    assert [r["weights_id"] for r in records] == ["focus_large_cod.pth"] * 3
