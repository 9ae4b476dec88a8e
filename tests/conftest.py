"""Shared fixtures: the FOCUS reference folder and tiny models built from it."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _reference_dir() -> Path | None:
    candidates = [
        os.environ.get("FOCUS_REFERENCE"),
        REPO_ROOT.parent / "shared" / "focus-reference",
        REPO_ROOT / "shared" / "focus-reference",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "cases.json").is_file():
            return Path(candidate)
    return None


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def remembered_settings_folder(tmp_path_factory, monkeypatch) -> Path:
    """Each test remembers the Model tab's choices in a folder of its own: none sees the
    user's settings or another test's."""
    folder = tmp_path_factory.mktemp("config")
    monkeypatch.setenv("NAPARI_FOCUS_CONFIG_DIR", str(folder))
    return folder


MISSING_REFERENCE = (
    "FOCUS reference fixtures not found: put the project's shared/focus-reference folder "
    "beside the checkout (../shared/focus-reference) or set FOCUS_REFERENCE to it"
)


@pytest.fixture(scope="session")
def focus_reference() -> Path:
    path = _reference_dir()
    if path is None:
        if _under_ci():  # CI must test against the fixtures, never pass by skipping them
            pytest.fail(f"{MISSING_REFERENCE} (CI=true: an error, not a skip)", pytrace=False)
        pytest.skip(MISSING_REFERENCE)
    return path


def tiny_architecture(reference: Path, case: str) -> dict:
    spec = json.loads((reference / "cases.json").read_text())[case]
    return {**spec["preset"], **spec["head"]}


def tiny_state_dict(reference: Path, case: str) -> dict[str, torch.Tensor]:
    """Official-key tiny weights (including training-only keys), as float32."""
    from safetensors.torch import load_file

    weights = {
        **load_file(reference / "weights_edge.safetensors"),
        **load_file(reference / f"{case}_weights.safetensors"),
    }
    return {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}


@pytest.fixture(scope="session")
def tiny_mlp(focus_reference: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    return tiny_architecture(focus_reference, "tiny_mlp"), tiny_state_dict(
        focus_reference, "tiny_mlp"
    )


@pytest.fixture(scope="session")
def tiny_swiglu(focus_reference: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    return (
        tiny_architecture(focus_reference, "tiny_swiglu"),
        tiny_state_dict(focus_reference, "tiny_swiglu"),
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_mlp) -> Path:
    """The tiny MLP case as an inference checkpoint (.safetensors with metadata)."""
    from napari_focus import FocusPredictor

    arch, state = tiny_mlp
    predictor = FocusPredictor.from_state_dict(state, "sod", architecture=arch, device="cpu")
    path = tmp_path_factory.mktemp("weights") / "tiny_mlp.safetensors"
    return predictor.save_inference_checkpoint(path, dtype=torch.float32)


@pytest.fixture
def open_focus_widget(make_napari_viewer, tiny_checkpoint):
    """Opens a napari viewer with the FOCUS widget docked from the manifest, set to the
    tiny checkpoint on the CPU; returns ``(viewer, widget)``."""

    def open_() -> tuple:
        viewer = make_napari_viewer()
        _, widget = viewer.window.add_plugin_dock_widget("napari-focus", "FOCUS")
        widget.weights_source.value = "file"
        widget.weights_path.value = tiny_checkpoint
        widget.device.value = "cpu"
        return viewer, widget

    return open_


@pytest.fixture
def slow_first_build(monkeypatch):
    """This process's CPU kernel set aside, and a first build of it that lasts until the
    test sets the returned event (it yields the PyTorch reference as the kernel).
    Yields ``(release, started, builder_threads)``."""
    from napari_focus.ops import build
    from napari_focus.ops.reference import ms_deform_attn_torch

    release, started = threading.Event(), threading.Event()
    builder_threads: list[threading.Thread] = []

    def compile_for_a_while(kind: str):
        build.state(kind).compiling = True
        build._announce(kind, "build-started", f"{build.BUILD_STARTED}: CPU, into the cache")
        builder_threads.append(threading.current_thread())
        started.set()
        assert release.wait(60), "the test never released the build"
        return ms_deform_attn_torch, True

    monkeypatch.setattr(build, "_compile", compile_for_a_while)
    monkeypatch.setattr(build, "unavailable_reason", lambda kind: None)
    monkeypatch.setattr(build, "is_cached", lambda kind: False)
    monkeypatch.setitem(build._STATES, "cpu", build.KernelState("cpu"))
    monkeypatch.setattr(build, "_BACKGROUND", {})
    yield release, started, builder_threads
    release.set()


@pytest.fixture
def series_errors(monkeypatch) -> list[str]:
    """The error messages the widget's Series tab shows (napari's notifications)."""
    from napari_focus.gui import series_section

    seen: list[str] = []
    monkeypatch.setattr(series_section, "show_error", seen.append)
    return seen


@pytest.fixture
def open_series(qtbot):
    """``open_series(section, folder)``: the Series tab's Open folder (or, without a
    folder and with ``layers=True``, Queue open layers), waiting until the worker has
    loaded the series and it is on screen (or its error said)."""

    def open_(section, folder=None, *, layers: bool = False, timeout: int = 60_000) -> None:
        if layers:
            section.open_layers()
        else:
            section.open(folder)
        qtbot.waitUntil(lambda: not section.loader.busy, timeout=timeout)

    return open_


@pytest.fixture
def shown_series(qtbot, open_series, open_focus_widget):
    """``show(folder)``: a new napari whose FOCUS widget's Series tab (no proposals
    computed ahead) opened ``folder``, once its first proposal is on screen; returns
    ``(viewer, widget, series)``."""

    def show(folder, timeout: int = 120_000) -> tuple:
        viewer, widget = open_focus_widget()
        series = widget.series
        series.prefetch.value = False
        open_series(series, folder)
        qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=timeout)
        return viewer, widget, series

    return show


@pytest.fixture
def photo_crops(tmp_path, focus_reference):
    """``make(count)``: a folder ``images`` of ``count`` 96x64 crops of the reference
    photo, ``img0.png``, ``img1.png``..., each shifted 20 pixels from the one before."""
    from PIL import Image

    def make(count: int) -> Path:
        source = Image.open(focus_reference / "input.png").convert("RGB")
        images = tmp_path / "images"
        images.mkdir()
        for i in range(count):
            source.crop((i * 20, 0, i * 20 + 96, 64)).save(images / f"img{i}.png")
        return images

    return make


@pytest.fixture
def store_loads(monkeypatch) -> list[str]:
    """The names of the threads that read a stored series proposal."""
    from napari_focus.series.proposal_store import ProposalStore

    loads: list[str] = []
    real = ProposalStore.load

    def recorded(store, key, source):
        loads.append(threading.current_thread().name)
        return real(store, key, source)

    monkeypatch.setattr(ProposalStore, "load", recorded)
    return loads


@pytest.fixture
def predict_threads(monkeypatch) -> list[str]:
    """The names of the threads that ran FocusPredictor.predict."""
    from napari_focus.predictor import FocusPredictor

    threads: list[str] = []
    original = FocusPredictor.predict

    def recording(self, image, **kwargs):
        threads.append(threading.current_thread().name)
        return original(self, image, **kwargs)

    monkeypatch.setattr(FocusPredictor, "predict", recording)
    return threads
