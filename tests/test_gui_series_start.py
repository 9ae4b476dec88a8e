"""Opening a series in a worker: napari stays responsive while a large folder is
scanned, Cancel and a later Open stop the scan, closing the dock or napari meanwhile,
and the errors said as before (real napari viewer under Xvfb)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

from napari_focus.run_control import Cancelled  # noqa: E402
from napari_focus.series import STATE_NAME  # noqa: E402
from napari_focus.series import queue as queue_module  # noqa: E402

WAIT_MS = 120_000
LARGE = 2500  # the scan counts at 1000 and 2000, then once the folder is listed


def _folder(root: Path, name: str, count: int, focus_reference: Path) -> Path:
    """``count`` copies (hard links) of one small RGB PNG, ``<name>0000.png``..."""
    folder = root / name
    folder.mkdir()
    source = Image.open(focus_reference / "input.png").convert("RGB").crop((0, 0, 96, 64))
    first = folder / f"{name}0000.png"
    source.save(first)
    for i in range(1, count):
        os.link(first, folder / f"{name}{i:04d}.png")
    return folder


@pytest.fixture
def held_scan(monkeypatch):
    """The series' folder scan (the real one), held at its first count of images found
    in the folders named in ``hold_in`` until the test sets ``release`` (while held it
    counts again and again, so that a cancel stops it, unless ``stoppable`` is False);
    records the threads that scanned and the scans stopped (``Cancelled`` from the
    count)."""
    hold = SimpleNamespace(
        hold_in=set(),
        stoppable=True,
        release=threading.Event(),
        held=threading.Event(),
        threads=[],
        stopped=[],
    )
    original = queue_module.scan_folder

    def scanning(folder, *, found=None, **kwargs):
        name = Path(folder).name
        hold.threads.append(threading.current_thread())
        counts = []

        def counting(count: int) -> None:
            found(count)  # raises Cancelled once nobody waits for this scan
            if name in hold.hold_in and not counts:
                hold.held.set()
                deadline = time.monotonic() + 60
                while not hold.release.wait(0.02):  # a slow listing, counting as it goes
                    assert time.monotonic() < deadline, "the test never released the scan"
                    if hold.stoppable:
                        found(count)
            counts.append(count)

        try:
            return original(folder, found=counting if found else None, **kwargs)
        except Cancelled:
            hold.stopped.append(name)
            raise

    monkeypatch.setattr(queue_module, "scan_folder", scanning)
    yield hold
    hold.release.set()


def _image_layers_added(viewer) -> list[str]:
    added: list[str] = []
    viewer.layers.events.inserted.connect(lambda event: added.append(event.value.name))
    return added


def test_napari_stays_responsive_while_a_large_folder_is_scanned(
    qtbot, open_focus_widget, tmp_path, focus_reference, held_scan
):
    from qtpy.QtCore import QTimer

    large = _folder(tmp_path, "large", LARGE, focus_reference)
    held_scan.hold_in.add("large")
    _viewer, widget = open_focus_widget()
    series = widget.series
    series.prefetch.value = False
    ticks: list[int] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start()
    series.open_button.clicked.emit()  # the folder field is empty: said at once
    assert widget.status.value.startswith("error: choose an image folder first")
    series.folder.value = large
    series.open_button.clicked.emit()  # returns while the scan is held in the worker
    assert held_scan.held.wait(30)
    assert held_scan.threads and threading.main_thread() not in held_scan.threads
    qtbot.waitUntil(lambda: "images found" in widget.status.value, timeout=WAIT_MS)
    assert widget.status.value == f"opening {large}: 1000 images found…"
    counted = len(ticks)
    qtbot.wait(200)
    assert len(ticks) > counted  # napari's event loop goes on while the folder is scanned
    assert not series.open_button.enabled and not series.layers_button.enabled
    assert widget.cancel_button.enabled and series.loader.busy and series.state is None
    held_scan.release.set()
    qtbot.waitUntil(lambda: not series.loader.busy, timeout=WAIT_MS)
    assert len(series.state.queue) == LARGE and held_scan.stopped == []
    assert series.shown_key == "large0000.png"
    assert series.open_button.enabled and series.layers_button.enabled
    assert series.next_button.enabled
    timer.stop()
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)


def _scan_held_after_a_small_series(
    qtbot, open_series, open_focus_widget, tmp_path, focus_reference, held_scan
):
    """A small series shown, then a large folder opened whose scan the test holds;
    ``(viewer, widget, the small series' state, the large folder)``."""
    small = _folder(tmp_path, "small", 3, focus_reference)
    large = _folder(tmp_path, "large", LARGE, focus_reference)
    held_scan.hold_in.add("large")
    viewer, widget = open_focus_widget()
    series = widget.series
    series.prefetch.value = False
    open_series(series, small)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    state = series.state
    series.open(large)
    assert held_scan.held.wait(30)
    return viewer, widget, state, large


def test_cancel_stops_the_scan_and_keeps_the_series_shown(
    qtbot, open_series, open_focus_widget, tmp_path, focus_reference, held_scan
):
    _viewer, widget, state, large = _scan_held_after_a_small_series(
        qtbot, open_series, open_focus_widget, tmp_path, focus_reference, held_scan
    )
    series = widget.series
    assert not widget.cancel_button.native.isHidden() and widget.cancel_button.enabled
    widget.cancel_button.clicked.emit()
    assert widget.status.value == "cancelled opening the series; the one shown stays"
    assert series.open_button.enabled and not widget.cancel_button.enabled
    held_scan.release.set()
    qtbot.waitUntil(lambda: not series.loader.busy, timeout=WAIT_MS)
    assert held_scan.stopped == ["large"]  # stopped at its next count
    assert not (large / "napari_focus" / STATE_NAME).exists()
    assert series.state is state and series.shown_key == "small0000.png"
    assert widget.status.value == "cancelled opening the series; the one shown stays"
    assert series.folder.value == state.output_folder.parent  # the fields name the shown one
    assert series.output.line_edit.native.placeholderText().endswith("small/napari_focus")


def test_the_folder_chosen_last_is_the_one_opened(
    qtbot, open_focus_widget, tmp_path, focus_reference, held_scan
):
    """Another folder opened while one is being opened (`napari-focus annotate` and a
    click, or a script): the later one is shown; the earlier one, loaded all the same,
    never reaches the screen."""
    first = _folder(tmp_path, "first", 3, focus_reference)
    second = _folder(tmp_path, "second", 4, focus_reference)
    held_scan.hold_in.add("first")  # held once listed: its scan has no count left
    held_scan.stoppable = False
    viewer, widget = open_focus_widget()
    added = _image_layers_added(viewer)
    series = widget.series
    series.prefetch.value = False
    series.open(first)
    assert held_scan.held.wait(30)
    series.open(second)
    assert widget.status.value == f"opening {second}…"
    held_scan.release.set()
    qtbot.waitUntil(lambda: not series.loader.busy, timeout=WAIT_MS)
    assert (first / "napari_focus" / STATE_NAME).is_file()  # loaded, then dropped
    assert series.state.queue.folder == second.resolve()
    assert len(series.state.queue) == 4 and series.shown_key == "second0000.png"
    assert series.folder.value == second
    assert added and not any(name.startswith("first") for name in added)
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)


