"""Devices are checked before any download or file read, with the reason in the user's words."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch

from napari_focus import FocusPredictor, checkpoints
from napari_focus.cli import main
from napari_focus.devices import DeviceError, check_device_name, resolve_device

cpu_only_torch = pytest.mark.skipif(
    torch.version.cuda is not None, reason="needs a CPU-only PyTorch build"
)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every checkpoint read and hub download instead of doing it."""
    calls: list[str] = []

    def refuse(what: str):
        def record(*args, **kwargs):
            calls.append(what)
            raise AssertionError(f"{what} was called before the device was checked")

        return record

    import huggingface_hub

    monkeypatch.setattr(checkpoints, "_read_pickle", refuse("read .pth"))
    monkeypatch.setattr(checkpoints, "_read_safetensors", refuse("read .safetensors"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse("download"))
    return calls


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("auto", "auto"),
        ("CPU", "cpu"),
        ("cpu:0", "cpu"),
        ("cuda", "cuda"),
        ("cuda:1", "cuda:1"),
        ("gpu", "cuda"),
        ("GPU:2", "cuda:2"),
        (" mps ", "mps"),
    ],
)
def test_device_names(given: str, expected: str) -> None:
    assert check_device_name(given) == expected


@pytest.mark.parametrize("given", ["tpu", "cuda:", "cuda:-1", "auto:0", "cuda 1", "", "gpu0"])
def test_misspelled_devices_are_refused(given: str) -> None:
    with pytest.raises(DeviceError, match="unknown device"):
        check_device_name(given)


@cpu_only_torch
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "gpu", torch.device("cuda")])
def test_cpu_only_torch_is_named(device, reads, tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(b"never read")
    with pytest.raises(DeviceError, match="CPU-only build") as info:
        FocusPredictor.from_checkpoint(path, device=device)
    assert torch.__version__ in str(info.value)
    with pytest.raises(DeviceError, match="CPU-only build"):
        FocusPredictor.from_pretrained("sod", device=device)
    assert reads == []


@cpu_only_torch
def test_cli_cuda_on_cpu_only_torch_fails_before_reading(reads, tmp_path: Path) -> None:
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"never read")
    image = tmp_path / "a.png"
    image.write_bytes(b"never read either")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["predict", str(image), "--task", "sod", "--weights", str(weights),
                     "--device", "cuda", "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 2
    message = err.getvalue()
    assert "--device cuda:" in message and "CPU-only build" in message
    assert "Use --device cpu." in message and "device=" not in message
    assert reads == [] and not (tmp_path / "out").exists()


def test_cuda_build_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="no CUDA GPU is visible"):
        resolve_device("gpu")


def test_gpu_alias_and_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("gpu") == torch.device("cuda")
    assert resolve_device("gpu:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match=r"2 CUDA GPU\(s\), numbered cuda:0 to cuda:1") as info:
        resolve_device("cuda:2")
    assert info.value.instead == "cuda:0"
    assert "Use --device cuda:0." in info.value.cli_message()


def test_auto_and_cpu_always_work() -> None:
    assert resolve_device(None).type in ("cpu", "cuda", "mps")
    assert resolve_device("auto") == resolve_device(None)
    assert resolve_device("cpu") == torch.device("cpu")


def test_cli_misspelled_device_is_a_usage_error(tmp_path: Path) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        main(["predict", str(tmp_path), "--task", "sod", "--device", "tpu"])
    assert exit_.value.code == 2
    assert "argument --device: unknown device 'tpu'; choose one of auto, cpu" in err.getvalue()


def test_a_model_let_go_on_a_gpu_hands_its_cached_memory_back(monkeypatch):
    import torch

    from napari_focus.devices import release_cached_memory

    emptied: list[bool] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    release_cached_memory(torch.device("cpu"))
    release_cached_memory(None)
    assert emptied == []
    release_cached_memory(torch.device("cuda", 0))
    assert emptied == [True]
