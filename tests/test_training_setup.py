"""Freezing, gradient checkpointing, parameter groups, schedule, presets, resume state."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_architecture

from napari_focus.model import build_model
from napari_focus.ops import build
from napari_focus.training.criterion import SetCriterion, total_loss
from napari_focus.training.forward import training_forward
from napari_focus.training.matcher import Target
from napari_focus.training.presets import PRESETS, auto_preset, part_of, resolve_preset
from napari_focus.training.setup import lr_factor, parameter_groups, prepare_for_training
from napari_focus.training.state import RunState, load_state, save_state


def _gradients(reference: Path, *, checkpointing: bool, backend: str, parts) -> dict:
    torch.manual_seed(0)
    model = build_model(tiny_architecture(reference, "tiny_mlp"))
    prepare_for_training(model, parts, checkpointing=checkpointing, backend=backend)
    images = torch.randn(1, 3, 64, 64)
    fg = torch.zeros(64, 64)
    fg[10:40, 20:50] = 1
    target = Target(torch.tensor([0, 1]), torch.stack([fg, 1 - fg]))
    torch.manual_seed(1)
    loss = total_loss(SetCriterion(num_points=256)(training_forward(model, images), [target]))
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def test_frozen_vit_checkpointing_and_gradients(focus_reference: Path) -> None:
    plain = _gradients(focus_reference, checkpointing=False, backend="torch",
                       parts=("adapter", "head"))  # fmt: skip
    assert not any(part_of(n) == "vit" for n in plain)
    # gradients reach the adapter through the frozen ViT blocks, and the edge prior
    for name in ("backbone.interactions.0.injector.gamma", "backbone.edge.fc1.weight",
                 "sem_seg_head.predictor.class_embed.weight"):  # fmt: skip
        assert plain[name] is not None and plain[name].abs().sum() > 0, name
    checkpointed = _gradients(focus_reference, checkpointing=True, backend="torch",
                              parts=("adapter", "head"))  # fmt: skip
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-5, rtol=1e-4)


def test_gradients_flow_through_the_compiled_attention(focus_reference: Path) -> None:
    if (reason := build.unavailable_reason("cpu")) is not None:
        pytest.skip(f"CPU kernel cannot be built here: {reason}")
    reference = _gradients(focus_reference, checkpointing=True, backend="torch", parts=("head",))
    compiled = _gradients(focus_reference, checkpointing=True, backend="cpu", parts=("head",))
    for name, grad in reference.items():
        torch.testing.assert_close(compiled[name], grad, atol=1e-4, rtol=1e-3)


def test_parameter_groups_follow_the_official_rules(focus_reference: Path) -> None:
    model = build_model(tiny_architecture(focus_reference, "tiny_mlp"))
    prepare_for_training(model, ("vit", "adapter", "head"), checkpointing=False, backend="torch")
    groups = parameter_groups(model, 1e-4, 0.1, 0.05)
    where = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert where[id(named["backbone.blocks.0.attn.qkv.weight"])] == (pytest.approx(1e-5), 0.05)
    assert where[id(named["backbone.blocks.0.norm1.weight"])] == (pytest.approx(1e-5), 0.0)
    assert where[id(named["backbone.norm1.weight"])] == (pytest.approx(1e-5), 0.0)  # BatchNorm
    assert where[id(named["sem_seg_head.predictor.class_embed.weight"])] == (1e-4, 0.05)
    assert where[id(named["sem_seg_head.predictor.query_feat.weight"])] == (1e-4, 0.0)
    assert len(where) == len(named)


def test_schedule_warms_up_then_decays_polynomially() -> None:
    assert lr_factor(0, 100, 10, 0.9) == pytest.approx(0.001)
    assert lr_factor(5, 100, 10, 0.9) == pytest.approx((0.001 * 0.5 + 0.5) * 0.95**0.9)
    assert lr_factor(50, 100, 10, 0.9) == pytest.approx(0.5**0.9)
    assert lr_factor(100, 100, 10, 0.9) == 0.0


def test_presets() -> None:
    assert auto_preset(torch.device("cpu")).name == "cpu"
    assert PRESETS["cpu"].parts == ("adapter", "head")
    assert "vit" in PRESETS["gpu-large"].parts and PRESETS["gpu-xl"].batch_size == 8
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_preset("huge", torch.device("cpu"))
    assert part_of("backbone.pos_embed") == "vit" and part_of("backbone.level_embed") == "adapter"


def test_resume_state_round_trip_and_identity_check(tmp_path: Path) -> None:
    run = RunState(step=7, history=[{"step": 7, "kind": "train", "loss": 1.5}], best_step=5,
                   best_metrics={"mask_iou": 0.5}, best_weights={"w": torch.ones(2)})  # fmt: skip
    identity = {"base": "x", "data": ["a"]}
    save_state(tmp_path, run=run, trainable={"w": torch.zeros(2)}, optimizer={"state": {}},
               scaler={}, identity=identity)  # fmt: skip
    loaded, weights, optimizer, _ = load_state(tmp_path, identity)
    assert (loaded.step, loaded.best_step, loaded.best_metrics) == (7, 5, {"mask_iou": 0.5})
    assert loaded.history == run.history and weights["w"].tolist() == [0.0, 0.0]
    assert optimizer == {"state": {}}
    with pytest.raises(ValueError, match="differs in: data"):
        load_state(tmp_path, {"base": "x", "data": ["b"]})



def test_base_weights_get_the_checks_of_inference_loading(tmp_path, tiny_checkpoint):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from napari_focus.checkpoints import CheckpointError
    from napari_focus.training import TrainConfig
    from napari_focus.training.setup import load_base

    state = load_file(tiny_checkpoint)
    with safe_open(tiny_checkpoint, "pt") as handle:
        metadata = handle.metadata()
    key = next(k for k in state if k.endswith("class_embed.weight"))
    state[key][0, 0] = float("nan")
    damaged = tmp_path / "damaged.safetensors"
    save_file(state, damaged, metadata=metadata)
    config = TrainConfig(tmp_path, ("generic",), tmp_path / "o.safetensors", weights=str(damaged))
    with pytest.raises(CheckpointError, match=f"the weight '{key}' holds 1 NaN"):
        load_base(config)
    base = load_base(TrainConfig(tmp_path, ("generic",), tmp_path / "o.safetensors",
                                 weights=str(tiny_checkpoint)))  # fmt: skip
    assert base.base_id.startswith("file:") and base.model.architecture.embed_dim == 64


@pytest.mark.parametrize(
    "content", [b"", b"not a state", b"PK\x03\x04cut", "list"], ids=["empty", "text", "zip", "list"]
)
def test_a_damaged_resume_state_says_what_to_do(tmp_path: Path, content) -> None:
    path = tmp_path / "resume.pt"
    if content == "list":
        torch.save([1, 2], path)  # loads, but is not a state
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="not a readable napari-focus training state") as info:
        load_state(tmp_path, {"base": "x"})
    assert str(path) in str(info.value) and "start afresh (restart)" in str(info.value)
    assert "weights_only" not in str(info.value)  # never the advice to unpickle code


@pytest.mark.parametrize("blocked", ["out", "work_dir"])
def test_an_output_that_cannot_be_written_stops_training_first(tmp_path: Path, blocked) -> None:
    from napari_focus.atomic import WriteError
    from napari_focus.training import TrainConfig, train

    blocker = tmp_path / "a file"
    blocker.write_text("in the way", encoding="utf-8")
    out = (blocker if blocked == "out" else tmp_path) / "tuned.safetensors"
    work_dir = blocker / "work" if blocked == "work_dir" else None
    config = TrainConfig(tmp_path / "no data yet", ("generic",), out, work_dir=work_dir)
    with pytest.raises(WriteError, match=f"{blocker} is a file, not a folder"):
        train(config)  # before the data is read (that would be a DatasetError here)
