"""What a checkpoint file is, told from its tensors, metadata and name: the model size
its key shapes belong to, and the task it was trained for. Used to say plainly that a
file holds another size than the one asked for, and to warn when a file recorded for
one task is used for another (every task shares one architecture and one 2-class head,
so such a file loads and runs, and its masks are those of the task it was trained for).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .checkpoints import SIZE_NAMES, CheckpointError, infer_size
from .presets import SIZES, TASKS, task_info

# the official hub file names: focus_large_sod.pth, focus_giant_cod.pth, ...
_OFFICIAL_NAME = re.compile(
    rf"^focus_(?P<size>{'|'.join(SIZES)})_(?P<task>{'|'.join(TASKS)})(?:[._-]|$)", re.IGNORECASE
)


def shape_summary(state: Mapping[str, torch.Tensor]) -> str:
    """The ViT of a state dict in words (``"ViT width 64, 4 blocks, MLP feed-forward"``)."""
    proj = state.get("backbone.patch_embed.proj.weight")
    width = proj.shape[0] if isinstance(proj, torch.Tensor) and proj.dim() else "?"
    prefix = "backbone.blocks."
    blocks = {k.split(".")[2] for k in state if k.startswith(prefix) and k.count(".") > 2}
    ffn = "SwiGLU" if "backbone.blocks.0.mlp.w12.weight" in state else "MLP"
    return f"ViT width {width}, {len(blocks)} blocks, {ffn} feed-forward"


def size_words(size: str) -> str:
    """``"FOCUS-L (large)"``; a custom architecture is ``"a custom architecture"``."""
    return f"{SIZE_NAMES[size]} ({size})" if size in SIZE_NAMES else "a custom architecture"


class CheckpointSizeMismatch(CheckpointError):
    """A checkpoint holds another model size than the one asked for.

    ``found`` is ``"large"``, ``"giant"`` or ``"custom"`` (read from the key shapes or
    the architecture the file records); ``wanted`` the size asked for. The message
    names both, the command-line flag that loads the file, and the Python argument."""

    def __init__(
        self, source: str, found: str, wanted: str, detail: str, *, recorded: bool
    ) -> None:
        self.source, self.found, self.wanted, self.recorded = source, found, wanted, recorded
        self.detail = detail
        asked = f"--size {wanted}" if wanted in SIZES else "the architecture given"
        head = (
            f"{source} holds {size_words(found)}, {detail}, not the "
            f"{size_words(wanted)} that {asked} asks for"
        )
        if found in SIZES:
            fix = (
                f"Use --size {found}, or leave --size out to read the size from the file "
                f"(Python: architecture={found!r} or None)"
            )
        elif recorded:
            fix = (
                "Leave --size out to use the architecture the file records "
                "(Python: architecture=None)"
            )
        else:
            fix = (
                "It is neither official size and the file does not record its "
                "architecture, so the command line cannot build its model: load it in "
                "Python with FocusPredictor.from_checkpoint(path, architecture={...}) and "
                "save it with save_inference_checkpoint(), which records it"
            )
        super().__init__(f"{head}. {fix}.")

    def __reduce__(self) -> tuple[Any, ...]:  # pickles to training processes and Ray workers
        return (
            _size_mismatch,
            (self.source, self.found, self.wanted, self.detail, self.recorded),
        )


def _size_mismatch(
    source: str, found: str, wanted: str, detail: str, recorded: bool
) -> CheckpointSizeMismatch:
    return CheckpointSizeMismatch(source, found, wanted, detail, recorded=recorded)


CLI_LOCAL_COPY = "give a file you trust with --weights (Python: FocusPredictor.from_checkpoint)"


class HubFileMismatch(CheckpointError):
    """The file downloaded (or cached) for an official hub repository holds another size
    than the repository publishes: a mirror or a cache that serves another file. Nothing
    the user typed asked for that size, so the message names the repository, not a flag."""

    def __init__(
        self,
        mismatch: CheckpointSizeMismatch,
        repo_id: str,
        path: Path,
        served: str | None = None,
    ) -> None:
        self.mismatch, self.repo_id, self.path = mismatch, repo_id, path
        # .../models--owner--name/snapshots/<commit>/<file>: the repository's cache folder
        self.repo_cache = path.parents[2] if len(path.parents) > 2 else path.parent
        if served is None:
            endpoint = os.environ.get("HF_ENDPOINT")
            served = f"the hub endpoint HF_ENDPOINT={endpoint}" if endpoint else "the hub"
        self.served = served
        self.problem = (
            f"{path}, the file {served} gave for {repo_id}, holds "
            f"{size_words(mismatch.found)}, {mismatch.detail}, not the "
            f"{size_words(mismatch.wanted)} that {repo_id} publishes"
        )
        super().__init__(self.message_with(CLI_LOCAL_COPY))

    def __reduce__(self) -> tuple[Any, ...]:  # the endpoint as named where it was raised
        return (type(self), (self.mismatch, self.repo_id, self.path, self.served))

    def message_with(self, local_copy: str) -> str:
        """The message with ``local_copy`` as the way to use another file, in the words
        of the interface at hand."""
        return (
            f"{self.problem}. The cached copy or the endpoint serves another file: delete "
            f"the folder {self.repo_cache} to download it again (check HF_ENDPOINT if you "
            f"use a mirror), or {local_copy}."
        )


def size_mismatch(
    state: Mapping[str, torch.Tensor], wanted: str, source: str
) -> CheckpointSizeMismatch | None:
    """The error for a state dict whose key shapes are not of ``wanted`` (None when they
    are, or when they are no FOCUS model at all: then the key listing says more)."""
    if "backbone.patch_embed.proj.weight" not in state:
        return None
    try:
        found = infer_size(state)
    except CheckpointError:
        found = "custom"
    if found == wanted:
        return None
    return CheckpointSizeMismatch(
        source, found, wanted, f"by its tensor shapes ({shape_summary(state)})", recorded=False
    )


def recorded_size_mismatch(
    recorded: Mapping[str, Any], wanted: str, source: str
) -> CheckpointSizeMismatch | None:
    """The error for a file whose metadata records an architecture other than the
    official size ``wanted``; None when it is that size (or unreadable: the loader
    reports that)."""
    from .model import resolve_architecture

    try:
        arch = resolve_architecture(dict(recorded))
    except (TypeError, ValueError):
        return None
    found = arch.size_name
    if found == wanted:
        return None
    detail = (
        f"as its metadata records (ViT width {arch.embed_dim}, {arch.depth} blocks, "
        f"{'SwiGLU' if arch.ffn_type == 'swiglu' else 'MLP'} feed-forward)"
    )
    return CheckpointSizeMismatch(source, found, wanted, detail, recorded=True)


def recorded_task(path: str | os.PathLike) -> tuple[str, str] | None:
    """``(task, how it is known)`` for a checkpoint file that says which task it was
    trained for: the ``task`` of a ``.safetensors`` file's metadata (read from its
    header only), or an official file name (``focus_large_sod.pth``). None otherwise."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                task = str((f.metadata() or {}).get("task") or "").lower()
        except Exception:  # unreadable: loading it says why
            task = ""
        if task in TASKS:
            return task, "as its metadata records"
    match = _OFFICIAL_NAME.match(path.name)
    if match:
        return match.group("task").lower(), "as its official file name says"
    return None


class TaskMismatchWarning(UserWarning):
    """A checkpoint recorded for one task is used for another (it loads and runs: the
    five tasks share the architecture; its masks are those of the recorded task)."""


def task_mismatch(asked: str, path: str | os.PathLike, *, cli: bool = True) -> str | None:
    """What to say about a checkpoint trained for another task than ``asked``, in the
    command line's words (``cli``) or the Python API's; None when the tasks agree or
    the file does not say."""
    found = recorded_task(path)
    if found is None or found[0] == asked.lower():
        return None
    task, how = found
    asked_name, task_name = (task_info(t)["name"].lower() for t in (asked, task))
    if cli:
        return (
            f"--task {asked} ({asked_name}), but {path} holds {task} weights ({task_name}, "
            f"{how}): the masks will show {task_name}, not {asked_name}. Use --task {task} "
            f"if that is what you want, or give --weights a {asked} checkpoint (or leave "
            f"--weights out to download the official {asked} model)"
        )
    return (
        f"task={asked!r} ({asked_name}), but {path} holds {task!r} weights ({task_name}, "
        f"{how}): its masks show {task_name}, not {asked_name}. Pass task={task!r}, or "
        f"load a {asked} checkpoint (FocusPredictor.from_pretrained({asked!r}))"
    )
