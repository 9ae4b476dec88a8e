"""Where `napari-focus predict` writes: one output planner for both engines. No output
may be an input image (refused before the model loads), every mask and probability map
belongs to one input, and the clean-up of `--out` leaves other machines' files alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from test_cli import run_cli

from napari_focus import FocusPredictor
from napari_focus.atomic import TEMP_PREFIX, host_id
from napari_focus.distributed import inputs as distributed_inputs
from napari_focus.input_files import collect_inputs
from napari_focus.io import read_image, write_mask, write_probability
from napari_focus.mask_provenance import MadeBy
from napari_focus.prediction_files import OutputReplacesInput, plan_outputs


@pytest.fixture(scope="module")
def weights(tiny_mlp, tmp_path_factory) -> Path:
    arch, state = tiny_mlp
    predictor = FocusPredictor.from_state_dict(state, "sod", architecture=arch, device="cpu")
    return predictor.save_inference_checkpoint(tmp_path_factory.mktemp("w") / "tiny.safetensors")


@pytest.fixture
def photos(focus_reference, tmp_path) -> Path:
    """A user's folder: two photos (PNG, JPEG) and a note."""
    folder = tmp_path / "photos"
    folder.mkdir()
    source = Image.open(focus_reference / "input.png").convert("RGB")
    source.resize((80, 64), Image.BILINEAR).save(folder / "photo.png")
    source.resize((64, 64), Image.BILINEAR).save(folder / "beach.jpg", quality=90)
    (folder / "notes.txt").write_text("mine")
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("flags", [[], ["--overwrite"], ["--probability"]])
def test_out_the_input_folder_is_refused_before_the_model_loads(photos, tmp_path, flags):
    before = _snapshot(photos)
    never_read = tmp_path / "never_read.safetensors"  # loading would fail differently
    code, err = run_cli(
        "predict", photos, "--task", "sod", "--weights", never_read, "--out", photos,
        "--device", "cpu", "--quiet", *flags,
    )  # fmt: skip
    assert code == 2, err
    assert f"--out {photos}:" in err and "choose another --out" in err
    assert f"would replace the input image {photos}" in err
    assert "cannot load the model" not in err and "skipped" not in err
    assert _snapshot(photos) == before  # nothing written, no temporary file left


def test_out_through_a_link_to_the_inputs_is_refused(photos, tmp_path):
    linked = tmp_path / "masks"
    linked.symlink_to(photos, target_is_directory=True)
    code, err = run_cli(
        "predict", photos / "photo.png", "--task", "sod", "--weights", tmp_path / "unread",
        "--out", linked, "--device", "cpu", "--quiet", "--overwrite",
    )  # fmt: skip
    assert code == 2 and "the mask of photo.png would replace the input image" in err, err


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_an_output_that_is_an_input_under_another_name_is_refused(photos, tmp_path, link):
    out = tmp_path / "masks"
    out.mkdir()
    if link == "hard":
        os.link(photos / "photo.png", out / "photo.png")
    else:
        (out / "photo.png").symlink_to(photos / "photo.png")
    with pytest.raises(OutputReplacesInput) as caught:
        plan_outputs([str(photos / "photo.png")], out, overwrite=True)
    assert caught.value.collisions == [(str(photos / "photo.png"), "mask", photos / "photo.png")]


def test_a_probability_map_may_not_replace_another_input(photos, tmp_path):
    shutil.copy(photos / "photo.png", photos / "beach_probability.png")
    sources = [str(p) for p in collect_inputs([str(photos)])[0]]
    for planner in (plan_outputs, distributed_inputs.plan_outputs):  # same rule twice
        with pytest.raises(OutputReplacesInput, match="choose another output folder") as caught:
            planner(sources, photos, probability=True)
        assert ("probability map", photos / "beach_probability.png") in {
            (kind, image) for source, kind, image in caught.value.collisions
        }
        assert (photos / "beach.png").exists() is False  # planning writes nothing


def test_a_file_uri_into_its_own_folder_is_refused(photos):
    uri = (photos / "photo.png").as_uri()
    with pytest.raises(OutputReplacesInput, match=r"the mask of photo\.png"):
        distributed_inputs.plan_outputs([uri], photos)


