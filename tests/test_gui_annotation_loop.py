"""The annotator's loop through the widget: a folder of photos of several sizes, Next and
Previous, Accept into a training split, Improve, and the messages on the way (under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

WAIT_MS = 120_000


@pytest.fixture
def photos(tmp_path, focus_reference):
    """Photos of three sizes, gray and colour, plus a broken file and a macOS ``._`` file."""
    source = np.array(Image.open(focus_reference / "input.png").convert("RGB"))
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(source[:128, :128]).save(folder / "a_large.png")
    Image.fromarray(source[:40, :64].mean(-1).astype(np.uint8)).save(folder / "b_small.png")
    Image.fromarray(source[:64, :96]).save(folder / "c_medium.jpg", quality=90)
    (folder / "d_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "._a_large.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    return folder


def _fits(viewer, image) -> bool:
    """The camera is centred on ``image`` and zoomed so that it fills the canvas."""
    height, width = image.data.shape[:2]
    centre = np.asarray(viewer.scene.camera.center[-2:])
    filled = np.max(np.array([height, width]) * viewer.scene.camera.zoom / viewer.canvas.size)
    return bool(np.allclose(centre, [(height - 1) / 2, (width - 1) / 2], atol=1)) and (
        0.8 < filled <= 1.0
    )


def test_each_image_fills_the_view_whatever_its_size(qtbot, open_focus_widget, photos):
    from napari_focus.gui.series_layers import series_layer

    viewer, widget = open_focus_widget()
    viewer.window.resize(1366, 768)
    series = widget.series
    series.open(photos)
    seen = []
    for move in (series.next, series.next, series.previous):
        qtbot.waitUntil(lambda: series.proposal_ready and not series.busy, timeout=WAIT_MS)
        image = series_layer(viewer, "image")
        seen.append(image.name)
        camera = viewer.scene.camera
        assert _fits(viewer, image), (image.name, camera.center, camera.zoom)
        move()
    assert seen == ["a_large", "b_small", "c_medium"]
    assert [i.name for i in series.state.queue] == ["a_large", "b_small", "c_medium", "d_broken"]
