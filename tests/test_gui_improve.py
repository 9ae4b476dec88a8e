"""The "Improve the model" section trains the tiny model in a worker and switches weights."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic_shapes import export_shapes, shape_sample

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

from napari_focus.gui import dialogs  # noqa: E402

WAIT_MS = 900_000


def _proposal(qtbot, viewer, widget) -> np.ndarray:
    widget.image.value = "shape"
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    return np.array(viewer.layers["shape [FOCUS SOD] probability"].data)


def test_improve_trains_in_a_worker_and_switches_weights(
    qtbot, open_series, open_focus_widget, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    from qtpy.QtCore import QTimer

    viewer, widget = open_focus_widget()
    root = tmp_path / "datasets"
    export_shapes(root, "duts-tr", 6, seed=3, size=64)
    widget.export_section.dataset_root.value = root
    assert widget.export_section.dataset_layout.value == "duts-tr"
    image, _ = shape_sample(np.random.default_rng(99), 64)
    viewer.add_image(image, name="shape", rgb=True)
    before = _proposal(qtbot, viewer, widget)

    improve = widget.improve
    improve.steps.value = 16
    improve.preset.value = "cpu"
    improve.crop.value = 128
    improve.learning_rate.value = 1e-3  # the tiny base has random weights
    # 16 steps teach this base the probability map before the query classes, which the
    # official mask rule needs: select on the probability map
    improve.keep.value = "iou"
    out = tmp_path / "improved.safetensors"
    improve.output.value = out

    ticks: list[float] = []
    states: list[str] = []
    timer = QTimer()
    timer.timeout.connect(
        lambda: ticks.append(time.perf_counter()) or states.append(improve.status.value)
    )
    timer.start(10)
    improve.improve_button.clicked.emit()  # what a click does
    assert improve.running and improve.cancel_button.enabled
    qtbot.waitUntil(lambda: not improve.running, timeout=WAIT_MS)
    timer.stop()
    assert len(ticks) > 50, "the event loop did not run while training ran"
    # Training runs in a process of its own: the event loop shows its steps one by one,
    # where a viewer blocked by it would only see the end
    shown_steps = {state for state in states if state.startswith("step ")}
    assert len(shown_steps) >= 3, sorted(set(states))
    assert out.is_file(), improve.status.value
    assert improve.status.value.startswith("done"), improve.status.value
    assert "no step beat" not in improve.status.value, improve.status.value
    assert improve.use_new_button.enabled
    figures = [state for state in states if "S-measure" in state]  # the tab's words
    assert figures and all("mask_iou" not in state for state in states), sorted(set(states))

    # a series in progress: its images not yet accepted get new proposals and a new order
    folder = tmp_path / "series"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i in range(2):
        Image.fromarray(shape_sample(rng, 64)[0]).save(folder / f"s{i}.png")
    open_series(widget.series, folder)
    qtbot.waitUntil(lambda: widget.series.proposal_ready, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not widget.series.busy, timeout=WAIT_MS)
    old_scores = dict(widget.series.scores)
    shown_before = np.array(viewer.layers["s0 [FOCUS SOD] probability"].data)

    improve.use_new_weights()
    assert widget.weights_source.value == "file" and Path(widget.weights_path.value) == out
    assert not improve.use_new_button.enabled and improve.use_previous_button.enabled
    assert "re-proposing 2 series images" in improve.status.value
    qtbot.waitUntil(lambda: not widget.series.busy, timeout=WAIT_MS)
    assert set(widget.series.scores) == {"s0.png", "s1.png"}
    assert widget.series.scores != old_scores
    # the image on screen, not edited, shows the new weights' proposal at once
    assert widget.series.shown_key == "s0.png" and widget.series.proposal_ready
    shown_after = np.array(viewer.layers["s0 [FOCUS SOD] probability"].data)
    assert not np.allclose(shown_before, shown_after, atol=1e-6)
    assert viewer.layers["s0 [FOCUS SOD]"].metadata["napari_focus"]["weights"] == str(out)
    after = _proposal(qtbot, viewer, widget)
    assert not np.allclose(before, after, atol=1e-6), "the new weights changed nothing"

    improve.use_new_weights()  # called again (a double click): previous stays the old ones
    qtbot.waitUntil(lambda: not widget.series.busy, timeout=WAIT_MS)
    improve.use_previous_weights()  # one click back
    assert Path(widget.weights_path.value) == tiny_checkpoint
    assert improve.use_new_button.enabled and not improve.use_previous_button.enabled
    np.testing.assert_allclose(_proposal(qtbot, viewer, widget), before, atol=1e-6)


def test_improve_explains_what_is_missing(open_focus_widget, tmp_path: Path) -> None:
    _, widget = open_focus_widget()
    improve = widget.improve
    assert not improve.improve_button.enabled  # it cannot act: its tooltip says why
    assert improve.improve_button.tooltip == "Choose the dataset root in the Export tab first"
    improve.start()
    assert "dataset root" in improve.status.value and not improve.running
    widget.export_section.dataset_root.value = tmp_path
    assert improve.improve_button.enabled
    improve.output.value = tmp_path / "x.safetensors"
    (tmp_path / "x.safetensors").write_bytes(b"mine")
    improve.start()
    assert "exists" in improve.status.value and not improve.running
    assert (tmp_path / "x.safetensors").read_bytes() == b"mine"
    improve.output.value = tmp_path / "tuned.pth"  # not put elsewhere under another name
    improve.start()
    assert not improve.running and improve.status.value == (
        "error: the new weights are a .safetensors file: under 'new weights' choose "
        "tuned.safetensors, or leave it empty"
    )


def test_a_training_process_that_dies_is_reported_and_improve_works_again(
    qtbot, open_focus_widget, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    import multiprocessing

    _, widget = open_focus_widget()
    root = tmp_path / "datasets"
    export_shapes(root, "duts-tr", 4, seed=3, size=64)
    widget.export_section.dataset_root.value = root
    improve = widget.improve
    improve.steps.value = 500
    improve.preset.value = "cpu"
    improve.crop.value = 128
    improve.output.value = tmp_path / "improved.safetensors"
    improve.start()
    qtbot.waitUntil(lambda: improve.status.value.startswith("step"), timeout=WAIT_MS)
    (child,) = [p for p in multiprocessing.active_children() if "training" in p.name]
    child.kill()  # as the kernel's out-of-memory killer would
    qtbot.waitUntil(lambda: not improve.running, timeout=WAIT_MS)
    assert "training failed: the training process was stopped by SIGKILL (the system kills a" in (
        improve.status.value
    )
    assert improve.improve_button.enabled and not improve.cancel_button.enabled


def _small_run(widget, root: Path, out: Path, steps: int) -> None:
    widget.export_section.dataset_root.value = root
    improve = widget.improve
    improve.steps.value = steps
    improve.preset.value = "cpu"
    improve.crop.value = 96
    improve.output.value = out


def test_improve_after_cancel_continues_the_run_and_on_other_data_asks_to_discard_it(
    qtbot, open_focus_widget, tmp_path: Path, monkeypatch
) -> None:
    _, widget = open_focus_widget()
    root = tmp_path / "datasets"
    export_shapes(root, "duts-tr", 4, seed=3, size=48)
    out = tmp_path / "tuned.safetensors"
    _small_run(widget, root, out, 3)
    improve = widget.improve
    improve.improve_button.clicked.emit()
    qtbot.waitUntil(lambda: improve.status.value.startswith("step"), timeout=WAIT_MS)
    assert not improve.steps.enabled and not improve.output.enabled  # taken by the run
    assert widget.cancel_button.enabled  # the footer's Cancel (Shift+C) stops it too
    widget.cancel_button.clicked.emit()
    assert widget.status.value == "cancelling Improve's training…"
    qtbot.waitUntil(lambda: not improve.running, timeout=WAIT_MS)
    assert not widget.cancel_button.enabled and improve.steps.enabled
    assert widget.status.value == "Improve's training stopped: the Improve tab says where"
    assert improve.status.value.startswith("cancelled at step ")
    assert ("of 3: Improve continues it; to start a new run, choose another file under "
            "'new weights'") in improve.status.value  # fmt: skip
    state = tmp_path / "tuned.training" / "resume.pt"
    saved = state.read_bytes()

    from napari_focus.datasets import export_sample

    late = shape_sample(np.random.default_rng(11), 48)
    export_sample(root, "duts-tr", "late", *late)  # a correction exported meanwhile
    questions: list[str] = []
    answers = iter([False, True])

    def answer(_parent, question):
        questions.append(question)
        qtbot.wait(200)  # as a modal dialog does, the events waiting meanwhile run
        return next(answers)

    monkeypatch.setattr(dialogs, "ask_yes_no", answer)
    improve.improve_button.clicked.emit()
    assert improve.status.value == "continuing the cancelled run of tuned.safetensors…"
    qtbot.waitUntil(lambda: not improve.running, timeout=WAIT_MS)
    assert improve.status.value.startswith(
        "not started: the cancelled run of tuned.safetensors was on "
        "other training data or settings (then -> now: exported samples 4 -> 5"
    ), improve.status.value
    assert "set them back to continue it" in improve.status.value  # fmt: skip
    assert "'new weights'" in improve.status.value
    assert state.read_bytes() == saved and not out.exists()  # "No": the run is kept
    assert questions == [
        "The cancelled run of tuned.safetensors was on other training data or settings "
        "(then -> now: exported samples 4 -> 5), so Improve cannot continue it.\n\nDiscard "
        "it and start a new run into tuned.safetensors? (No keeps it: set the data and "
        "settings back to continue it, or choose another file under 'new weights'.)"
    ]

    improve.improve_button.clicked.emit()  # asked again; "Yes": a new run on 5 samples
    qtbot.waitUntil(lambda: out.exists() and not improve.running, timeout=WAIT_MS)
    assert len(questions) == 2 and questions[1] == questions[0]
    assert improve.status.value.startswith("done: ") and not state.exists()


def test_closing_napari_while_improve_runs_keeps_the_run(
    qtbot, open_focus_widget, tmp_path: Path, capfd
) -> None:
    """Closing napari stops the run like Cancel: the resume state is kept, no step or
    evaluation starts after it and no final weights are written (the run is short
    enough to have ended meanwhile). The worker napari aborts follows the run to its end
    (no signal of it may raise) and says on stderr what was kept."""
    import csv
    import multiprocessing

    viewer, widget = open_focus_widget()
    root = tmp_path / "datasets"
    export_shapes(root, "duts-tr", 4, seed=3, size=48)
    out = tmp_path / "tuned.safetensors"
    _small_run(widget, root, out, 3)  # every step is evaluated
    improve = widget.improve
    improve.improve_button.clicked.emit()
    qtbot.waitUntil(lambda: improve.status.value.startswith("step 1"), timeout=WAIT_MS)
    worker = improve._worker  # the thread watching the training process
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=WAIT_MS)
    qtbot.wait(200)  # the worker's last signals are delivered: none may raise
    err = capfd.readouterr().err
    assert "napari closed: Improve stopped training tuned.safetensors at step " in err, err
    assert f"its resume state is kept in {tmp_path / 'tuned.training'}" in err
    assert f"Improve with {out} under 'new weights' continues it" in err
    qtbot.waitUntil(
        lambda: not [p for p in multiprocessing.active_children() if "training" in p.name],
        timeout=WAIT_MS,
    )
    work = tmp_path / "tuned.training"
    assert (work / "resume.pt").is_file() and not out.exists()
    assert not [p for p in work.iterdir() if p.name.startswith(".napari_focus-tmp")]
    with open(work / "training_log.csv") as handle:
        rows = [(int(r["step"]), r["kind"]) for r in csv.DictReader(handle)]
    assert (3, "train") not in rows, rows  # closed at step 1: at most step 2 ran


def test_official_weights_not_at_hand_are_said_in_the_tabs_words(
    qtbot, open_focus_widget, tmp_path: Path, monkeypatch
) -> None:
    """Improve from the official weights, neither cached nor downloadable: the Model
    tab's way to use a local copy, not the command line's flag."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read by the training process it spawns
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    _, widget = open_focus_widget()
    widget.weights_source.value = "official"
    _small_run(widget, tmp_path / "datasets", tmp_path / "improved.safetensors", 4)
    export_shapes(tmp_path / "datasets", "duts-tr", 2, seed=3, size=64)
    widget.improve.start()
    qtbot.waitUntil(lambda: not widget.improve.running, timeout=WAIT_MS)
    status = widget.improve.status.value
    assert status.startswith("error: training failed: no weights: focus_large_sod.pth is not ")
    assert "'local checkpoint' in the Model tab" in status and "--weights" not in status