def test_every_output_path_is_claimed_once(tmp_path):
    out = tmp_path / "out"
    sources = ["/data/a.png", "/data/a_probability.png", "/other/a.jpg", "s3://b/a_probability.tif"]
    plan = plan_outputs(sources, out, probability=True)
    assert [(e.mask, e.probability) for e in plan.todo] == [
        (out / "a.png", out / "a_probability.png")
    ]
    reasons = {entry.source: reason for entry, reason in plan.clashes}
    assert reasons == {
        "/data/a_probability.png": "its mask a_probability.png would be the probability map "
        "of /data/a.png; rename one",
        "/other/a.jpg": "same output name as /data/a.png; rename one, or give each folder "
        "its own --out",
        "s3://b/a_probability.tif": "its mask a_probability.png would be the probability map "
        "of /data/a.png; rename one",
    }
    first = plan_outputs(list(reversed(sources[:2])), out, probability=True)
    [(clash, reason)] = first.clashes  # the first input keeps its names
    assert clash.source == "/data/a.png" and "its probability map a_probability.png" in reason
    assert not plan_outputs(sources[:2], out).clashes  # no probability maps: no clash

    ray_plan = distributed_inputs.plan_outputs(sources, out, probability=True)
    assert [j.mask for j in ray_plan.todo] == [str(e.mask) for e in plan.todo]
    assert [r for _, r in ray_plan.clashes] == [r for _, r in plan.clashes]


def test_a_mask_never_lands_on_another_images_probability_map(photos, weights, tmp_path):
    (photos / "photo.png").rename(photos / "beach_probability.png")
    out = tmp_path / "masks"
    args = ["predict", photos, "--task", "sod", "--weights", weights, "--out", out,
            "--probability", "--device", "cpu", "--quiet"]  # fmt: skip
    code, err = run_cli(*args)
    assert code == 1, err
    assert "1 written" in err and "1 failed" in err
    assert (
        f"failed: {photos / 'beach_probability.png'}: its mask beach_probability.png would "
        f"be the probability map of {photos / 'beach.jpg'}; rename one"
    ) in err
    predictor = FocusPredictor.from_checkpoint(weights, device="cpu")
    expected = tmp_path / "expected"
    result = predictor.predict(read_image(photos / "beach.jpg"))
    record = MadeBy.of_run("sod", None, weights).text()  # as predict records it
    write_mask(expected / "beach.png", result.mask, record=record)
    write_probability(expected / "beach_probability.png", result.probability, record=record)
    for name in ("beach.png", "beach_probability.png"):
        assert (out / name).read_bytes() == (expected / name).read_bytes(), name
    assert not (out / "beach_probability_probability.png").exists()

    code, err = run_cli(*args, "--overwrite")  # the clash stays a clash
    assert code == 1 and "1 written" in err and "would be the probability map" in err
    assert (out / "beach_probability.png").read_bytes() == (
        expected / "beach_probability.png"
    ).read_bytes()


def test_the_clean_up_of_out_leaves_other_machines_files(photos, weights, tmp_path):
    out = tmp_path / "masks"
    out.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(gone.stdout)  # ended here; a node sharing the folder may run that id
    other = "abcdefgh" if host_id() != "abcdefgh" else "bcdefghi"
    in_flight = out / f"{TEMP_PREFIX}{other}-{pid}-0123abcd-beach.png"
    killed_here = out / f"{TEMP_PREFIX}{host_id()}-{pid}-0123abcd-beach.png"
    for path in (in_flight, killed_here):
        path.write_bytes(b"half")
    code, err = run_cli(
        "predict", photos / "photo.png", "--task", "sod", "--weights", weights,
        "--out", out, "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert in_flight.read_bytes() == b"half" and not killed_here.exists()
    assert (out / "photo.png").is_file()


def test_the_ray_engine_refuses_out_the_input_folder_before_ray_starts(photos, weights):
    ray = pytest.importorskip("ray")
    before = _snapshot(photos)
    code, err = run_cli(
        "predict", photos, "--task", "sod", "--weights", weights, "--out", photos,
        "--engine", "ray", "--device", "cpu", "--quiet", "--overwrite",
    )  # fmt: skip
    assert code == 2, err
    assert f"--out {photos}: the mask of" in err and "choose another --out" in err
    assert not ray.is_initialized()
    assert _snapshot(photos) == before


def test_the_library_planner_does_not_import_the_command_line():
    code = (
        "import sys, napari_focus.distributed.inputs; "
        "print(sorted(m for m in sys.modules if m.startswith('napari_focus.cli')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
