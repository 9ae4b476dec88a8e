"""Reading official FOCUS checkpoints, and writing compact inference checkpoints (the
hub download is :mod:`napari_focus.checkpoint_hub`)."""

from __future__ import annotations

import json
import os
import pickle
import re
import threading
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .presets import SIZES, TASKS, architecture_preset

# What the official checkpoints carry for training only: the CLIP refiner, its
# projection heads and the loss module's class-weight buffer.
TRAINING_ONLY_PREFIXES = (
    "sem_seg_head.predictor.clip_refiner.",
    "sem_seg_head.predictor.text_embed.",
    "sem_seg_head.predictor.image_embed.",
    "criterion.",
)
# torch.nn.DataParallel / DistributedDataParallel prefix every key with this
PARALLEL_PREFIX = "module."
METADATA_FORMAT = "napari-focus/inference-v1"
SIZE_NAMES = {"large": "FOCUS-L", "giant": "FOCUS-G"}
_LIST_LIMIT = 12


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


class CheckpointNotAvailable(FileNotFoundError):
    """The official checkpoint is neither cached nor downloadable right now. ``str()``
    ends with the command line's and the Python API's way to load a local copy;
    :meth:`message_with` puts another interface's words there. ``why``: why it could not
    be downloaded, in a few words (the GUI leads with it); ``command``: the shell command
    that downloads it into the cache."""

    def __init__(self, reason: str, filename: str, why: str = "", command: str = "") -> None:
        super().__init__(reason)
        self.reason, self.filename, self.why, self.command = reason, filename, why, command

    def __str__(self) -> str:
        return self.message_with(
            f"load it with `--weights /path/to/{self.filename}` "
            "(Python: `FocusPredictor.from_checkpoint(path)`)"
        )

    def __reduce__(self) -> tuple[type, tuple[str, ...]]:  # pickles to training processes
        return type(self), (self.reason, self.filename, self.why, self.command)

    def message_with(self, local_copy: str) -> str:
        """The message with ``local_copy`` saying how to use a copy of the file."""
        return f"{self.reason}, or put the file anywhere and {local_copy}."


def _numpy_globals() -> list[Any]:
    """What unpickling numpy arrays and scalars of numeric dtypes needs, under the names
    numpy 1.x (``numpy.core``) and numpy 2.x (``numpy._core``) write into pickles.

    These only allocate an array or scalar from a dtype and raw bytes; no other
    callable is allowed, so a pickle still cannot run code. Object, string and
    structured dtypes are not listed and stay refused.
    """
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    numeric = "?bBhHiIlLqQefdFD"
    return [
        *(
            (getattr(multiarray, name), f"{module}.multiarray.{name}")
            for name in ("_reconstruct", "scalar")
            for module in ("numpy.core", "numpy._core")
        ),
        np.ndarray,
        np.dtype,
        *sorted({type(np.dtype(code)) for code in numeric}, key=lambda t: t.__name__),
    ]


# torch's allowlist is process-wide: add the numpy entries for one load at a time
_ALLOWLIST_LOCK = threading.Lock()


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a state dict and its metadata from ``.pth``/``.pt`` or ``.safetensors``.

    ``.pth`` files may be detectron2 checkpoints (``{"model": state_dict, ...}``
    beside ``optimizer``, ``scheduler``, ``iteration``, ...) or bare state dicts.
    They are unpickled with ``weights_only=True`` plus numpy arrays and scalars
    (as fvcore accepts them): a file that would run code is refused. A
    ``module.`` prefix on every key (DataParallel) is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        state, metadata = _read_safetensors(path)
        _check_metadata(metadata, path)
        return strip_parallel_prefix(state), metadata
    return strip_parallel_prefix(_read_pickle(path)), {}


def strip_parallel_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """Remove the ``module.`` prefix that (Distributed)DataParallel puts on every key."""
    if state and all(str(key).startswith(PARALLEL_PREFIX) for key in state):
        return {str(key)[len(PARALLEL_PREFIX) :]: value for key, value in state.items()}
    return dict(state)