@pytest.mark.parametrize("closing", ["the dock's ×", "napari"])
def test_closing_while_a_folder_opens(
    qtbot, open_focus_widget, tmp_path, focus_reference, held_scan, closing
):
    large = _folder(tmp_path, "large", LARGE, focus_reference)
    held_scan.hold_in.add("large")
    viewer, widget = open_focus_widget()
    added = _image_layers_added(viewer)
    series = widget.series
    series.open(large)
    assert held_scan.held.wait(30)
    if closing == "napari":
        viewer.close()  # waits for the worker to leave
        assert held_scan.stopped == ["large"]
    else:
        viewer.window.remove_dock_widget(widget.native)
        qtbot.waitUntil(lambda: held_scan.stopped == ["large"], timeout=WAIT_MS)
        qtbot.waitUntil(lambda: not series.loader.busy, timeout=WAIT_MS)
        qtbot.wait(200)  # whatever the worker still sent has arrived: nobody took it
        assert added == []
    assert series.state is None
    assert not (large / "napari_focus" / STATE_NAME).exists()


@pytest.mark.parametrize("case", ["newer state", "empty folder", "state file not a folder"])
def test_a_folder_that_cannot_be_opened_says_why_and_the_series_stays(
    qtbot, open_series, open_focus_widget, tmp_path, focus_reference, series_errors, case
):
    shown = _folder(tmp_path, "shown", 2, focus_reference)
    _viewer, widget = open_focus_widget()
    series = widget.series
    series.prefetch.value = False
    open_series(series, shown)
    state = series.state
    other = tmp_path / "other"
    if case == "empty folder":
        other.mkdir()
        expected = f"no images in '{other}'"
    else:
        other = _folder(tmp_path, "other", 2, focus_reference)
        output = other / "napari_focus"
        if case == "newer state":
            output.mkdir()
            path = output / STATE_NAME
            path.write_text(json.dumps({"schema": "napari-focus-queue", "version": 99}))
            expected = (
                f"{path} has state version 99; this napari-focus reads up to 2. "
                "Update napari-focus, or move the file away to start over."
            )
        else:
            output.write_text("a file where the series folder would be\n")
            expected = f"cannot keep the series in {output / STATE_NAME}: Not a directory"
    open_series(series, other)
    assert series_errors and series_errors[-1].startswith(f"FOCUS series: {expected}")
    assert widget.status.value.startswith(f"error: {expected}")
    if case == "state file not a folder":
        assert series_errors[-1].endswith(
            "Choose a 'series folder' you can write to, then press Open folder again"
        )
    assert series.state is state and series.shown_key == "shown0000.png"
    assert series.open_button.enabled and series.layers_button.enabled
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)


