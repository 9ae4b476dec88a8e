"""Checkpoints as the official training code writes them, and every file that does not fit.

An official FOCUS ``.pth`` is a detectron2 checkpoint: the model's whole
``state_dict()`` (with the criterion buffer and the training-only CLIP refiner)
under ``"model"``, beside ``optimizer``, ``scheduler``, ``iteration`` and
``__author__``; fvcore accepts numpy arrays in it. Anything that is not a usable
FOCUS checkpoint must raise one ``CheckpointError``, before a big model is built.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import napari_focus
from napari_focus import FocusPredictor
from napari_focus.checkpoints import TRAINING_ONLY_PREFIXES, CheckpointError, read_checkpoint

# a few keys under every training-only prefix, shaped like the official ones
TRAINING_EXTRAS = {
    "criterion.empty_weight": torch.tensor([1.0, 1.0, 0.1]),
    "sem_seg_head.predictor.clip_refiner.visual.proj": torch.randn(768, 512),
    "sem_seg_head.predictor.clip_refiner.visual.class_embedding": torch.randn(768),
    "sem_seg_head.predictor.clip_refiner.logit_scale": torch.tensor(4.6052),
    "sem_seg_head.predictor.text_embed.fc.weight": torch.randn(256, 512),
    "sem_seg_head.predictor.image_embed.fc.bias": torch.randn(256),
}
# weights kept as numpy arrays in "model", as fvcore accepts them
NUMPY_KEYS = (
    "sem_seg_head.predictor.class_embed.weight",
    "sem_seg_head.predictor.query_feat.weight",
)


def official_like(state: dict[str, torch.Tensor], prefix: str = "") -> dict:
    """A detectron2 checkpoint around ``state``, as the official training writes one."""
    model: dict = {**state, **TRAINING_EXTRAS}
    for key in NUMPY_KEYS:
        model[key] = model[key].numpy().copy()
    model = OrderedDict((prefix + key, value) for key, value in model.items())
    params = list(range(6))
    return {
        "model": model,
        "optimizer": {
            "state": {
                i: {"step": np.float64(1000.0), "exp_avg": np.zeros((3, 2), np.float32)}
                for i in params
            },
            "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": params}],
        },
        "scheduler": {"base_lrs": [1e-4], "last_epoch": 39999, "_step_count": 40000},
        "iteration": np.int64(39999),
        "__author__": "geshang",
    }


def _input(reference: Path) -> np.ndarray:
    return np.array(Image.open(reference / "input.png").convert("RGB"))


@pytest.mark.parametrize("prefix", ["", "module."], ids=["detectron2", "dataparallel"])
def test_official_like_checkpoint_reproduces_the_golden_masks(
    tiny_mlp, focus_reference, tmp_path, prefix
):
    arch, state = tiny_mlp
    assert "criterion.empty_weight" not in state
    path = tmp_path / "focus_tiny_sod.pth"
    torch.save(official_like(state, prefix), path)

    # the reference manifest and the loader agree on what only training uses
    manifest = json.loads((focus_reference / "state_dict_manifest.json").read_text())
    assert set(manifest["large"]["training_only_prefixes"]) == set(TRAINING_ONLY_PREFIXES)

    predictor = FocusPredictor.from_checkpoint(path, "sod", architecture=arch, device="cpu")
    loaded = predictor.model.state_dict()
    assert not any(k.startswith(TRAINING_ONLY_PREFIXES) for k in loaded)
    for key in NUMPY_KEYS:
        assert torch.equal(loaded[key], state[key].float()), key

    golden = load_file(focus_reference / "tiny_mlp_golden.safetensors")
    result = predictor.predict(_input(focus_reference))
    assert np.abs(result.probability - golden["sem_seg"][0].numpy()).max() < 1e-3
    assert (result.mask == golden["final_mask"].numpy()).mean() >= 0.999


class _RunsCode:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class _FakeArray(np.ndarray):
    """An ndarray subclass: numpy's reconstruction would instantiate a foreign class."""


