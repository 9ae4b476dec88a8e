"""Which device the model runs on: parse, validate and explain, before any work is done.

:func:`check_device_name` checks the spelling without importing torch (the CLI
calls it while parsing); :func:`resolve_device` also checks that this machine
and this PyTorch build can use the device, and names the reason when not: a
CPU-only PyTorch, no visible GPU, a GPU index that does not exist, no MPS.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, gpu (same as cuda), gpu:N or mps"
_PATTERN = re.compile(r"^(auto|cpu|mps|cuda|gpu)(?::(\d+))?$")


class DeviceError(ValueError):
    """A device that is misspelled or that this machine or PyTorch build cannot use.

    ``requested`` is what was asked for, ``reason`` why it cannot be used and
    ``instead`` a device name to use instead (or ``None``).
    """

    def __init__(self, requested: object, reason: str, instead: str | None = "cpu") -> None:
        self.requested = str(requested)
        self.reason = reason
        self.instead = instead
        advice = f"; use the device {instead!r} instead" if instead else ""
        super().__init__(f"device {self.requested!r}: {reason}{advice}")

    def __reduce__(self) -> tuple:  # survives pickling (Ray workers, training processes)
        return (type(self), (self.requested, self.reason, self.instead))

    def cli_message(self) -> str:
        """The same in the command line's words."""
        advice = f" Use --device {self.instead}." if self.instead else ""
        return f"--device {self.requested}: {self.reason}.{advice}"


def check_device_name(device: str) -> str:
    """Normalise a device name (``"GPU:1"`` -> ``"cuda:1"``); no torch import."""
    name = str(device).strip().lower()
    match = _PATTERN.match(name)
    if match is None or (match.group(2) is not None and match.group(1) == "auto"):
        raise DeviceError(
            device, f"unknown device {str(device)!r}; choose one of {DEVICE_CHOICES}", None
        )
    kind = "cuda" if match.group(1) == "gpu" else match.group(1)
    if kind == "cpu" or match.group(2) is None:
        return kind
    return f"{kind}:{int(match.group(2))}"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` picks CUDA, then MPS, then CPU; anything else must be usable here.

    Raises:
        DeviceError: saying why the device cannot be used (and what to do).
    """
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    name = "auto" if device is None else check_device_name(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    resolved = torch.device(name)
    if resolved.type == "cuda":
        _check_cuda(device, resolved)
    elif resolved.type == "mps" and not _mps_available():
        built = getattr(torch.backends, "mps", None) and torch.backends.mps.is_built()
        why = (
            "this machine has no usable Apple GPU (MPS needs macOS on Apple silicon)"
            if built
            else f"this PyTorch build ({torch.__version__}) has no MPS support"
        )
        raise DeviceError(device, why)
    return resolved


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def _check_cuda(requested: object, resolved: torch.device) -> None:
    import torch

    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        raise DeviceError(
            requested,
            f"CUDA is needed, but the installed PyTorch ({torch.__version__}) is a CPU-only "
            "build (install a CUDA build of PyTorch: https://pytorch.org/get-started/locally/)",
        )
    if not torch.cuda.is_available():
        raise DeviceError(
            requested,
            f"PyTorch {torch.__version__} supports CUDA, but no CUDA GPU is visible "
            "(no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides the GPUs)",
        )
    count = torch.cuda.device_count()
    if resolved.index is not None and resolved.index >= count:
        raise DeviceError(
            requested,
            f"this machine has {count} CUDA GPU(s), numbered cuda:0 to cuda:{count - 1}",
            "cuda:0",
        )


def out_of_memory(error: BaseException) -> str | None:
    """``"gpu"`` or ``"host"`` when ``error`` says the device or the computer ran out of
    memory (torch's own text for a GPU is a page of allocator statistics), else None."""
    if isinstance(error, MemoryError):
        return "host"
    import torch

    if isinstance(error, torch.OutOfMemoryError) or str(error).startswith(
        ("CUDA out of memory", "MPS backend out of memory")
    ):
        return "gpu"
    return None


def memory_failure_text(error: BaseException) -> str | None:
    """An image that ran out of memory (see :func:`out_of_memory`) in words that fit every
    interface, or None for any other failure."""
    memory = out_of_memory(error)
    if memory == "gpu":
        return (
            "the GPU ran out of memory for this image, even alone in its batch: the large "
            "model, float16 precision or the CPU needs less"
        )
    if memory == "host":
        return (
            "the computer ran out of memory for this image: close other programs, or use "
            "the large model"
        )
    return None


# images per forward when ``batch_size`` is not given: on a CPU a single image
# already fills the cores; on a GPU a few images of one size keep it busy
DEFAULT_BATCH = {"cpu": 1, "cuda": 4, "mps": 2}
# GPUs with this much memory take 8: on an H100, FOCUS-L ran 29.5 images/s at batch 8
# against 23.8 at 4 in one run, and FOCUS-G at batch 8 peaked at 15.3 GiB (float32;
# docs/benchmarks.md)
LARGE_GPU_GIB, LARGE_GPU_BATCH = 24, 8


def release_cached_memory(device: torch.device | None) -> None:
    """After a model on ``device`` was let go: on a GPU, collect what reference cycles
    still hold of it and hand PyTorch's cached blocks back (GPU memory is scarce; the
    collection costs about 0.3 s, worth it there and nowhere else)."""
    if device is None or device.type != "cuda":
        return
    import gc

    import torch

    gc.collect()
    torch.cuda.empty_cache()


def default_batch_size(device: torch.device) -> int:
    """Images per forward on ``device`` when the caller names no batch size."""
    if device.type == "cuda":
        import torch

        memory = torch.cuda.get_device_properties(device).total_memory
        if memory >= LARGE_GPU_GIB * 2**30:
            return LARGE_GPU_BATCH
    return DEFAULT_BATCH.get(device.type, 1)