def test_edits_made_while_a_folder_opens_are_kept(
    qtbot, open_series, open_focus_widget, tmp_path, focus_reference, held_scan
):
    """The image on screen stays editable while the next series is scanned: what is
    painted meanwhile is autosaved before the new series replaces it."""
    from napari_focus.gui.series_layers import series_layer

    viewer, widget, state, _large = _scan_held_after_a_small_series(
        qtbot, open_series, open_focus_widget, tmp_path, focus_reference, held_scan
    )
    series = widget.series
    labels = series_layer(viewer, "labels")
    edited = labels.data.copy()
    edited[5:30, 10:50] = 1
    labels.data = edited
    held_scan.release.set()
    qtbot.waitUntil(lambda: not series.loader.busy, timeout=WAIT_MS)
    assert series.state is not state and series.shown_key == "large0000.png"
    assert (state.load_autosaved("small0000.png") > 0).tolist() == (edited > 0).tolist()
    qtbot.waitUntil(lambda: not series.busy, timeout=WAIT_MS)


def test_a_close_napari_then_cancels_leaves_the_series_working(
    qtbot, open_series, open_focus_widget, tmp_path, focus_reference
):
    """The widget lets napari close (its edits saved, its workers stopped); napari's own
    "close the window?" question is then answered No: Open folder, Next and the
    proposals still work."""
    first = _folder(tmp_path, "first", 3, focus_reference)
    second = _folder(tmp_path, "second", 2, focus_reference)
    _viewer, widget = open_focus_widget()
    series = widget.series
    open_series(series, first)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert series.close_guard.allow_close()  # napari asks next; the user says No
    series.next()
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert series.shown_key == "first0001.png"
    open_series(series, second)
    qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
    assert series.shown_key == "second0000.png"
    assert series.open_button.enabled and series.layers_button.enabled