def _check_metadata(metadata: Mapping[str, str], path: Path) -> None:
    task = metadata.get("task") or ""
    if task and task.lower() not in TASKS:
        raise CheckpointError(
            f"{path}: the metadata names the task {task!r}, which is none of {', '.join(TASKS)}"
        )
    metadata_architecture(metadata, source=str(path))


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated or corrupt?): {error}"
        ) from error
    return state, metadata


# what a file picked by mistake often is, by its first bytes
_OTHER_FILES = (
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
    (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"BM", "a BMP image"),
    (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip archive"),
    (b"<!DOCTYPE", "a web page (HTML)"), (b"<html", "a web page (HTML)"),
    (b"version https://git-lfs", "a Git LFS pointer (run git lfs pull)"),
)  # fmt: skip


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    with open(path, "rb") as handle:
        head = handle.read(32)
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes), not a PyTorch checkpoint")
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # zip (torch.save) or pickle
        kind = next((name for magic, name in _OTHER_FILES if head.startswith(magic)), None)
        what = f"it is {kind}" if kind else f"it starts with {head[:12]!r}"
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint: {what}, not a .pth file (zip or pickle); "
            "choose the FOCUS weights file"
        )
    try:
        with _ALLOWLIST_LOCK:
            present = set(torch.serialization.get_safe_globals())
            extra = [entry for entry in _numpy_globals() if entry not in present]
            with torch.serialization.safe_globals(extra):
                obj = torch.load(
                    path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
                )
    except pickle.UnpicklingError as error:
        reason = _weights_only_reason(error)
        if "global" not in reason.lower():
            raise CheckpointError(
                f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {reason}"
            ) from error
        raise CheckpointError(
            f"refused to load {path}: it holds Python objects other than tensors and plain "
            "containers, so unpickling it could run code. Only load checkpoints from sources "
            f"you trust, and convert them to .safetensors. ({reason})"
        ) from error
    except Exception as error:  # the weights-only unpickler fails in many ways on bad bytes
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): "
            f"{type(error).__name__}: {error}"
        ) from error
    state = obj.get("model", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not a state dict or a detectron2 checkpoint "
            "with a 'model' entry"
        )
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray | np.generic):
            value = _numpy_to_tensor(value, key, path)
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor"
            )
        tensors[str(key)] = value
    return tensors


def _numpy_to_tensor(value: np.ndarray | np.generic, key: Any, path: Path) -> torch.Tensor:
    array = np.array(value)  # a writable, native-order copy (torch refuses big-endian views)
    if array.dtype.byteorder not in ("=", "|"):
        array = array.astype(array.dtype.newbyteorder("="))
    try:
        return torch.from_numpy(array)
    except TypeError as error:
        raise CheckpointError(
            f"{path}: entry {key!r} is a numpy array of dtype {array.dtype}, not a tensor"
        ) from error


def _weights_only_reason(error: Exception) -> str:
    """The one informative line of torch's long weights-only error message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("Unsupported", "Trying to")) or "GLOBAL" in line:
            return line
    return lines[-1] if lines else type(error).__name__


def drop_training_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the weights that only training uses."""
    return {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}


