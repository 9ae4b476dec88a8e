"""Broken and hostile checkpoint files: truncated, garbage, missing, not a state dict, or
a pickle that would run code. Each is refused with an error that says what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from napari_focus import FocusPredictor
from napari_focus.checkpoints import (
    CheckpointError,
    drop_training_keys,
    read_checkpoint,
    save_inference_checkpoint,
)


@pytest.fixture(scope="module")
def tiny(tiny_mlp):
    return tiny_mlp


@pytest.fixture(scope="module")
def detectron2_pth(tiny, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("d2") / "focus_tiny_sod.pth"
    torch.save({"model": tiny[1], "iteration": 5}, path)
    return path


def test_truncated_pth_is_reported(detectron2_pth, tmp_path):
    data = detectron2_pth.read_bytes()
    for fraction in (0.5, 0.999):
        path = tmp_path / f"truncated_{fraction}.pth"
        path.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            FocusPredictor.from_checkpoint(path, architecture="large", device="cpu")


def test_truncated_legacy_pickle_is_reported(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"model": {"a": torch.ones(1000)}}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(path)


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"this is not a checkpoint at all" * 10, r"starts with b'this is not ', not a \.pth"),
        (b"notes on the model\n", r"it starts with b'notes on the', not a \.pth file \(zip"),
        (
            b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 1234\n",
            r"it is a Git LFS pointer \(run git lfs pull\), not a \.pth file",
        ),
        (
            b"\x89PNG\r\n\x1a\n" + bytes(40),
            r"garbage.pth is not a PyTorch checkpoint: it is a PNG image, not a \.pth file "
            r"\(zip or pickle\); choose the FOCUS weights file",
        ),
        (b"", r"is empty \(0 bytes\), not a PyTorch checkpoint"),
    ],
)
def test_garbage_pth_is_reported(tmp_path, content, said):
    path = tmp_path / "garbage.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=said):
        read_checkpoint(path)


def test_truncated_safetensors_is_reported(tiny, tmp_path):
    arch, state = tiny
    good = tmp_path / "good.safetensors"
    save_inference_checkpoint(drop_training_keys(state), good, architecture=arch, task="sod")
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 6):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            FocusPredictor.from_checkpoint(path, device="cpu")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        FocusPredictor.from_checkpoint(tmp_path / "nope.pth", device="cpu")


def test_non_state_dict_contents_are_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        read_checkpoint(path)
    path = tmp_path / "nontensor.pth"
    torch.save({"model": {"a": torch.zeros(1), "b": 3}}, path)
    with pytest.raises(CheckpointError, match="'b'"):
        read_checkpoint(path)


class _CreatesFileWhenUnpickled:
    """Unpickling this calls ``open(path, "w")``: code execution with a visible side effect."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickle_that_would_run_code_is_refused(tmp_path, zip_format):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"model": {"a": torch.zeros(2), "b": _CreatesFileWhenUnpickled(marker)}}
    torch.save(payload, path, _use_new_zipfile_serialization=zip_format)

    # control: an unrestricted unpickler really would run the payload
    control_marker = tmp_path / "control"
    control = tmp_path / "control.pth"
    payload["model"]["b"] = _CreatesFileWhenUnpickled(control_marker)
    torch.save(payload, control, _use_new_zipfile_serialization=zip_format)
    torch.load(control, weights_only=False)
    assert control_marker.exists()

    with pytest.raises(CheckpointError) as info:
        FocusPredictor.from_checkpoint(path, architecture="large", device="cpu")
    assert "could run code" in str(info.value)
    assert not marker.exists(), "loading the checkpoint executed code from the pickle"