@pytest.mark.parametrize("where", ["optimizer", "model", "subclass"])
def test_numpy_allowlist_opens_no_door_to_code(tiny_mlp, tmp_path, where):
    _, state = tiny_mlp
    marker = tmp_path / "ran"
    checkpoint = official_like(state)
    if where == "optimizer":
        checkpoint["optimizer"]["state"][0]["exp_avg"] = _RunsCode(marker)
    elif where == "model":
        checkpoint["model"]["backbone.cls_token"] = _RunsCode(marker)
    else:
        checkpoint["model"]["backbone.cls_token"] = np.zeros(3).view(_FakeArray)
    path = tmp_path / "evil.pth"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="could run code"):
        read_checkpoint(path)
    assert not marker.exists(), "loading the checkpoint executed code from the pickle"


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "objects.pth"
    torch.save({"model": {"a": np.array([{"x": 1}], dtype=object)}}, path)
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


def test_big_endian_and_fortran_numpy_arrays_load(tmp_path):
    values = np.arange(6, dtype=">f4").reshape(2, 3)
    path = tmp_path / "numpy.pth"
    torch.save({"model": {"a": values, "b": np.asfortranarray(values.astype("<f8"))}}, path)
    state, _ = read_checkpoint(path)
    assert state["a"].dtype == torch.float32 and state["b"].dtype == torch.float64
    assert torch.equal(state["a"], torch.arange(6.0).view(2, 3))
    assert torch.equal(state["b"], torch.arange(6.0, dtype=torch.float64).view(2, 3))
    # nothing is left in torch's process-wide allowlist for other callers of torch.load
    assert not [g for g in torch.serialization.get_safe_globals() if "numpy" in repr(g)]


@pytest.fixture(scope="module")
def large_meta_state() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return dict(napari_focus.build_model("large").state_dict())


def test_a_large_file_loaded_as_giant_says_so_in_one_line(large_meta_state):
    with pytest.raises(CheckpointError) as info:
        FocusPredictor.from_state_dict(
            large_meta_state, architecture="giant", device="cpu", source="focus_large_sod.pth"
        )
    message = str(info.value)
    assert message.startswith("focus_large_sod.pth holds FOCUS-L (large), by its tensor shapes")
    assert "not the FOCUS-G (giant) that --size giant asks for" in message
    assert "Use --size large, or leave --size out" in message
    assert message.count("\n") == 0 and len(message) < 400


# ------------------------------------------------------------------ abuse: each one refused
def _bad_weight(state: dict, key: str, value: torch.Tensor) -> dict:
    return {**state, key: value}


FLOAT_KEY = "backbone.blocks.1.attn.qkv.weight"


def _tensor_cases(state: dict) -> dict[str, tuple[dict, str]]:
    w = state[FLOAT_KEY]
    nan, inf = w.clone(), w.clone()
    nan.view(-1)[7] = math.nan
    inf.view(-1)[3] = -math.inf
    huge64 = w.double().clone()
    huge64.view(-1)[0] = 1e300  # finite in float64, infinite as float32
    return {
        "integer": (_bad_weight(state, FLOAT_KEY, w.long()), "not floating point"),
        "bool": (_bad_weight(state, FLOAT_KEY, w > 0), "not floating point"),
        "complex": (_bad_weight(state, FLOAT_KEY, w.to(torch.complex64)), "not floating point"),
        "meta": (_bad_weight(state, FLOAT_KEY, torch.empty(w.shape, device="meta")), "meta"),
        "sparse": (_bad_weight(state, FLOAT_KEY, w.to_sparse()), "dense"),
        "nan": (_bad_weight(state, FLOAT_KEY, nan), "NaN or infinite"),
        "inf": (_bad_weight(state, FLOAT_KEY, inf), "NaN or infinite"),
        "float64 overflow": (_bad_weight(state, FLOAT_KEY, huge64), "NaN or infinite"),
        "float counter": (
            _bad_weight(
                state,
                "backbone.norm1.num_batches_tracked",
                torch.tensor(3.5),
            ),
            "not an integer",
        ),
        "scalar patch embedding": (
            _bad_weight(state, "backbone.patch_embed.proj.weight", torch.tensor(1.0)),
            "",
        ),
    }


TENSOR_CASES = [
    "integer",
    "bool",
    "complex",
    "meta",
    "sparse",
    "nan",
    "inf",
    "float64 overflow",
    "float counter",
    "scalar patch embedding",
]


