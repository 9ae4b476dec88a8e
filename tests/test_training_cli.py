"""`napari-focus train`: the parser, its errors, and a short real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from synthetic_shapes import export_shapes

from napari_focus.checkpoints import read_checkpoint
from napari_focus.cli import build_parser, main
from napari_focus.datasets import LAYOUTS
from napari_focus.training import PRESETS
from napari_focus.training.cli import KEEP_BEST_NAMES, LAYOUT_NAMES, PRESET_NAMES


def test_parser_choices_follow_the_package() -> None:
    assert LAYOUT_NAMES == LAYOUTS
    assert ("auto", *PRESETS) == PRESET_NAMES
    from napari_focus.training.validate import VALIDATION_METRICS

    assert tuple(VALIDATION_METRICS) == KEEP_BEST_NAMES
    args = build_parser().parse_args(
        ["train", "--root", "r", "--layout", "DUTS-TR", "--layout", "generic",
         "--weights", "cod", "--out", "x.safetensors"]
    )  # fmt: skip
    assert args.layout == ["duts-tr", "generic"] and args.steps == 300
    assert args.keep_best == "mask_iou"


def test_clear_errors(tmp_path: Path, capsys) -> None:
    code = main(["train", "--root", str(tmp_path / "none"), "--layout", "generic",
                 "--weights", "cod", "--out", str(tmp_path / "o.safetensors")])  # fmt: skip
    assert code == 2
    assert f"--root {tmp_path / 'none'} does not exist; give the FOCUS datasets/" in (
        capsys.readouterr().err
    )
    code = main(["train", "--root", str(tmp_path), "--layout", "generic",
                 "--weights", "cod", "--out", str(tmp_path / "o.pth")])  # fmt: skip
    assert code == 2 and ".safetensors" in capsys.readouterr().err
    export_shapes(tmp_path, "generic", 2, size=48)
    out = str(tmp_path / "o.safetensors")
    code = main(["train", "--root", str(tmp_path), "--layout", "generic",
                 "--weights", "focus_tiny_cod", "--out", out])  # fmt: skip
    assert code == 2 and "neither a checkpoint file nor an official model" in (
        capsys.readouterr().err
    )
    (tmp_path / "taken.safetensors").write_bytes(b"mine")
    code = main(["train", "--root", str(tmp_path), "--layout", "generic",
                 "--weights", "cod", "--out", str(tmp_path / "taken.safetensors")])  # fmt: skip
    assert code == 2 and "exists" in capsys.readouterr().err
    assert (tmp_path / "taken.safetensors").read_bytes() == b"mine"
    code = main(["train", "--root", str(tmp_path), "--layout", "generic", "--resume",
                 "--weights", "cod", "--out", str(tmp_path / "taken.safetensors")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "has finished); choose another --out" in err and "=True" not in err
    for flag, value, words in [
        ("--crop", "100", "must be a multiple of 32 such as 512, got 100"),
        ("--lr", "-1", "must be a positive number, got -1"),
        ("--steps", "0", "must be at least 1, got 0"),
        ("--val-fraction", "1", "must be at least 0 and below 1, got 1"),
    ]:
        code = run_train_cli(["train", "--root", str(tmp_path), "--layout", "generic",
                              flag, value, "--weights", "cod", "--out", out])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and f"argument {flag}: {words}" in err, err
    code = main(["train", "--root", str(tmp_path), "--layout", "generic", "--resume",
                 "--weights", "cod", "--out", out])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and (f"--resume: {tmp_path / 'o.training'} holds no unfinished run of "
                          f"--out {out}; leave --resume out") in err  # fmt: skip
    code = main(["train", "--root", str(tmp_path), "--layout", "generic", "--weights", "cod",
                 "--out", out, "--val", "no_such_image"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--val: no exported sample is named no_such_image;" in err, err
    assert "e.g. generic/" in err
    code = main(["train", "--root", str(tmp_path), "--layout", "generic", "--weights", "cod",
                 "--out", "/proc/tuned.safetensors"])  # fmt: skip
    assert code == 2 and "--out: " in capsys.readouterr().err


def run_train_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse refusals
        return exit_.code


def test_missing_metrics_stop_train_and_rank_before_any_work(tmp_path: Path, capsys, monkeypatch):
    import builtins
    import importlib.util

    find_spec = importlib.util.find_spec

    def without_metrics(name, *args):  # as on a machine without the [metrics] extra
        return None if name == "py_sod_metrics" else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_metrics)
    real_import = builtins.__import__

    def no_model_loading(name, *args, **kwargs):
        if name.endswith("predictor") or name == "napari_focus.training.setup":
            raise AssertionError(f"{name} imported before the metrics were checked")
        return real_import(name, *args, **kwargs)

    export_shapes(tmp_path, "generic", 2, size=48)
    (tmp_path / "gt").mkdir()
    monkeypatch.setattr(builtins, "__import__", no_model_loading)
    code = main(["train", "--root", str(tmp_path), "--layout", "generic",
                 "--weights", "cod", "--out", str(tmp_path / "o.safetensors")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == (
        "napari-focus train: the held-out validation's quality metrics need PySODMetrics, "
        "which is not installed: pip install 'pysodmetrics>=1.6.2,<2' (napari-focus's "
        "'metrics' extra)"
    )
    code = main(["rank", str(tmp_path), "--task", "sod", "--gt", str(tmp_path / "gt"),
                 "--out", str(tmp_path / "r.csv")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--gt: quality metrics need PySODMetrics" in err
    assert not (tmp_path / "r.csv").exists()


def test_short_run_writes_a_loadable_checkpoint(
    tmp_path: Path, tiny_checkpoint: Path, capsys
) -> None:
    root = tmp_path / "datasets"
    export_shapes(root, "camo-train", 4, size=48)
    out = tmp_path / "tuned.safetensors"
    code = main(["train", "--root", str(root), "--layout", "camo-train",
                 "--weights", str(tiny_checkpoint), "--out", str(out), "--steps", "2",
                 "--device", "cpu", "--preset", "cpu", "--crop", "96", "--keep-best", "smeasure",
                 "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"wrote {out}" in err and "mask_iou" in err
    _, metadata = read_checkpoint(out)
    assert metadata["base_checkpoint"].startswith("file:tiny_mlp.safetensors:sha256=")
    assert metadata["task"] == "sod"
    preset = json.loads(metadata["training_preset"])
    assert preset["parts"] == ["adapter", "head"] and preset["canvas"] == 96
    assert json.loads(metadata["training_config"])["select_metric"] == "smeasure"
    from napari_focus import FocusPredictor

    FocusPredictor.from_checkpoint(out, device="cpu")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--root", "r"])


def test_flags_named_in_the_refusals(tmp_path: Path, capsys, tiny_checkpoint) -> None:
    export_shapes(tmp_path, "generic", 2, size=48)
    base = ["train", "--root", str(tmp_path), "--steps", "1", "--device", "cpu"]
    code = main([*base, "--layout", "generic", "--weights", str(tmp_path / "gone.pth"),
                 "--out", str(tmp_path / "o.safetensors")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and f"--weights {tmp_path / 'gone.pth'}: no such file" in err
    code = main([*base, "--layout", "generic", "--weights", "cod",
                 "--out", str(tmp_path / "o.pth")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and f"give --out {tmp_path / 'o.safetensors'}" in err
    # a sod base on cod samples: the output would record sod unless --task says cod
    code = main([*base, "--layout", "cod10k-train", "--weights", str(tiny_checkpoint),
                 "--out", str(tmp_path / "o.safetensors")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "no training samples" in err
    assert ("note: the base weights are for sod and --layout cod10k-train holds cod "
            "samples; the output records the task sod (the base's) unless you add --task "
            "cod") in err  # fmt: skip
    code = main([*base, "--layout", "cod10k-train", "--task", "cod", "--weights",
                 str(tiny_checkpoint), "--out", str(tmp_path / "o.safetensors")])  # fmt: skip
    assert code == 2 and "note:" not in capsys.readouterr().err


def test_a_layout_without_samples_is_named_among_others(tmp_path: Path) -> None:
    from napari_focus.training.data import collect_samples

    export_shapes(tmp_path, "generic", 2, size=48)
    samples, problems = collect_samples(tmp_path, ["generic", "duts-tr"])
    assert len(samples) == 2
    assert problems == [f"duts-tr: no samples under {tmp_path}; it adds nothing to training"]


def test_a_full_disk_during_training_is_said_in_words(
    tmp_path: Path, capsys, tiny_checkpoint, monkeypatch
) -> None:
    import errno

    from napari_focus.atomic import WriteError
    from napari_focus.training import loop

    export_shapes(tmp_path, "camo-train", 2, size=48)
    out = tmp_path / "tuned.safetensors"

    def full_disk(config, progress, **how):  # where a save during the run meets a full disk
        raise WriteError(out.parent / "tuned.work" / "best.safetensors",
                         OSError(errno.ENOSPC, "No space left on device"))  # fmt: skip

    monkeypatch.setattr(loop, "train", full_disk)
    code = main(["train", "--root", str(tmp_path), "--layout", "camo-train",
                 "--weights", str(tiny_checkpoint), "--out", str(out), "--steps", "1",
                 "--device", "cpu", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "the disk is full" in err and "best.safetensors" in err and "Traceback" not in err
    assert "nothing was saved: run the same command again once it can be written" in err


def test_a_second_ctrl_c_inside_a_state_save_is_an_interrupt(
    tmp_path: Path, capsys, tiny_checkpoint, monkeypatch
) -> None:
    """torch's file writer turns the KeyboardInterrupt of a second Ctrl-C into a
    RuntimeError of its own: still exit 130 and the words of an interrupt."""
    from napari_focus.training import loop

    export_shapes(tmp_path, "camo-train", 2, size=48)

    def interrupted_save(config, progress, **how):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")  # noqa: B904

    monkeypatch.setattr(loop, "train", interrupted_save)
    code = main(["train", "--root", str(tmp_path), "--layout", "camo-train",
                 "--weights", str(tiny_checkpoint), "--out", str(tmp_path / "t.safetensors"),
                 "--steps", "1", "--device", "cpu", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err
    assert "interrupted before anything was saved; run the same command again" in err

    def broken(config, progress, **how):
        raise RuntimeError("a bug")

    monkeypatch.setattr(loop, "train", broken)
    with pytest.raises(RuntimeError, match="a bug"):  # not taken for an interrupt
        main(["train", "--root", str(tmp_path), "--layout", "camo-train",
              "--weights", str(tiny_checkpoint), "--out", str(tmp_path / "u.safetensors"),
              "--steps", "1", "--device", "cpu", "--quiet"])  # fmt: skip


def test_a_broken_sample_met_during_the_run_says_how_to_go_on(
    tmp_path: Path, capsys, tiny_checkpoint, monkeypatch
) -> None:
    """Samples are decoded as training reaches them: one found broken after a state was
    saved ends the run with exit 1 (it had started), saying what to do."""
    from napari_focus.training import loop
    from napari_focus.training.data import DatasetError
    from napari_focus.training.state import STATE_NAME

    export_shapes(tmp_path, "camo-train", 2, size=48)
    out = tmp_path / "t.safetensors"

    def broken_sample(config, progress, **how):
        config.work_dir.mkdir(parents=True, exist_ok=True)
        (config.work_dir / STATE_NAME).write_bytes(b"the state of step 10")
        raise DatasetError("sample camo-train/a: mask (10, 10) and image (48, 48) differ in size")

    monkeypatch.setattr(loop, "train", broken_sample)
    code = main(["train", "--root", str(tmp_path), "--layout", "camo-train",
                 "--weights", str(tiny_checkpoint), "--out", str(out), "--steps", "20",
                 "--device", "cpu", "--quiet"])  # fmt: skip
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and last == (
        "napari-focus train: sample camo-train/a: mask (10, 10) and image (48, 48) differ in "
        "size; the run stopped there: once the sample is fixed or removed, --restart trains "
        "afresh (--resume refuses changed samples)"
    )

    def refused_before_training(config, progress, **how):  # a state of an earlier run
        raise DatasetError("no training samples under the root")

    import os

    state = out.with_suffix(".training") / STATE_NAME
    os.utime(state, (state.stat().st_atime - 3600, state.stat().st_mtime - 3600))
    monkeypatch.setattr(loop, "train", refused_before_training)
    code = main(["train", "--root", str(tmp_path), "--layout", "camo-train",
                 "--weights", str(tiny_checkpoint), "--out", str(out), "--steps", "20",
                 "--device", "cpu", "--quiet", "--restart"])  # fmt: skip
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last == "napari-focus train: no training samples under the root"


def test_a_work_folder_that_cannot_be_written_is_said_before_training(
    tmp_path: Path, capsys, tiny_checkpoint
) -> None:
    export_shapes(tmp_path, "camo-train", 2, size=48)
    out = tmp_path / "t.safetensors"
    (tmp_path / "t.training").write_text("a file where the run's work folder goes")
    code = main(["train", "--root", str(tmp_path), "--layout", "camo-train",
                 "--weights", str(tiny_checkpoint), "--out", str(out), "--steps", "1",
                 "--device", "cpu", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("napari-focus train: --out: ")
    assert "t.training" in last and "is a file, not a folder" in last


def test_a_new_run_never_replaces_an_unfinished_one(
    tmp_path: Path, capsys, tiny_checkpoint
) -> None:
    """A run cancelled at step 1 keeps its saved state: the same --out without --resume is
    refused in the flags' words, and --resume continues it."""
    import threading

    from napari_focus.training import TrainConfig, train

    export_shapes(tmp_path, "camo-train", 4, size=48)
    out = tmp_path / "tuned.safetensors"
    cancel = threading.Event()
    config = TrainConfig(tmp_path, ("camo-train",), out, weights=str(tiny_checkpoint),
                         steps=3, device="cpu", preset="cpu", canvas=96)  # fmt: skip
    result = train(config, progress=lambda p: p.phase == "train" and cancel.set(), cancel=cancel)
    assert result.cancelled and result.step == 1
    saved = (tmp_path / "tuned.training" / "resume.pt").read_bytes()
    args = ["train", "--root", str(tmp_path), "--layout", "camo-train", "--weights",
            str(tiny_checkpoint), "--out", str(out), "--steps", "3", "--device", "cpu",
            "--preset", "cpu", "--crop", "96", "--quiet"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (f"{tmp_path / 'tuned.training'} holds an unfinished run of --out {out}: add "
            "--resume to continue it, --restart to discard it and start this run, or choose "
            "another --out to keep it") in err  # fmt: skip
    assert (tmp_path / "tuned.training" / "resume.pt").read_bytes() == saved
    assert not out.exists()
    assert main([*args, "--resume"]) == 0, capsys.readouterr().err
    _, metadata = read_checkpoint(out)
    assert metadata["training_steps"] == "3"


def test_an_out_that_appears_during_training_is_kept_and_the_weights_go_beside_it(
    tmp_path: Path, capsys, tiny_checkpoint, monkeypatch
) -> None:

    export_shapes(tmp_path / "datasets", "camo-train", 4, size=48)
    out = tmp_path / "tuned.safetensors"

    def someone_writes_out_meanwhile(update):
        if update.phase == "train" and not out.exists():
            out.write_bytes(b"the user's own file")

    _after_each_report(monkeypatch, someone_writes_out_meanwhile)
    args = ["train", "--root", str(tmp_path / "datasets"), "--layout", "camo-train",
            "--weights", str(tiny_checkpoint), "--out", str(out), "--steps", "2",
            "--device", "cpu", "--preset", "cpu", "--crop", "96", "--quiet"]  # fmt: skip
    code = main(args)
    err = capsys.readouterr().err
    assert code == 0, err
    beside = tmp_path / "tuned-1.safetensors"
    assert out.read_bytes() == b"the user's own file"
    assert (f"--out {out} appeared during training and was kept; the trained weights "
            f"are in {beside}") in err  # fmt: skip
    assert f"wrote {beside}" in err
    _, metadata = read_checkpoint(beside)
    assert metadata["training_steps"] == "2"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".napari_focus-tmp")]


