"""The widget while Run downloads the official checkpoint from a fake hub on 127.0.0.1:
the status line shows the download, Cancel stops it, the next Run continues it."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from test_download import FILENAME, REPO_ID, FakeHub, _hub_env

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

from napari_focus.gui import widget as widget_module  # noqa: E402

SIZE = 6 << 20
WAIT_MS = 60_000
DOWNLOADING = re.compile(rf"^downloading {FILENAME}: (\d+) of 6 MB, [\d.]+ MB/s")


@pytest.fixture
def slow_hub(monkeypatch, tmp_path):
    """6 MB in pieces of 64 KB, 40 ms apart (about 1.6 MB/s), into an empty cache."""
    from huggingface_hub import constants

    payload = np.random.default_rng(11).bytes(SIZE)
    with FakeHub(payload, piece=64 << 10, pause=0.04) as hub:
        _hub_env(monkeypatch, hub.url, offline=False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        yield hub


def _megabytes(status: str) -> int | None:
    match = DOWNLOADING.match(status)
    return int(match.group(1)) if match else None


def test_run_shows_the_download_and_cancel_stops_it(
    qtbot, open_focus_widget, slow_hub, tmp_path, monkeypatch
):
    errors: list[str] = []
    monkeypatch.setattr(widget_module, "show_error", errors.append)
    viewer, widget = open_focus_widget()
    widget.weights_source.value = "official"
    viewer.add_image(np.full((60, 80, 3), 128, np.uint8), rgb=True, name="grey")
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: _megabytes(widget.status.value) is not None, timeout=WAIT_MS)
    first = _megabytes(widget.status.value)
    qtbot.waitUntil(lambda: (_megabytes(widget.status.value) or 0) > first, timeout=WAIT_MS)
    assert widget.progress.max == 0  # the busy indicator

    widget.cancel_button.native.click()
    cancelled_at, served_at_cancel = time.perf_counter(), slow_hub.served
    assert not widget.running and widget.run_button.enabled
    assert widget.status.value == (
        "cancelled; the download stops (the next Run continues it from there)"
    )
    shared = widget.model_section.shared_model
    qtbot.waitUntil(lambda: not shared.loading, timeout=WAIT_MS)  # the worker left the load
    stopped_after = time.perf_counter() - cancelled_at
    served = -1
    while slow_hub.served != served:  # until nothing more goes out for half a second
        served = slow_hub.served
        qtbot.wait(500)
    assert served - served_at_cancel <= 4 * (64 << 10), "the download went on after the cancel"
    print(f"Cancel -> load ended: {stopped_after:.3f} s; served {served_at_cancel} bytes at "
          f"the Cancel, {served} in all, of {SIZE}")  # fmt: skip
    assert served < SIZE
    assert errors == [] and widget.status.value.startswith("cancelled")
    repo = tmp_path / "hub" / ("models--" + REPO_ID.replace("/", "--"))
    assert not (repo / "snapshots").exists() or not any((repo / "snapshots").rglob(FILENAME))
    kept = (repo / "blobs" / f"{slow_hub.etag}.incomplete").stat().st_size
    assert 0 < kept < SIZE

    slow_hub.pause = 0.0
    widget.run_button.native.click()  # continues the download, then reads the served bytes
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert slow_hub.ranges == [f"bytes={kept}-"]
    (path,) = (repo / "snapshots").rglob(FILENAME)
    assert path.read_bytes() == slow_hub.payload
    assert len(errors) == 1 and "is not a PyTorch checkpoint: it starts with" in errors[0]


def test_improve_shows_the_download_of_its_base_and_cancel_stops_it(
    qtbot, open_focus_widget, slow_hub, tmp_path, monkeypatch
):
    """The training process (spawned: it reads the hub settings from the environment)
    downloads the official base weights; the tab shows it, Cancel stops it."""
    from synthetic_shapes import export_shapes

    from napari_focus.gui import improve_section

    errors: list[str] = []
    monkeypatch.setattr(improve_section, "show_error", errors.append)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    _, widget = open_focus_widget()
    widget.weights_source.value = "official"
    root = tmp_path / "datasets"
    export_shapes(root, "duts-tr", 2, seed=3, size=48)
    widget.export_section.dataset_root.value = root
    improve = widget.improve
    improve.steps.value, improve.preset.value = 2, "cpu"
    improve.output.value = tmp_path / "improved.safetensors"
    improve.improve_button.clicked.emit()
    qtbot.waitUntil(lambda: _megabytes(improve.status.value) is not None, timeout=WAIT_MS)
    first = _megabytes(improve.status.value)
    qtbot.waitUntil(lambda: (_megabytes(improve.status.value) or 0) > first, timeout=WAIT_MS)
    improve.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: not improve.running, timeout=WAIT_MS)
    assert improve.status.value == (
        "cancelled; the download of the base weights continues from there with the next Improve"
    )
    assert errors == [] and improve.output.value == tmp_path / "improved.safetensors"
    repo = tmp_path / "hub" / ("models--" + REPO_ID.replace("/", "--"))
    assert 0 < (repo / "blobs" / f"{slow_hub.etag}.incomplete").stat().st_size < SIZE
    assert slow_hub.served < SIZE and not (repo / "snapshots").exists()


def test_the_series_shows_the_download_of_its_model_and_cancel_stops_it(
    qtbot, open_series, open_focus_widget, slow_hub, tmp_path, monkeypatch
):
    from PIL import Image

    from napari_focus.gui import series_section

    errors: list[str] = []
    monkeypatch.setattr(widget_module, "show_error", errors.append)
    monkeypatch.setattr(series_section, "show_error", errors.append)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.new("RGB", (64, 48), (40 * i, 90, 160)).save(images / f"img{i}.png")
    _, widget = open_focus_widget()
    widget.weights_source.value = "official"
    open_series(widget.series, images)
    qtbot.waitUntil(lambda: _megabytes(widget.status.value) is not None, timeout=WAIT_MS)
    first = _megabytes(widget.status.value)
    qtbot.waitUntil(lambda: (_megabytes(widget.status.value) or 0) > first, timeout=WAIT_MS)
    assert widget.cancel_button.enabled
    widget.cancel_button.native.click()
    assert widget.status.value.startswith("cancelled loading the model")
    shared = widget.model_section.shared_model
    qtbot.waitUntil(lambda: not shared.loading, timeout=WAIT_MS)
    qtbot.wait(600)  # the status line's timer has stopped: the cancel is still said
    assert "cancelled" in widget.status.value, widget.status.value
    assert widget.status.value.endswith("press Run to load it")
    assert errors == [] and slow_hub.served < SIZE


def test_run_cancelled_while_the_series_waits_for_the_same_download(
    qtbot, open_series, open_focus_widget, slow_hub, tmp_path, monkeypatch
):
    """Run and the series' proposals share one download: cancelling Run says it goes on
    for the series, which then gets the whole file."""
    from PIL import Image

    from napari_focus.gui import series_section

    errors: list[str] = []
    monkeypatch.setattr(widget_module, "show_error", errors.append)
    monkeypatch.setattr(series_section, "show_error", errors.append)
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64, 48), (40, 90, 160)).save(images / "img0.png")
    viewer, widget = open_focus_widget()
    widget.weights_source.value = "official"
    open_series(widget.series, images)
    qtbot.waitUntil(lambda: _megabytes(widget.status.value) is not None, timeout=WAIT_MS)
    viewer.add_image(np.full((60, 80, 3), 128, np.uint8), rgb=True, name="grey")
    widget.run_button.native.click()
    assert widget.status.value == "starting…"  # then Run's own stage: the shared download
    qtbot.waitUntil(lambda: _megabytes(widget.status.value) is not None, timeout=WAIT_MS)
    assert widget.running
    widget.cancel_button.native.click()
    assert not widget.running
    assert widget.status.value == (
        "Run cancelled; the download goes on for the series' proposals (Cancel stops it)"
    )
    served = slow_hub.served
    qtbot.waitUntil(lambda: slow_hub.served > served + (256 << 10), timeout=WAIT_MS)
    assert widget.cancel_button.enabled  # now stops the series' load
    slow_hub.pause = 0.0
    shared = widget.model_section.shared_model
    qtbot.waitUntil(lambda: not shared.loading and slow_hub.served >= SIZE, timeout=WAIT_MS)
    repo = tmp_path / "hub" / ("models--" + REPO_ID.replace("/", "--"))
    (path,) = (repo / "snapshots").rglob(FILENAME)
    assert path.read_bytes() == slow_hub.payload
    assert slow_hub.ranges == []  # one download, never restarted
    qtbot.waitUntil(lambda: errors != [], timeout=WAIT_MS)
    assert all("is not a PyTorch checkpoint: it starts with" in error for error in errors)


def test_a_model_forgotten_while_its_load_returns_still_reaches_its_caller(monkeypatch):
    """forget() runs on the GUI thread without waiting for a load: a worker whose load
    has just ended gets the model it loaded, never None or an AssertionError."""
    from napari_focus.gui import job
    from napari_focus.run_control import RunControl

    loaded = object()
    shared = job.SharedModel()
    monkeypatch.setattr(job, "load_predictor", lambda *_args, **_how: loaded)
    monkeypatch.setattr(job, "load_stages", lambda *_args: None)

    class ForgetOnCheck(RunControl):
        def check(self) -> None:  # the last check before the model is returned
            shared.forget(loaded)
            super().check()

    key = job.ModelKey("sod", "large", None, "cpu")
    assert shared.get(key, ForgetOnCheck()) is loaded