def infer_size(state: Mapping[str, torch.Tensor]) -> str:
    """Tell ``"large"`` from ``"giant"`` by the ViT width, depth and feed-forward type."""
    proj = state.get("backbone.patch_embed.proj.weight")
    if not isinstance(proj, torch.Tensor) or proj.dim() == 0:
        raise CheckpointError(
            "the checkpoint has no 'backbone.patch_embed.proj.weight': it is not a FOCUS model"
        )
    embed_dim = proj.shape[0]
    blocks = [k for k in state if k.startswith("backbone.blocks.") and k.count(".") >= 3]
    depth = len({k.split(".")[2] for k in blocks})
    ffn = "swiglu" if "backbone.blocks.0.mlp.w12.weight" in state else "mlp"
    for size in SIZES:
        preset = architecture_preset(size)
        if (preset["embed_dim"], preset["depth"], preset["ffn_type"]) == (embed_dim, depth, ffn):
            return size
    raise CheckpointError(
        f"the checkpoint's ViT (width {embed_dim}, {depth} blocks, {ffn} feed-forward) matches "
        f"neither official size ({', '.join(SIZES)}) and the file records no architecture: "
        "the command line loads FOCUS-L and FOCUS-G files, and .safetensors files that record "
        "theirs (save_inference_checkpoint); in Python pass `architecture=` explicitly"
    )


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    more = f" (and {len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else ""
    return f"{title} ({len(items)}): {shown}{more}"


def check_state_dict(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], source: str
) -> None:
    """Raise one :class:`CheckpointError` listing missing, unexpected and mis-shaped keys."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = [
            _listing(title, items)
            for title, items in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", mismatched),
            )
            if items
        ]
        raise CheckpointError(f"{source} does not fit the FOCUS model:\n  " + "\n  ".join(parts))


def save_inference_checkpoint(
    state: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    architecture: Mapping[str, Any],
    task: str | None,
    dtype: torch.dtype = torch.float16,
    source: str | None = None,
    extra_metadata: Mapping[str, str] | None = None,
    replace: bool = True,
) -> Path:
    """Write inference weights as ``.safetensors`` with the architecture and task in the
    metadata (plus ``extra_metadata``, string values, e.g. a fine-tuning record).
    Floating-point tensors are stored as ``dtype``; the file appears atomically. With
    ``replace=False`` an existing ``path`` raises :class:`FileExistsError` instead."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from .atomic import atomic_write

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"inference checkpoints are .safetensors files, got {path.name}")
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"dtype must be float16, bfloat16 or float32, got {dtype}")
    tensors = {}
    for key, value in state.items():
        value = value.detach().to("cpu")
        if value.is_floating_point():
            cast = value.to(dtype)
            if not torch.isfinite(cast).all():
                raise ValueError(f"{key} overflows {dtype}; save with dtype=torch.float32")
            value = cast
        tensors[key] = value.contiguous()
    metadata = {
        "format": METADATA_FORMAT,
        "architecture": json.dumps(dict(architecture)),
        "task": task or "",
        "dtype": str(dtype).removeprefix("torch."),
        "source": source or "",
    }
    for key, value in (extra_metadata or {}).items():
        if key in metadata:
            raise ValueError(f"metadata key {key!r} is reserved")
        metadata[str(key)] = str(value)

    def write(tmp: str) -> None:
        try:
            save_file(tensors, tmp, metadata=metadata)
        except SafetensorError as error:  # its I/O errors are not OSErrors
            raise _os_error(error) from error

    return atomic_write(path, write, replace=replace)


def _os_error(error: Exception) -> OSError:
    """safetensors' "I/O error: No space left on device (os error 28)" as the OSError it
    reports, so the file's writer says it in words (a full disk, permission denied)."""
    found = re.search(r"\(os error (\d+)\)", str(error))
    if found is None:
        return OSError(str(error))
    code = int(found.group(1))
    return OSError(code, os.strerror(code))


def metadata_architecture(
    metadata: Mapping[str, str], source: str = "the checkpoint"
) -> dict[str, Any] | None:
    """The architecture mapping stored in an inference checkpoint's metadata, if any."""
    raw = metadata.get("architecture")
    if not raw:
        return None
    try:
        architecture = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise CheckpointError(
            f"{source}: the architecture in the metadata is not valid JSON ({error})"
        ) from error
    if not isinstance(architecture, dict):
        raise CheckpointError(
            f"{source}: the architecture in the metadata is a {type(architecture).__name__}, "
            "not a mapping of hyper-parameters"
        )
    return architecture