@pytest.mark.parametrize("case", TENSOR_CASES)
def test_unusable_tensors_are_refused(tiny_mlp, tmp_path, case):
    arch, state = tiny_mlp
    assert "backbone.norm1.num_batches_tracked" in state
    bad, needle = _tensor_cases(dict(state))[case]
    path = tmp_path / "bad.pth"
    torch.save({"model": bad}, path)
    with pytest.raises(CheckpointError) as info:
        FocusPredictor.from_checkpoint(path, architecture=arch, device="cpu")
    assert needle in str(info.value)
    if case in ("nan", "inf", "integer"):
        assert FLOAT_KEY in str(info.value)  # the offending key is named


def test_the_first_non_finite_weight_is_named(tiny_mlp):
    arch, state = tiny_mlp
    keys = [k for k, v in state.items() if v.is_floating_point()]
    first, later = keys[10], keys[20]
    bad = dict(state)
    for key in (first, later):
        bad[key] = torch.full_like(state[key], math.nan)
    with pytest.raises(CheckpointError, match=f"'{first}'"):
        FocusPredictor.from_state_dict(bad, architecture=arch, device="cpu")


def _architecture_cases(arch: dict) -> dict[str, str]:
    """Architecture metadata strings that must each be refused."""

    def changed(**fields) -> str:
        return json.dumps({**arch, **fields})

    return {
        "not json": "{embed_dim: 64",
        "a list": json.dumps([1, 2, 3]),
        "a number": "3",
        "deeply nested": "[" * 100_000 + "]" * 100_000,
        "missing key": json.dumps({k: v for k, v in arch.items() if k != "depth"}),
        "unknown key": changed(colour=3),
        "string width": changed(embed_dim="64"),
        "float depth": changed(depth=4.0),
        "bool heads": changed(num_heads=True),
        "list width": changed(embed_dim=[64]),
        "null width": changed(embed_dim=None),
        "negative depth": changed(depth=-4),
        "zero heads": changed(num_heads=0),
        "huge depth": changed(
            depth=20000, interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 19999]]
        ),
        "huge width": changed(embed_dim=10**9),
        "huge decoder": changed(dec_layers=10**6),
        "nan ratio": '{"deform_ratio": NaN, ' + changed()[1:],
        "string ffn": changed(ffn_type=["mlp"]),
        "bad indexes": changed(interaction_indexes="0-3"),
        "ragged indexes": changed(interaction_indexes=[[0], [1, 1], [2, 2], [3, 3]]),
        "indexes past depth": changed(interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 9]]),
        "negative index": changed(interaction_indexes=[[-1, 0], [1, 1], [2, 2], [3, 3]]),
    }


ARCHITECTURE_CASES = list(_architecture_cases({}).keys())


@pytest.mark.parametrize("case", ARCHITECTURE_CASES)
def test_bad_architecture_metadata_is_refused(tiny_mlp, tmp_path, case):
    arch, state = tiny_mlp
    inference = {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
    path = tmp_path / "bad.safetensors"
    metadata = {"format": "napari-focus/inference-v1", "task": "sod"}
    metadata["architecture"] = _architecture_cases(arch)[case]
    save_file({k: v.contiguous() for k, v in inference.items()}, path, metadata=metadata)
    with pytest.raises(CheckpointError) as info:
        FocusPredictor.from_checkpoint(path, device="cpu")
    assert str(path) in str(info.value)


def test_bad_task_metadata_is_refused(tiny_mlp, tmp_path):
    arch, state = tiny_mlp
    inference = {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
    path = tmp_path / "bad_task.safetensors"
    metadata = {"architecture": json.dumps(arch), "task": "xyz"}
    save_file({k: v.contiguous() for k, v in inference.items()}, path, metadata=metadata)
    with pytest.raises(CheckpointError, match="task 'xyz'"):
        FocusPredictor.from_checkpoint(path, device="cpu")


def test_bad_architecture_argument_is_a_checkpoint_error(tiny_mlp):
    arch, state = tiny_mlp
    with pytest.raises(CheckpointError, match="depth must be between"):
        FocusPredictor.from_state_dict(state, architecture={**arch, "depth": -1}, device="cpu")
    with pytest.raises(CheckpointError, match="architecture"):
        FocusPredictor.from_state_dict(state, architecture=42, device="cpu")


@pytest.mark.parametrize(
    "state",
    [{"a": 1.0}, {3: torch.zeros(1)}, [torch.zeros(1)]],
    ids=["python float", "integer key", "list"],
)
def test_in_memory_state_that_is_not_a_state_dict(state):
    with pytest.raises(CheckpointError):
        FocusPredictor.from_state_dict(state, architecture="large", device="cpu")
