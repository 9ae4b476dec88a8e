"""`napari-focus train` around an unfinished run and before the run begins: the flags
that differ from the saved run, a way to discard it, one prefix, no progress bar before
a refusal, the figure that chose the kept weights."""

from __future__ import annotations

import threading
from pathlib import Path

from synthetic_shapes import export_shapes
from test_cli import run_cli

from napari_focus.checkpoints import read_checkpoint


def _cancelled_run(root: Path, out: Path, weights: Path) -> bytes:
    """A run of 3 steps (crop 96, seed 0) cancelled at step 1; returns its resume.pt."""
    from napari_focus.training import TrainConfig, train

    cancel = threading.Event()
    config = TrainConfig(root, ("generic",), out, weights=str(weights), steps=3,
                         device="cpu", preset="cpu", canvas=96)  # fmt: skip
    result = train(config, progress=lambda p: p.phase == "train" and cancel.set(), cancel=cancel)
    assert result.cancelled and result.step == 1
    return (out.parent / f"{out.stem}.training" / "resume.pt").read_bytes()


def test_resume_names_the_flags_that_differ_and_restart_discards_the_run(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    export_shapes(tmp_path, "generic", 4, size=48)
    out = tmp_path / "tuned.safetensors"
    state = tmp_path / "tuned.training" / "resume.pt"
    saved = _cancelled_run(tmp_path, out, tiny_checkpoint)
    args = ["train", "--root", tmp_path, "--layout", "generic", "--weights", tiny_checkpoint,
            "--out", out, "--device", "cpu", "--preset", "cpu", "--quiet"]  # fmt: skip

    code, err = run_cli(*args, "--resume", "--crop", "128", "--steps", "4", "--seed", "1",
                        "--lr", "3e-4")  # fmt: skip
    assert code == 2, err
    assert err.startswith(f"napari-focus train: --resume: the unfinished run in {state.parent} "
                          "had other settings (then -> now: ")  # fmt: skip
    for change in ("--crop 96 -> 128", "--seed 0 -> 1", "--steps 3 -> 4", "--lr 0.0001 -> 0.0003"):
        assert change in err, (change, err)
    assert "canvas" not in err and "warm-up" not in err  # flags, not the state's names
    assert "replace --resume by --restart to discard it" in err
    assert "choose another --out to keep it" in err
    code, err = run_cli(*args, "--resume", "--crop", "96", "--steps", "3", "--keep-best", "iou")
    assert code == 2 and "(then -> now: --keep-best mask_iou -> iou)" in err, err
    assert state.read_bytes() == saved and not out.exists()

    code, err = run_cli(*args, "--crop", "96", "--steps", "3")  # neither --resume nor --restart
    assert code == 2
    assert (f"napari-focus train: {state.parent} holds an unfinished run of --out {out}: add "
            "--resume to continue it, --restart to discard it and start this run, or choose "
            "another --out to keep it") in err  # fmt: skip
    assert state.read_bytes() == saved

    code, err = run_cli(*args, "--restart", "--crop", "96", "--steps", "2", "--keep-best", "iou")
    assert code == 0, err
    _, metadata = read_checkpoint(out)
    assert metadata["training_steps"] == "2" and not state.exists()
    summary = next(line for line in err.splitlines() if f"wrote {out}" in line)
    assert summary.startswith(f"napari-focus train: wrote {out} (best step ")
    assert " by --keep-best iou: iou " in summary and "mask_iou" in summary


def test_a_refusal_comes_without_a_progress_bar_and_with_the_command_prefix(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    export_shapes(tmp_path, "generic", 2, size=48)
    args = ["train", "--root", tmp_path, "--weights", tiny_checkpoint, "--out",
            tmp_path / "o.safetensors", "--steps", "2"]  # fmt: skip
    # no samples of that layout: refused after the samples are read, before any bar
    code, err = run_cli(*args, "--layout", "camo-train", "--device", "cpu")
    assert code == 2 and "no training samples" in err, err
    assert "fine-tuning" not in err and "%" not in err
    assert all(line.startswith(("napari-focus train: ", "  ")) for line in err.splitlines()), err
    # a GPU preset training on the CPU: one line, then the run goes on (here: refused)
    code, err = run_cli(*args, "--layout", "camo-train", "--device", "cpu", "--preset", "gpu-xl")
    assert code == 2
    assert ("napari-focus train: warning: --preset gpu-xl is for a GPU (GPU >= 60 "
                          "GB: everything, 8 x 512 px (official batch)) and --device cpu trains "
                          "on the CPU") in err  # fmt: skip
    import torch

    if not torch.cuda.is_available():  # an unusable --device in the command's own prefix
        code, err = run_cli(*args, "--layout", "generic", "--device", "cuda")
        assert code == 2 and err.startswith("napari-focus train: --device cuda: "), err
