"""Triton (installed with PyTorch's CUDA builds) is loaded before napari's OpenGL driver
can clash with it, and with its own symbols first (napari_focus.gui.triton_isolation).

A stand-in ``triton`` package records the dlopen flags it was imported under: the real
crash needs the CUDA build of torch and a Mesa driver, which CI does not have.
"""

from __future__ import annotations

import os
import sys

import pytest

napari = pytest.importorskip("napari")

from napari_focus.gui import triton_isolation  # noqa: E402

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="RTLD_DEEPBIND is a glibc flag"
)


@pytest.fixture
def fake_triton(tmp_path, monkeypatch):
    """A ``triton`` package on the path that records ``sys.getdlopenflags()`` at import."""
    package = tmp_path / "site" / "triton"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import sys\nFLAGS = sys.getdlopenflags()\n")
    monkeypatch.syspath_prepend(str(package.parent))
    assert "triton" not in sys.modules
    yield package
    sys.modules.pop("triton", None)  # torch must never see the stand-in


def test_triton_is_imported_with_its_own_symbols_first(fake_triton):
    before = sys.getdlopenflags()
    triton_isolation.load_triton_isolated()
    assert sys.modules["triton"].FLAGS & os.RTLD_DEEPBIND
    assert sys.getdlopenflags() == before


def test_a_broken_triton_is_left_to_torch(fake_triton):
    (fake_triton / "__init__.py").write_text("raise ImportError('libtriton.so: bad ELF')\n")
    triton_isolation.load_triton_isolated()
    assert "triton" not in sys.modules


def test_annotate_loads_triton_before_the_viewer_opens(make_napari_viewer, monkeypatch):
    from napari_focus.gui import annotate

    calls: list[str] = []
    monkeypatch.setattr(triton_isolation, "load_triton_isolated", lambda: calls.append("triton"))

    def viewer(show=True):
        calls.append("viewer")
        return make_napari_viewer()

    monkeypatch.setattr(napari, "Viewer", viewer)
    annotate.open_viewer(show=False)
    assert calls[:2] == ["triton", "viewer"]


def test_the_widget_loads_triton_when_docked_into_a_running_napari(
    make_napari_viewer, monkeypatch
):
    from napari_focus.gui import widget as widget_module

    calls: list[str] = []
    monkeypatch.setattr(widget_module, "load_triton_isolated", lambda: calls.append("triton"))
    viewer = make_napari_viewer()
    viewer.window.add_plugin_dock_widget("napari-focus", "FOCUS")
    assert calls == ["triton"]
