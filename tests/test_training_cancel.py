"""Cancelling a fine-tuning run: it stops within a model stage, in a training step or an
evaluation; no step or evaluation starts after the cancel, no output is written, and the
resume state is that of the last completed step, so resuming gives what the
uninterrupted run gives."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import pytest
import torch
from conftest import tiny_architecture
from synthetic_shapes import export_shapes

from napari_focus.checkpoints import read_checkpoint
from napari_focus.run_control import Cancelled, RunControl, stage_modules
from napari_focus.training import TrainConfig, train
from napari_focus.training.setup import load_base, prepare_for_training

STEPS = 4


def config(root: Path, out: Path, reference: Path, **changes) -> TrainConfig:
    settings = dict(
        root=root, layouts=("istd-train",), out=out, weights=None,
        architecture=tiny_architecture(reference, "tiny_mlp"), task="sd", steps=STEPS,
        device="cpu", preset="cpu", batch_size=1, canvas=64, parts=("adapter", "head"),
        lr=1e-3, eval_every=2, val_fraction=0.25, save_dtype="float32",
    )  # fmt: skip
    settings.update(changes)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    export_shapes(root, "istd-train", 4, seed=1, size=64)
    return root


@pytest.fixture(scope="module")
def uninterrupted(shapes_root: Path, tmp_path_factory, focus_reference: Path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same kernels in every run of this module: exact figures
    out = tmp_path_factory.mktemp("whole") / "tuned.safetensors"
    yield train(config(shapes_root, out, focus_reference))
    torch.set_num_threads(threads)


class CancelInStage:
    """Sets the run's cancel flag as the model enters its ``index``-th stage module
    during training step ``step`` (counted from 0) or, with ``in_eval``, during the
    evaluation after it; the run under test must stop right there."""

    def __init__(self, step: int, *, in_eval: bool = False) -> None:
        self.cancel = threading.Event()
        self.step, self.in_eval = step, in_eval
        self.phase: tuple[str, int] | None = None
        self.stages_after_cancel = 0

    def progress(self, report) -> None:
        if report.phase == "eval" and report.metrics is None:  # "validating at step k…"
            self.phase = ("eval", report.step)
        elif report.phase in ("train", "eval"):  # the next step's forward follows
            self.phase = ("train", report.step)

    def hook(self, _module, _inputs) -> None:
        if self.cancel.is_set():
            self.stages_after_cancel += 1
        target = ("eval", self.step) if self.in_eval else ("train", self.step)
        if self.phase == target:
            self.cancel.set()


def run_with(cancel: CancelInStage, settings: TrainConfig, monkeypatch):
    """``train`` with ``cancel.hook`` before every stage of the model it loads."""
    from napari_focus.training import loop

    def load_and_hook(*args, **kwargs):
        base = load_base(*args, **kwargs)
        for module in stage_modules(base.model):
            module.register_forward_pre_hook(cancel.hook)
        return base

    monkeypatch.setattr(loop, "load_base", load_and_hook)
    return train(settings, progress=cancel.progress, cancel=cancel.cancel)


def same_history(mine: list[dict], theirs: list[dict]) -> bool:
    assert [(r["step"], r["kind"]) for r in mine] == [(r["step"], r["kind"]) for r in theirs]
    for row, other in zip(mine, theirs, strict=True):
        numbers = {k: v for k, v in other.items() if k not in ("step", "kind")}
        assert {k: row[k] for k in numbers} == pytest.approx(numbers, rel=1e-6), row["step"]
    return True


def log_rows(work_dir: Path) -> list[tuple[int, str]]:
    with open(work_dir / "training_log.csv") as handle:
        return [(int(row["step"]), row["kind"]) for row in csv.DictReader(handle)]


@pytest.mark.parametrize("in_eval", [False, True], ids=["in-a-step", "in-an-evaluation"])
def test_a_cancel_stops_in_the_stage_and_resuming_gives_the_uninterrupted_run(
    in_eval: bool, uninterrupted, shapes_root: Path, tmp_path: Path, focus_reference: Path,
    monkeypatch,
) -> None:  # fmt: skip
    out = tmp_path / "tuned.safetensors"
    cancel = CancelInStage(2, in_eval=in_eval)  # in step 3's forward / the evaluation at 2
    first = run_with(cancel, config(shapes_root, out, focus_reference), monkeypatch)
    assert first.cancelled and first.output is None and not out.exists()
    assert first.step == 2
    assert cancel.stages_after_cancel == 0  # the stage that saw the cancel did not run
    # nothing started after the cancel: no third step, no evaluation at 2 when cut short
    done = [(0, "eval"), (1, "train"), (2, "train")] + ([] if in_eval else [(2, "eval")])
    assert log_rows(first.work_dir) == done
    saved = torch.load(first.work_dir / "resume.pt", map_location="cpu", weights_only=True)
    assert saved["step"] == 2  # the last completed step, never a half-done one

    monkeypatch.undo()
    resumed = train(config(shapes_root, out, focus_reference, resume=True))
    assert not resumed.cancelled and resumed.output == out
    assert same_history(resumed.history, uninterrupted.history)
    assert resumed.best_step == uninterrupted.best_step
    assert not (resumed.work_dir / "resume.pt").exists()
    mine, _ = read_checkpoint(out)
    theirs, _ = read_checkpoint(uninterrupted.output)
    for key, value in theirs.items():
        torch.testing.assert_close(mine[key], value, rtol=0, atol=1e-6, msg=key)


def test_a_cancel_during_the_last_evaluation_writes_no_weights(
    shapes_root: Path, tmp_path: Path, focus_reference: Path, monkeypatch
) -> None:
    """Closing napari as the last evaluation runs: the user never saw that run end, so
    no final weights appear; the run stays resumable."""
    out = tmp_path / "tuned.safetensors"
    cancel = CancelInStage(STEPS, in_eval=True)
    first = run_with(cancel, config(shapes_root, out, focus_reference), monkeypatch)
    assert first.cancelled and first.step == STEPS and not out.exists()
    assert log_rows(first.work_dir)[-1] == (STEPS, "train")
    assert (first.work_dir / "resume.pt").is_file()

    monkeypatch.undo()
    resumed = train(config(shapes_root, out, focus_reference, resume=True))
    assert resumed.output == out and log_rows(resumed.work_dir)[-1] == (STEPS, "eval")


def test_a_cancel_in_the_baseline_evaluation_leaves_nothing_to_resume(
    shapes_root: Path, tmp_path: Path, focus_reference: Path, monkeypatch
) -> None:
    """Cancelled before anything was done: no resume state, so the same run starts
    again without --resume (it is not refused as replacing an unfinished run)."""
    out = tmp_path / "tuned.safetensors"
    cancel = CancelInStage(0, in_eval=True)
    first = run_with(cancel, config(shapes_root, out, focus_reference), monkeypatch)
    assert first.cancelled and first.step == 0 and first.started and not first.saved
    assert not (first.work_dir / "resume.pt").exists() and not out.exists()

    monkeypatch.undo()
    again = train(config(shapes_root, out, focus_reference, steps=1))
    assert again.output == out and not again.cancelled


def test_the_backward_pass_stops_at_the_next_stage(focus_reference: Path, tmp_path) -> None:
    """A cancel after the forward pass stops the backward pass before it reaches the
    earlier stages: the weights there get no gradient (and no update)."""
    from napari_focus.training.forward import training_forward
    from napari_focus.training.interrupt import watch_step

    settings = config(tmp_path, tmp_path / "x.safetensors", focus_reference)
    model = load_base(settings, lambda _p: None, lambda: False).model
    prepare_for_training(model, ("adapter", "head"), checkpointing=False, backend="torch")
    control = RunControl()
    with pytest.raises(Cancelled), watch_step(model, control) as watch:
        predictions = training_forward(model, torch.randn(1, 3, 64, 64))
        loss = sum(p["pred_masks"].sum() + p["pred_logits"].sum() for p in predictions)
        control.cancel()
        watch.backward_begins()
        loss.backward()
    adapter = [p for n, p in model.named_parameters() if n.startswith("backbone.") and
               p.requires_grad]  # fmt: skip
    assert adapter and all(p.grad is None for p in adapter)
