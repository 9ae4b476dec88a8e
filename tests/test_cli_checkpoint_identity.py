"""Checkpoints that are not what the flags say: another task than --task (a warning
naming both tasks and the flag), another size than --size (one line naming the size
the file holds and the --size to give), built from the official key manifest."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from test_cli import run_cli

from napari_focus import FocusPredictor
from napari_focus.checkpoint_identity import (
    CheckpointSizeMismatch,
    TaskMismatchWarning,
    recorded_task,
)


def official_shaped(focus_reference: Path, size: str) -> dict[str, torch.Tensor]:
    """Every key of the official ``size`` checkpoint (training-only keys included) with
    its manifest shape; the values share one element (a file of a few hundred kB)."""
    manifest = json.loads((focus_reference / "state_dict_manifest.json").read_text())[size]
    one = torch.zeros(1)
    return {
        key: torch.zeros(shape, dtype=torch.long) if key.endswith("num_batches_tracked")
        else one.expand(*shape) if shape else torch.zeros(())
        for key, shape in manifest["keys"].items()
    }  # fmt: skip


@pytest.fixture(scope="module")
def official_files(focus_reference, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("official")
    files = {}
    for size in ("large", "giant"):
        path = folder / f"focus_{size}_sod.pth"
        state = official_shaped(focus_reference, size)
        torch.save({"model": state, "iteration": 39999, "__author__": "geshang"}, path)
        files[size] = path
    return files


@pytest.fixture(scope="module")
def tiny_files(tiny_mlp, tmp_path_factory) -> dict[str, Path]:
    arch, state = tiny_mlp
    folder = tmp_path_factory.mktemp("tiny")
    predictor = FocusPredictor.from_state_dict(state, "sod", architecture=arch, device="cpu")
    recorded = predictor.save_inference_checkpoint(folder / "tuned.safetensors")
    bare = folder / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, bare)
    official_name = folder / "focus_large_fd.pth"
    torch.save({"model": state}, official_name)
    return {"recorded": recorded, "bare": bare, "official_name": official_name}


@pytest.fixture
def images(focus_reference, tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.open(focus_reference / "input.png").convert("RGB").resize((64, 48)).save(
        folder / "photo.png"
    )
    return folder


def _predict(images: Path, out: Path, *flags) -> tuple[int, str]:
    return run_cli("predict", images, "--out", out, "--device", "cpu", "--quiet", *flags)


@pytest.mark.parametrize(("file_size", "asked"), [("large", "giant"), ("giant", "large")])
def test_an_official_file_of_the_other_size_says_which_size_it_holds(
    official_files, images, tmp_path, file_size, asked
):
    path = official_files[file_size]
    code, err = _predict(images, tmp_path / "out", "--task", "sod", "--size", asked,
                         "--weights", path)  # fmt: skip
    assert code == 2
    names = {"large": "FOCUS-L (large)", "giant": "FOCUS-G (giant)"}
    assert f"{path} holds {names[file_size]}, by its tensor shapes" in err
    assert f"not the {names[asked]} that --size {asked} asks for" in err
    assert f"Use --size {file_size}, or leave --size out" in err
    assert "missing keys" not in err and "unexpected keys" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_official_shaped_files_match_their_own_size(official_files):
    """Read back as the size they are, the manifest-shaped files pass every key check:
    the refusal above is about the size, not about the files."""
    from napari_focus.checkpoint_fit import check_state_dict, drop_training_keys
    from napari_focus.checkpoints import infer_size, read_checkpoint
    from napari_focus.model import build_model

    for size, path in official_files.items():
        state = drop_training_keys(read_checkpoint(path)[0])
        assert infer_size(state) == size
        with torch.device("meta"):
            expected = build_model(size).state_dict()
        check_state_dict(expected, state, str(path))


def test_a_tiny_file_given_size_giant_says_it_is_custom(tiny_files, images, tmp_path):
    code, err = _predict(images, tmp_path / "out", "--task", "sod", "--size", "giant",
                         "--weights", tiny_files["recorded"])  # fmt: skip
    assert code == 2
    assert "holds a custom architecture, as its metadata records (ViT width 64, 4 blocks" in err
    assert "Leave --size out to use the architecture the file records" in err
    assert "missing keys" not in err

    code, err = _predict(images, tmp_path / "out", "--task", "sod", "--size", "large",
                         "--weights", tiny_files["bare"])  # fmt: skip
    assert code == 2
    assert "holds a custom architecture, by its tensor shapes (ViT width 64" in err
    assert "does not record its architecture, so the command line cannot build" in err

    with pytest.raises(CheckpointSizeMismatch) as caught:  # the Python API, same error
        FocusPredictor.from_checkpoint(tiny_files["recorded"], architecture="giant")
    assert caught.value.found == "custom" and caught.value.wanted == "giant"
    assert caught.value.recorded


def test_task_of_a_file_is_read_from_metadata_or_official_name(tiny_files, tmp_path):
    assert recorded_task(tiny_files["recorded"]) == ("sod", "as its metadata records")
    assert recorded_task(tiny_files["official_name"]) == ("fd", "as its official file name says")
    assert recorded_task(tiny_files["bare"]) is None
    assert recorded_task(tmp_path / "focus_large_cod_tuned.safetensors") == (
        "cod", "as its official file name says",
    )  # fmt: skip
    assert recorded_task(tmp_path / "focus_medium_cod.pth") is None


def test_weights_of_another_task_warn_naming_both_tasks_and_the_flag(
    tiny_files, images, tmp_path
):
    code, err = _predict(images, tmp_path / "out", "--task", "cod", "--weights",
                         tiny_files["recorded"])  # fmt: skip
    assert code == 0, err
    warning = [line for line in err.splitlines() if "warning" in line]
    assert warning == [
        f"napari-focus: warning: --task cod (camouflaged objects), but "
        f"{tiny_files['recorded']} holds sod weights (salient objects, as its metadata "
        "records): the masks will show salient objects, not camouflaged objects. Use "
        "--task sod if that is what you want, or give --weights a cod checkpoint (or leave "
        "--weights out to download the official cod model)"
    ]
    assert (tmp_path / "out" / "photo.png").is_file()
    assert "TaskMismatchWarning" not in err  # said once, in the command line's words

    code, err = _predict(images, tmp_path / "same", "--task", "sod", "--weights",
                         tiny_files["recorded"])  # fmt: skip
    assert code == 0 and "warning" not in err

    code, err = run_cli("rank", images, "--task", "dbd", "--weights", tiny_files["recorded"],
                        "--device", "cpu", "--out", tmp_path / "rank.csv")  # fmt: skip
    assert "warning: --task dbd (defocus blur), but" in err and "Use --task sod" in err


def test_the_python_api_warns_once_with_its_own_words(tiny_files):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor = FocusPredictor.from_checkpoint(tiny_files["recorded"], "fd", device="cpu")
        FocusPredictor.from_checkpoint(tiny_files["recorded"], device="cpu")  # no task given
    assert (predictor.task, predictor.weights_task) == ("fd", "sod")
    [warning] = [w for w in caught if issubclass(w.category, TaskMismatchWarning)]
    message = str(warning.message)
    assert message.startswith("task='fd' (forgeries), but ") and "Pass task='sod'" in message
    assert "--task" not in message


def test_an_unknown_size_is_named_as_such_whatever_the_file_records(tiny_files):
    with pytest.raises(ValueError, match="unknown model size 'huge'; expected one of large"):
        FocusPredictor.from_checkpoint(tiny_files["recorded"], architecture="huge")


def test_a_copy_saved_keeps_the_task_its_weights_were_trained_for(tiny_files, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TaskMismatchWarning)
        predictor = FocusPredictor.from_checkpoint(tiny_files["recorded"], "cod", device="cpu")
    copy = predictor.save_inference_checkpoint(tmp_path / "copy.safetensors")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = FocusPredictor.from_checkpoint(copy, "cod", device="cpu")
    assert again.weights_task == "sod"
    assert [w for w in caught if issubclass(w.category, TaskMismatchWarning)]  # still said


@pytest.mark.parametrize("classes", [1, 3])
def test_a_head_of_another_class_count_is_refused_for_every_task(
    tiny_mlp, tmp_path, images, classes
):
    """The five tasks share the 2-class head the masks are read from; a file whose head
    has another class count loads for none of them."""
    from napari_focus import build_model
    from napari_focus.checkpoints import save_inference_checkpoint

    arch, _ = tiny_mlp
    odd = {**arch, "num_classes": classes}
    torch.manual_seed(0)
    path = save_inference_checkpoint(
        build_model(odd).state_dict(), tmp_path / "odd.safetensors", architecture=odd,
        task="sod",
    )  # fmt: skip
    code, err = _predict(images, tmp_path / "out", "--task", "sod", "--weights", path)
    assert code == 2
    assert f"its head predicts {classes} class(es), but every FOCUS task" in err
    assert "no FOCUS checkpoint for any task" in err
