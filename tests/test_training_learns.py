"""Fine-tuning for real on the CPU: the tiny FOCUS model learns a synthetic set.

Bright random shapes on textured noise are exported with ``export_sample``; the tiny
architecture of the reference fixtures is trained from random weights; the held-out
proposals go from chance to IoU >= 0.8; the written checkpoint reloads and gives the
same validation figures; a cancelled run resumes from the step it saved.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
from pathlib import Path

import pytest
import torch
from conftest import tiny_architecture
from synthetic_shapes import export_shapes

from napari_focus import FocusPredictor
from napari_focus.checkpoints import read_checkpoint
from napari_focus.training import TrainConfig, collect_samples, split_samples, train
from napari_focus.training.validate import score_samples

STEPS = 16


def config(root: Path, out: Path, reference: Path, **changes) -> TrainConfig:
    settings = dict(
        root=root,
        layouts=("istd-train",),
        out=out,
        weights=None,
        architecture=tiny_architecture(reference, "tiny_mlp"),
        task="sd",
        steps=STEPS,
        device="cpu",
        preset="cpu",
        batch_size=2,
        canvas=128,
        parts=("vit", "adapter", "head"),  # from random weights the ViT must learn too
        lr=1e-3,  # from scratch; fine-tuning keeps the official 1e-4
        eval_every=STEPS,  # validate before and after; the cancel at STEPS/2 saves too
        val_fraction=0.2,
        save_dtype="float32",
    )
    settings.update(changes)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    export_shapes(root, "istd-train", 15, seed=0)
    return root


def test_fine_tuning_learns_reloads_and_resumes(
    shapes_root: Path, tmp_path: Path, focus_reference: Path
) -> None:
    torch.set_num_threads(2)
    out = tmp_path / "tuned.safetensors"
    cancel = threading.Event()
    seen = []

    def stop_halfway(progress) -> None:
        seen.append(progress)
        if progress.phase == "train" and progress.step == STEPS // 2:
            cancel.set()

    first = train(config(shapes_root, out, focus_reference), progress=stop_halfway, cancel=cancel)
    assert first.cancelled and first.output is None and first.step == STEPS // 2
    assert not out.exists()
    assert (first.work_dir / "resume.pt").is_file()
    assert first.baseline_metrics["mask_iou"] < 0.3  # random weights: chance level

    result = train(config(shapes_root, out, focus_reference, resume=True))
    assert not result.cancelled and result.step == STEPS
    train_rows = [r for r in result.history if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == list(range(1, STEPS + 1))  # continued at 9
    losses = [r["loss"] for r in train_rows]
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4
    assert result.best_metrics["mask_iou"] >= 0.8, result.history
    assert result.best_metrics["edit_effort"] < result.baseline_metrics["edit_effort"] / 4

    # the checkpoint reloads like any other and reproduces the validation figures
    _state, metadata = read_checkpoint(out)
    assert metadata["base_checkpoint"] == "random-init:seed=0"
    assert len(json.loads(metadata["training_data"])) == 15
    assert json.loads(metadata["training_config"])["steps"] == STEPS
    recorded = json.loads(metadata["validation"])["best"]
    assert recorded["step"] == result.best_step
    predictor = FocusPredictor.from_checkpoint(out, device="cpu")
    assert predictor.task == "sd"
    samples, _ = collect_samples(shapes_root, ["istd-train"])
    _, val = split_samples(samples, val_fraction=0.2)
    again = score_samples(predictor, val)
    for key, value in result.best_metrics.items():
        assert again[key] == pytest.approx(value, abs=2e-3), key
    report = result.work_dir / "training_report.html"
    assert "validation mask_iou" in report.read_text()
    assert (result.work_dir / "training_log.csv").read_text().startswith("step,kind,loss")
    assert not (result.work_dir / "resume.pt").exists()  # a finished run keeps no optimizer state


def test_subprocess_run_stops_when_its_watcher_goes_away(
    shapes_root: Path, tmp_path: Path, focus_reference: Path
) -> None:
    from napari_focus.training.process import train_in_subprocess

    out = tmp_path / "tuned.safetensors"
    run = train_in_subprocess(
        config(shapes_root, out, focus_reference, steps=400, eval_every=400), threading.Event()
    )
    interrupted_at = None
    for report in run:  # the child is training: drop the watcher (napari closing)
        if report.phase == "train" and report.step >= 2 and interrupted_at is None:
            (child,) = [p for p in multiprocessing.active_children() if "training" in p.name]
            os.kill(child.pid, signal.SIGINT)  # Ctrl+C in the terminal: the host decides
            interrupted_at = report.step
        elif report.phase == "train" and interrupted_at and report.step > interrupted_at:
            break
    else:
        pytest.fail("the training process ended before its second step after Ctrl+C")
    run.close()  # asks the child to stop after its step; waits up to 30 s for it
    for child in multiprocessing.active_children():  # longer on a loaded machine
        if child.name == "napari-focus-training":
            child.join(600)
    resume = list(tmp_path.rglob("resume.pt"))
    assert resume and not out.exists()  # the step it stopped at is saved for --resume
    stopped_at = torch.load(resume[0], map_location="cpu", weights_only=True)["step"]
    assert 2 <= stopped_at < 400  # stopped, not waited out


def _sends_more_than_a_pipe_holds(reports) -> None:
    reports.put(("progress", "x" * 300_000))  # a long run's result: its whole history
    reports.put(("result", "y" * 300_000))


def test_a_host_that_stops_listening_still_lets_the_child_end() -> None:
    """napari closes mid-run: the child's last reports are read (and dropped) so that it
    can end; a child blocked on a full pipe would keep napari from ever exiting."""
    from napari_focus.training.process import drain_until_ended

    context = multiprocessing.get_context("spawn")
    reports = context.Queue()
    child = context.Process(target=_sends_more_than_a_pipe_holds, args=(reports,))
    child.start()
    drain_until_ended(child, reports, timeout=120)
    assert child.exitcode == 0


def test_a_run_that_diverges_says_what_to_do(shapes_root: Path, tmp_path: Path, focus_reference):
    """A learning rate far too high: the predictions overflow within a few steps; the run
    stops with the advice (it was scipy's 'matrix contains invalid numeric entries'), as
    a ValueError, which the command line and the Improve tab report in words."""
    from napari_focus.training import TrainingDiverged

    out = tmp_path / "diverged.safetensors"
    settings = config(shapes_root, out, focus_reference, lr=1e30, steps=4, eval_every=100,
                      parts=("head",), num_points=256)  # fmt: skip
    with pytest.raises(TrainingDiverged, match="training diverged; lower the learning rate"):
        train(settings)
    assert issubclass(TrainingDiverged, ValueError) and not out.exists()