def test_base_weights_that_cannot_be_read_are_refused_before_the_samples(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    from napari_focus.training import loop

    def no_reading(*args, **kwargs):
        raise AssertionError("the samples were read before --weights was checked")

    monkeypatch.setattr(loop, "collect_samples", no_reading)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "focus_large_cod.pth").write_bytes(b"x")
    (tmp_path / "empty.safetensors").touch()
    base = ["train", "--root", str(tmp_path), "--layout", "generic", "--steps", "1",
            "--device", "cpu", "--out", str(tmp_path / "o.safetensors")]  # fmt: skip
    for weights, said in [
        ("sodd", "--weights 'sodd' is neither a checkpoint file nor an official model"),
        (str(tmp_path / "gone.pth"), "no such file; give the path of a checkpoint"),
        (str(tmp_path / "weights"), "a folder, not a checkpoint file; give the .pth or "
         ".safetensors file (in it: focus_large_cod.pth)"),
        (str(tmp_path / "empty.safetensors"), "the file is empty"),
    ]:  # fmt: skip
        code = main([*base, "--weights", weights])
        err = capsys.readouterr().err
        assert code == 2 and said in err, (weights, err)
        assert err.startswith("napari-focus train: --weights"), err


@pytest.mark.parametrize(("stop", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_ctrl_c_stops_at_the_stage_and_resume_continues_from_the_step(
    tmp_path: Path, capsys, tiny_checkpoint, monkeypatch, stop, code
) -> None:
    """A first Ctrl-C (or a batch scheduler's SIGTERM) is a Cancel: the run stops before
    its next step with that step's state saved (exit 130, 143); the same command with
    --resume finishes it."""
    import os
    import signal

    expected = code
    export_shapes(tmp_path / "datasets", "camo-train", 4, size=48)
    out = tmp_path / "tuned.safetensors"

    def ctrl_c_after_step_1(update):
        if update.phase == "train" and update.step == 1:
            os.kill(os.getpid(), getattr(signal, stop))  # what the terminal sends

    _after_each_report(monkeypatch, ctrl_c_after_step_1)
    handler = signal.getsignal(signal.SIGINT)
    term_handler = signal.getsignal(signal.SIGTERM)
    args = ["train", "--root", str(tmp_path / "datasets"), "--layout", "camo-train",
            "--weights", str(tiny_checkpoint), "--out", str(out), "--steps", "3",
            "--eval-every", "3", "--device", "cpu", "--preset", "cpu", "--crop", "96",
            "--quiet"]  # fmt: skip
    code = main(args)
    err = capsys.readouterr().err
    assert code == expected, err
    assert "stopping within a model stage, saving the last completed step" in err
    assert ("interrupted at step 1 of 3; the same command with `--resume` continues from "
            "there") in err  # fmt: skip
    assert not out.exists()
    state = torch.load(tmp_path / "tuned.training" / "resume.pt", weights_only=True)
    assert state["step"] == 1  # saved at the cancel, not only at an evaluation
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    assert signal.getsignal(signal.SIGTERM) is term_handler

    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0, capsys.readouterr().err
    _, metadata = read_checkpoint(out)
    assert metadata["training_steps"] == "3"


def test_ctrl_c_in_the_first_evaluation_leaves_nothing_to_resume(
    tmp_path: Path, capsys, tiny_checkpoint, monkeypatch
) -> None:
    """Ctrl-C while the base weights are first evaluated: nothing is saved, the message
    says to run the same command again, and that command is not refused."""
    import os
    import signal


    export_shapes(tmp_path / "datasets", "camo-train", 4, size=48)
    out = tmp_path / "tuned.safetensors"

    def ctrl_c_in_the_baseline(update):
        if update.phase == "eval" and update.step == 0 and update.metrics is None:
            os.kill(os.getpid(), signal.SIGINT)

    _after_each_report(monkeypatch, ctrl_c_in_the_baseline)
    args = ["train", "--root", str(tmp_path / "datasets"), "--layout", "camo-train",
            "--weights", str(tiny_checkpoint), "--out", str(out), "--steps", "1",
            "--device", "cpu", "--preset", "cpu", "--crop", "96", "--quiet"]  # fmt: skip
    code = main(args)
    err = capsys.readouterr().err
    assert code == 130, err
    assert "stopping within a model stage, no step is done to save (Ctrl-C to stop" in err
    assert ("interrupted before its first step was done, so nothing was saved; run the "
            "same command again") in err  # fmt: skip
    assert not (tmp_path / "tuned.training" / "resume.pt").exists()

    monkeypatch.undo()
    assert main(args) == 0, capsys.readouterr().err
    assert out.is_file()


def test_the_summary_of_a_run_without_held_out_samples_names_the_last_step() -> None:
    from types import SimpleNamespace

    from napari_focus.training.cli_messages import best_step_summary

    result = SimpleNamespace(best_step=None, step=40, best_metrics=None, baseline_metrics=None)
    summary = best_step_summary(result, "iou")
    assert summary == "the last step, 40: no held-out samples to choose a best by"


def _after_each_report(monkeypatch, action) -> None:
    """The CLI's training calls ``action(update)`` after each progress report."""
    from napari_focus.training import loop

    real_train = loop.train

    def watched(config, progress, **how):
        def report(update):
            progress(update)
            action(update)

        return real_train(config, progress=report, **how)

    monkeypatch.setattr(loop, "train", watched)


def test_no_samples_of_the_layout_names_the_layouts_that_hold_some(
    tmp_path: Path, capsys, tiny_checkpoint
) -> None:
    """Samples exported for another task (duts-tr while training cod10k-train): the
    message names the layout that holds them, in the command line's words."""
    export_shapes(tmp_path, "duts-tr", 2, size=48)
    code = main(["train", "--root", str(tmp_path), "--layout", "cod10k-train",
                 "--weights", str(tiny_checkpoint), "--out", str(tmp_path / "t.safetensors"),
                 "--steps", "1", "--device", "cpu", "--quiet"])  # fmt: skip
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last == (
        f"napari-focus train: no training samples under {tmp_path} for layout(s) "
        "cod10k-train: export corrected masks there first (napari-focus export); it holds "
        "duts-tr samples: give that --layout"
    )
