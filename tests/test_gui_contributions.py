"""The plugin's napari contributions other than the dock: the Labels writer, the sample
images, ``napari-focus annotate``'s viewer, and how image layers are read as planes."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

from napari_focus.gui.widget import FocusWidget  # noqa: E402


def test_writer_saves_png_and_tiff(tmp_path):
    import tifffile
    from PIL import Image

    from napari_focus.gui.writer import write_labels

    mask = np.zeros((40, 50), np.int32)
    mask[5:20, 10:30] = 1
    (png,) = write_labels(str(tmp_path / "m.png"), mask, {"name": "m"})
    np.testing.assert_array_equal(np.array(Image.open(png)), mask * 255)
    (tif,) = write_labels(str(tmp_path / "s.tif"), np.stack([mask, mask]), {"name": "s"})
    assert tifffile.imread(tif).shape == (2, 40, 50)
    with pytest.raises(OSError, match=r"save it as \.tif"):
        write_labels(str(tmp_path / "s.png"), np.stack([mask, mask]), {"name": "s"})
    (tmp_path / "x.png").write_bytes(b"the user's own file")
    with pytest.raises(OSError, match=r"choose a file name ending in \.png or \.tif"):
        write_labels(str(tmp_path / "x.jpg"), mask, {"name": "x"})  # never x.png instead
    assert (tmp_path / "x.png").read_bytes() == b"the user's own file"


def test_writer_refuses_to_merge_the_labels_of_another_layer(
    make_napari_viewer, tmp_path
):
    from napari_focus.gui.writer import write_labels

    viewer = make_napari_viewer()
    cells = np.zeros((30, 40), np.int32)
    cells[2:10, 2:10], cells[15:25, 20:30] = 1, 3
    viewer.add_labels(cells, name="cells")
    with pytest.raises(OSError, match=r"holds several labels \(ids 1 to 3\).*napari builtins"):
        viewer.layers.save(str(tmp_path / "cells.png"))  # as File > Save Selected Layers
    assert not list(tmp_path.iterdir())
    # one label (any id), or a mask of this plugin painted with a second label: one mask
    (one,) = write_labels(str(tmp_path / "one.png"), (cells > 0) * 7, {"name": "one"})
    focus = {"name": "sod proposal", "metadata": {"napari_focus": {"task": "sod"}}}
    (mask,) = write_labels(str(tmp_path / "mask.png"), cells, focus)
    from PIL import Image

    for path in (one, mask):
        np.testing.assert_array_equal(np.array(Image.open(path)), (cells > 0) * 255)


def test_sample_data_is_bundled():
    from napari_focus.gui import samples

    for make in (samples.coffee, samples.chelsea, samples.astronaut):
        ((data, meta, kind),) = make()
        assert data.ndim == 3 and kind == "image" and meta["name"]


def test_annotate_opens_viewer_with_widget_and_images(make_napari_viewer, tmp_path, monkeypatch):
    from PIL import Image

    from napari_focus.gui import annotate
    from napari_focus.input_files import collect_inputs

    for name in ("a", "b"):
        Image.fromarray(np.full((40, 50, 3), 100, np.uint8)).save(tmp_path / f"{name}.png")
    monkeypatch.setattr(napari, "Viewer", lambda show=True: make_napari_viewer())
    paths, unmatched = collect_inputs([str(tmp_path / "a.png"), str(tmp_path / "b.png")])
    viewer, widget = annotate.open_viewer(paths, show=False)
    assert not unmatched
    assert isinstance(widget, FocusWidget)
    assert [layer.name for layer in viewer.layers] == ["a", "b"]
    assert viewer.layers["a"].rgb and viewer.layers["a"].metadata["path"].endswith("a.png")
    assert widget.image.value == "a"


def test_annotate_options_set_the_model_tab_which_the_next_session_recalls(
    make_napari_viewer, qtbot, tiny_checkpoint, tmp_path, monkeypatch, remembered_settings_folder
):
    import json
    import shutil

    from napari_focus.cli import build_parser
    from napari_focus.cli_annotate import model_choices
    from napari_focus.gui import annotate

    checkpoint = tmp_path / "my weights" / "tuned.safetensors"
    checkpoint.parent.mkdir()
    shutil.copy(tiny_checkpoint, checkpoint)
    args = build_parser().parse_args(
        ["annotate", "--task", "COD", "--weights", str(checkpoint), "--device", "cpu"]
    )
    monkeypatch.setattr(napari, "Viewer", lambda show=True: make_napari_viewer())
    for device in ("cuda", "gpu"):  # the Model tab's name of the first GPU
        gpu = build_parser().parse_args(["annotate", "--device", device])
        assert model_choices(gpu) == {"device": "cuda:0"}
    _, widget = annotate.open_viewer(model=model_choices(args), show=False)
    chosen = (widget.task.value, widget.weights_source.value, widget.weights_path.value)
    assert chosen == ("cod", "file", checkpoint) and widget.device.value == "cpu"
    widget.tta.value = True

    saved = remembered_settings_folder / "model_settings.json"
    qtbot.waitUntil(lambda: saved.exists() and json.loads(saved.read_text())["tta"], timeout=3000)
    assert json.loads(saved.read_text())["weights_path"] == str(checkpoint)
    assert saved.stat().st_mode & 0o777 == 0o666 & ~_umask()
    _, again = make_napari_viewer().window.add_plugin_dock_widget("napari-focus", "FOCUS")
    recalled = (again.task.value, again.weights_source.value, again.weights_path.value)
    assert recalled == chosen and again.device.value == "cpu" and again.tta.value

    checkpoint.unlink()  # moved away since: the official weights, as at the first start
    _, third = make_napari_viewer().window.add_plugin_dock_widget("napari-focus", "FOCUS")
    assert (third.task.value, third.weights_source.value) == ("cod", "official")
    saved.write_text("{not json")  # damaged: the defaults, no error
    _, fourth = make_napari_viewer().window.add_plugin_dock_widget("napari-focus", "FOCUS")
    assert (fourth.task.value, fourth.weights_source.value) == ("sod", "official")


def test_a_path_typed_key_by_key_is_remembered_once_and_a_close_writes_the_last(
    make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch
):
    from napari_focus.gui import model_memory

    written = []
    monkeypatch.setattr(model_memory, "write_values", written.append)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-focus", "FOCUS")
    typed = str(tiny_checkpoint)
    for end in range(len(typed) - 8, len(typed) + 1):  # the last keys of a path
        widget.weights_path.value = typed[:end]
    qtbot.waitUntil(lambda: len(written) > 0, timeout=3000)
    qtbot.wait(2 * model_memory.SETTLE_MS)
    assert [values["weights_path"] for values in written] == [typed]
    widget.tta.value = True  # then napari closes at once
    viewer.window.remove_dock_widget(widget.native)
    widget.native.deleteLater()
    qtbot.waitUntil(lambda: len(written) == 2, timeout=3000)
    assert written[1]["tta"] is True


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_layer_planes_multiscale_stacks_and_unsupported():
    from napari.layers import Image, Labels

    from napari_focus.gui.planes import UnsupportedLayerError, layer_planes

    base = np.arange(64 * 80, dtype=np.uint16).reshape(64, 80)
    planes = layer_planes(Image([base, base[::2, ::2]], multiscale=True))
    assert planes.spatial_shape == (64, 80) and not planes.is_stack
    np.testing.assert_array_equal(planes.plane(()), base)  # highest resolution
    stack = layer_planes(Image(np.zeros((3, 40, 50, 3), np.uint8), rgb=True))
    assert stack.spatial_shape == (3, 40, 50) and stack.is_stack
    assert stack.plane((2,)).shape == (40, 50, 3) and len(stack.all_indices()) == 3
    with pytest.raises(UnsupportedLayerError, match="Labels layer"):
        layer_planes(Labels(np.zeros((40, 40), np.uint8), name="mask"))


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_ctrl_c_in_the_terminal_closes_annotate_as_the_close_button_does(
    tiny_checkpoint, focus_reference, tmp_path, signum
):
    """Ctrl-C closes napari as its close button does (napari alone quits its event loop
    with no close: the series' unsaved edits and its open-marker stayed), and the
    command exits 130."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from PIL import Image

    from napari_focus.series.presence import MARK_PREFIX

    if not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        pytest.skip("no display to open napari on")
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.open(focus_reference / "input.png").convert("RGB").save(folder / "a.png")
    env = {**os.environ, "NAPARI_FOCUS_CONFIG_DIR": str(tmp_path / "config"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # fmt: skip
    child = subprocess.Popen(
        [sys.executable, "-m", "napari_focus", "annotate", str(folder), "--weights",
         str(tiny_checkpoint), "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        def proposed() -> bool:  # the series is open and its first proposal computed
            return bool(list(folder.rglob(f"{MARK_PREFIX}*"))) and any(
                p.is_file() for p in folder.rglob("proposals/**/*")
            )

        while not proposed():
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()
            time.sleep(0.2)
        time.sleep(3)  # napari idle: only Qt's event loop runs
        child.send_signal(getattr(signal, signum))
        _out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 128 + getattr(signal, signum), err
    assert not list(folder.rglob(f"{MARK_PREFIX}*")), err  # left as on a close
    assert "napari-focus: interrupted: napari was closed" in err