def test_improve_starts_from_the_steps_of_the_train_command(open_focus_widget) -> None:
    """The tab and `napari-focus train` are one run (the README says so): same default."""
    from napari_focus.cli import build_parser

    _, widget = open_focus_widget()
    args = build_parser().parse_args(
        ["train", "--root", "d", "--layout", "duts-tr", "--weights", "sod", "--out", "o"]
    )
    assert widget.improve.steps.value == args.steps


def test_a_continued_run_that_ends_leaves_new_weights_empty_for_the_next_improve(
    qtbot, open_focus_widget, tmp_path: Path, monkeypatch
) -> None:
    """Improve with 'new weights' empty, cancelled: the field shows the run's file so
    that Improve continues it; once that run ends the field is empty again (not the
    working folder, which the next Improve would refuse)."""
    monkeypatch.chdir(tmp_path)
    _, widget = open_focus_widget()
    root = tmp_path / "datasets"
    export_shapes(root, "duts-tr", 4, seed=3, size=48)
    _small_run(widget, root, tmp_path / "unused.safetensors", 2)
    improve = widget.improve
    improve.keep.value = "smeasure"
    improve.output.line_edit.value = ""  # left empty: Improve names the file itself
    improve.improve_button.clicked.emit()
    qtbot.waitUntil(lambda: improve.status.value.startswith("step"), timeout=WAIT_MS)
    widget.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: not improve.running, timeout=WAIT_MS)
    assert improve.status.value.startswith("cancelled at step "), improve.status.value
    named = Path(improve.output.value)
    assert named.suffix == ".safetensors"
    improve.improve_button.clicked.emit()  # continues it
    qtbot.waitUntil(lambda: not improve.running, timeout=WAIT_MS)
    assert improve.status.value.startswith("done: ") and named.is_file(), improve.status.value
    # the figure 'keep best' chose the step by, before and after, as the log has them
    import csv

    log = named.with_suffix(".training") / "training_log.csv"
    evals = [r for r in csv.DictReader(log.open()) if r["kind"] == "eval"]
    best = max(evals, key=lambda r: float(r["smeasure"]))  # the first of the best
    before, after = float(evals[0]["smeasure"]), float(best["smeasure"])
    assert improve.status.value.startswith(
        f"done: S-measure {before:.3f} -> {after:.3f}"
    ), improve.status.value
    assert improve.output.line_edit.value == ""
    improve.start()  # a new run, not "choose a .safetensors file"
    assert improve.running and "error" not in improve.status.value, improve.status.value
    widget.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: not improve.running, timeout=WAIT_MS)


def test_no_samples_of_the_layout_is_said_in_the_tab_s_words(tmp_path: Path) -> None:
    from napari_focus.gui.improve_messages import training_error_text
    from napari_focus.training.data import NoTrainingSamples

    error = NoTrainingSamples(tmp_path, ("cod10k-train",), ("duts-tr",))
    assert training_error_text(error, "tuned.safetensors", "new weights") == (
        f"no training samples under {tmp_path} for layout(s) cod10k-train: export corrected "
        "masks there first (the Export tab); it holds duts-tr samples: choose that layout, "
        "and its task, in the Export tab"
    )


def test_a_validation_line_begins_with_the_figure_keep_best_chooses_by() -> None:
    from napari_focus.gui.improve_messages import validation_text

    metrics = {"mask_iou": 0.9, "iou": 0.8, "smeasure": 0.7, "mae": float("nan")}
    assert validation_text(4, metrics, "smeasure") == (
        "step 4: S-measure 0.700, proposal IoU 0.900, IoU of probability > 0.5 0.800"
    )
    assert validation_text(4, metrics).startswith("step 4: proposal IoU 0.900, IoU of")
