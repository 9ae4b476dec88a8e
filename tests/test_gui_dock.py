"""The dock on a 1366x768 laptop screen: size, reachability, tooltips, shortcuts, undo,
stages and cancel (run under `xvfb-run -s "-screen 0 1366x768x24"`)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from skimage.transform import resize

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

from napari_focus.gui import dialogs  # noqa: E402
from napari_focus.gui.samples import coffee  # noqa: E402
from napari_focus.gui.shortcuts import SHORTCUTS  # noqa: E402

WAIT_MS = 120_000


@pytest.fixture
def small_coffee() -> np.ndarray:
    image = coffee()[0][0]
    return (resize(image, (60, 90), anti_aliasing=True) * 255).astype(np.uint8)


def _shown_window(qtbot, widget):
    from qtpy.QtWidgets import QApplication

    window = widget.native.window()
    window.show()
    window.resize(1366, 768)
    qtbot.wait(300)
    return window, QApplication.primaryScreen().availableGeometry()


def test_dock_fits_the_screen_after_a_long_error(qtbot, open_focus_widget, monkeypatch):
    from napari_focus.gui import widget as widget_module

    monkeypatch.setattr(widget_module, "show_error", lambda text: None)
    _viewer, widget = open_focus_widget()
    window, available = _shown_window(qtbot, widget)
    from qtpy.QtCore import QRect

    screen = available.intersected(QRect(0, 0, 1366, 768))  # a laptop, at most
    opened_width = widget.native.width()
    from qtpy.QtWidgets import QScrollArea

    for title, section in widget.sections.items():
        widget.show_section(title)
        qtbot.wait(50)
        scroll = section.native.parentWidget()
        while not isinstance(scroll, QScrollArea):
            scroll = scroll.parentWidget()
        needed = section.native.minimumSizeHint().width()
        assert needed <= scroll.viewport().width(), f"the {title} tab is cut at the right"
    long_words = " ".join(["unreachable-host.example.org/" + "x" * 120] * 30)
    widget.report_error(OSError(long_words))
    widget.series.quality.value = "q" * 2000
    widget.export_section.result_label.value = "e" * 2000
    qtbot.wait(300)
    assert widget.native.width() <= opened_width
    assert widget.native.height() <= screen.height()
    assert window.frameGeometry().width() <= screen.width() + 16
    assert window.frameGeometry().height() <= screen.height() + 40
    assert long_words in widget.status.native.toolTip()  # the full text stays readable
    improve_status = widget.improve.status
    widget.show_section("Improve")
    improve_status.value = (
        "done: IoU 0.966 -> 0.966; no step beat the starting weights on the held-out images, "
        "so the new file holds them; tuned.safetensors " * 3
    )
    qtbot.wait(100)
    shown = improve_status.native.text()
    assert shown.endswith("…") and len(shown) < len(improve_status.value)
    native = improve_status.native
    assert native.heightForWidth(native.width()) <= native.maximumHeight()  # nothing cut

    from qtpy.QtCore import QRect, Qt

    path = "/home/annotator/datasets/napari_focus_models/focus_sod_20261124-073641.safetensors"
    improve_status.value = f"using {path}; re-proposing 7 series images"
    qtbot.wait(100)
    shown = native.text()
    assert shown.replace("\u200b", "") == improve_status.value  # all of it, wrapped
    box = native.fontMetrics().boundingRect(
        QRect(0, 0, native.width(), 10_000), int(Qt.TextFlag.TextWordWrap), shown
    )
    assert box.width() <= native.width()  # the path wraps: no line runs past the edge


def test_every_series_button_is_reachable(qtbot, open_focus_widget):
    from qtpy.QtWidgets import QScrollArea

    _viewer, widget = open_focus_widget()
    _shown_window(qtbot, widget)
    widget.show_section("Series")
    area = widget.tabs.currentWidget()
    assert isinstance(area, QScrollArea)
    series = widget.series
    for button in [series.open_button, series.layers_button, *series._buttons()]:
        area.ensureWidgetVisible(button.native)
        qtbot.wait(20)
        assert not button.native.visibleRegion().isEmpty(), button.text
    footer = widget.footer.native
    assert not footer.visibleRegion().isEmpty()  # Run / Cancel / status: always visible



def test_a_dock_dragged_narrow_cuts_no_control(qtbot, open_focus_widget):
    """Dragging the dock's edge as far as it goes leaves every tab whole: buttons such
    as Skip and the folder fields' "…" are never cut off at the right."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QAbstractButton, QDockWidget, QWidget

    _viewer, widget = open_focus_widget()
    window, _screen = _shown_window(qtbot, widget)
    dock = widget.native.parent()
    while not isinstance(dock, QDockWidget):
        dock = dock.parent()
    window.resizeDocks([dock], [120], Qt.Orientation.Horizontal)  # as narrow as it goes
    qtbot.wait(200)
    for title in widget.sections:
        widget.show_section(title)
        qtbot.wait(50)
        area = widget.tabs.currentWidget()
        for control in area.widget().findChildren(QWidget):
            if not control.isVisible() or not isinstance(control, QAbstractButton):
                continue
            area.ensureWidgetVisible(control)
            qtbot.wait(10)
            seen = control.visibleRegion().boundingRect()
            assert seen.width() == control.width(), f"{title}: '{control.text()}' cut off"


def test_tooltips_enabled_states_and_shortcuts(qtbot, open_focus_widget, small_coffee):
    from magicgui.widgets import Label
    from napari.utils.key_bindings import KeyBinding

    viewer, widget = open_focus_widget()
    controls = [widget.run_button, widget.cancel_button]
    for section in widget.sections.values():
        stack = [section]
        while stack:
            item = stack.pop()
            children = getattr(item, "_list", None)
            if children is not None and not hasattr(item, "mode"):  # a container
                stack.extend(children)
            elif not isinstance(item, Label):
                controls.append(item)
    missing = [getattr(c, "label", None) or c for c in controls if not c.tooltip]
    assert not missing, f"controls without a tooltip: {missing}"

    assert not widget.run_button.enabled  # no image yet
    assert not widget.export_section.export_button.enabled  # no proposal yet
    viewer.add_image(small_coffee, name="cup")
    assert widget.run_button.enabled

    for key, _text, _path in SHORTCUTS:
        assert KeyBinding.from_str(key) in viewer.keymap, key
    assert "Shift+N" in widget.series.next_button.tooltip
    viewer.keymap[KeyBinding.from_str("Shift-R")](viewer)  # = pressing Run
    assert widget.running
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert "cup [FOCUS SOD]" in viewer.layers
    assert widget.export_section.export_button.enabled

    widget.native.close()
    widget.native.deleteLater()
    qtbot.waitUntil(lambda: KeyBinding.from_str("Shift-N") not in viewer.keymap, timeout=5000)


def test_undo_after_a_refinement_gives_the_refinement(
    qtbot, open_focus_widget, small_coffee, monkeypatch
):
    from napari_focus.mask_ops import Refinement, refine

    viewer, widget = open_focus_widget()
    viewer.add_image(small_coffee, name="cup")
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    labels = viewer.layers["cup [FOCUS SOD]"]
    state = labels.metadata["napari_focus"]
    labels.paint((5, 5), 1)  # a stroke, recorded in napari's undo history
    labels.paint((30, 40), 0)
    monkeypatch.setattr(dialogs, "ask_yes_no", lambda _parent, _question: True)
    widget.official.value = False
    widget.threshold.value = 0.35
    qtbot.waitUntil(lambda: widget.refine_section.idle, timeout=WAIT_MS)
    expected = refine(state["probability"], state["official_mask"], Refinement(threshold=0.35))
    np.testing.assert_array_equal(labels.data, expected)
    labels.undo()  # Ctrl+Z
    np.testing.assert_array_equal(labels.data, expected)

    labels.paint((20, 20), 1)
    widget.refine_section.reset_button.native.click()  # Shift+O: back to the proposal
    np.testing.assert_array_equal(labels.data, expected)
    labels.undo()
    np.testing.assert_array_equal(labels.data, expected)


def test_run_shows_stages_and_cancel_stops_inside_the_forward(
    qtbot, open_focus_widget, small_coffee, monkeypatch
):
    import threading
    import time

    from napari_focus.model.vit import Block

    viewer, widget = open_focus_widget()
    viewer.add_image(small_coffee, name="cup")
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)  # model loaded
    entered = threading.Event()
    cancelled = threading.Event()
    blocks_after_cancel: list[int] = []
    original = Block.forward

    def slow_block(self, x):
        entered.set()
        if cancelled.is_set():
            blocks_after_cancel.append(1)
        time.sleep(0.5)  # Cancel comes in the second of the tiny model's four blocks
        return original(self, x)

    monkeypatch.setattr(Block, "forward", slow_block)
    viewer.layers.remove("cup [FOCUS SOD]")
    viewer.layers.remove("cup [FOCUS SOD] probability")
    widget.run()
    qtbot.waitUntil(entered.is_set, timeout=WAIT_MS)
    qtbot.wait(600)
    assert widget.status.value.startswith("segmenting —") and widget.status.value.endswith(" s")
    cancelled.set()
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    # the forward stops at the next block, not after the remaining two
    assert len(blocks_after_cancel) <= 1, f"{len(blocks_after_cancel)} blocks ran after Cancel"
    assert widget.status.value == "cancelled"
    assert "cup [FOCUS SOD]" not in viewer.layers


def test_cancel_during_the_first_kernel_build_stops_at_once(
    qtbot, open_focus_widget, small_coffee, slow_first_build
):
    """The first Run on a machine compiles the deformable-attention kernel (a minute or
    two): its stage is shown, Cancel ends the Run without waiting for the compiler, and
    the next Run uses the kernel that build made."""
    from napari_focus.ops import build

    release, started, builder_threads = slow_first_build
    viewer, widget = open_focus_widget()
    viewer.add_image(small_coffee, name="cup")
    widget.run()
    qtbot.waitUntil(started.is_set, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: widget.status.value.startswith(build.BUILD_STARTED), timeout=5000)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert not release.is_set() and builder_threads[0].is_alive()  # still compiling
    assert widget.status.value == "cancelled"
    assert "cup [FOCUS SOD]" not in viewer.layers

    release.set()
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert "cup [FOCUS SOD]" in viewer.layers and len(builder_threads) == 1


def test_readme_lists_the_shortcuts():
    from pathlib import Path

    from napari_focus.gui.shortcuts import shortcut_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert shortcut_table() in readme


def test_errors_speak_the_widget_s_words():
    from napari_focus.checkpoints import CheckpointNotAvailable
    from napari_focus.gui.job import gui_message

    error = CheckpointNotAvailable(
        "not in the cache and the hub could not be reached. Either download it once",
        "focus_large_sod.pth",
    )
    assert "load it with `--weights /path/to/focus_large_sod.pth`" in str(error)  # CLI words
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
    text = gui_message(error)
    assert "--weights" not in text
    assert "'local checkpoint' in the Model tab and pick focus_large_sod.pth" in text

    from pathlib import Path

    from napari_focus.checkpoint_identity import CheckpointSizeMismatch, HubFileMismatch

    served = Path("/c/models--geshang--focus_large_sod/snapshots/c0/focus_large_sod.pth")
    mismatch = CheckpointSizeMismatch("x", "giant", "large", "by its shapes", recorded=False)
    error = HubFileMismatch(mismatch, "geshang/focus_large_sod", served)
    assert "--weights" in str(error)
    text = gui_message(error)
    assert "--weights" not in text and "--size" not in text
    assert "delete the folder /c/models--geshang--focus_large_sod to download it again" in text
    assert "'local checkpoint' in the Model tab and pick a file you trust" in text


def _cup_proposed(qtbot, open_focus_widget, small_coffee, tmp_path):
    """The Export tab of a widget whose Run proposed a mask for the layer "cup", exports
    going to ``tmp_path/datasets`` in the generic layout."""
    viewer, widget = open_focus_widget()
    viewer.add_image(small_coffee, name="cup")
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    export = widget.export_section
    export.dataset_root.value = tmp_path / "datasets"
    export.dataset_layout.value = "generic"
    return export


def test_export_asks_in_the_dialog_s_words(
    qtbot, open_focus_widget, small_coffee, tmp_path, monkeypatch
):
    export = _cup_proposed(qtbot, open_focus_widget, small_coffee, tmp_path)
    export.policy.value = "ask"
    outcomes: list = []
    export.export(on_done=outcomes.append)
    qtbot.waitUntil(lambda: len(outcomes) == 1 and not export.busy, timeout=WAIT_MS)
    questions: list[str] = []
    monkeypatch.setattr(dialogs, "ask_policy", lambda _, q: questions.append(q) or None)
    export.export(on_done=outcomes.append)  # the same sample again: the dialog asks
    qtbot.waitUntil(lambda: len(outcomes) == 2, timeout=WAIT_MS)
    assert outcomes[1] is None and export.result_label.value == "export cancelled"
    assert len(questions) == 1 and "sample 'cup' already exists" in questions[0]
    assert "on_exists" not in questions[0] and "What should happen?" in questions[0]

    export.sample_name.value = "z" * 120
    export.export(on_done=outcomes.append)
    qtbot.waitUntil(lambda: not export.busy, timeout=WAIT_MS)
    assert export.result_label.value == (
        f"error: sample name '{'z' * 19}…{'z' * 20}' is too long (120 characters; at most "
        "100 characters and 150 UTF-8 bytes): type a shorter or other name under 'sample "
        "name' in the Export tab, then export again"
    )
    export.sample_name.value = ""
    (tmp_path / "a_file").write_text("not a folder")
    export.dataset_root.value = tmp_path / "a_file"
    export.export(on_done=outcomes.append)
    assert outcomes[-1] is None and export.result_label.value == (
        f"error: the dataset root {tmp_path / 'a_file'} is a file, not a folder: choose the "
        "FOCUS datasets/ folder under 'dataset root' in the Export tab"
    )
    export.dataset_root.value = tmp_path / "datasets"  # the error's line goes with it
    assert export.result_label.value == ""


def test_an_image_named_too_long_for_a_sample_is_offered_a_name_that_fits(
    qtbot, open_focus_widget, small_coffee, tmp_path
):
    """A photo's file name of 151 characters: the Export tab offers a shortened name,
    so Accept works without typing one (a name typed too long is still refused)."""
    from napari_focus.datasets import fitting_name, get_layout

    viewer, widget = open_focus_widget()
    long_name = "Grüße aus dem Urlaub " * 7 + "Tag 1"
    viewer.add_image(small_coffee, name=long_name)
    widget.image.value = long_name
    export = widget.export_section
    fitted = fitting_name(long_name, get_layout(export.dataset_layout.value))
    assert export.sample_name.value == fitted != long_name
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    export.dataset_root.value = tmp_path / "datasets"
    outcomes: list = []
    export.export(on_done=outcomes.append)
    qtbot.waitUntil(lambda: len(outcomes) == 1 and not export.busy, timeout=WAIT_MS)
    assert outcomes[0] is not None and outcomes[0].name.startswith("Grüße_aus_dem_Urlaub_")


def test_weights_of_another_task_ask_before_their_mask_goes_into_the_task_s_split(
    qtbot, open_focus_widget, small_coffee, tmp_path, monkeypatch
):
    """Task COD with weights recorded for SOD: the mask shows salient objects, so
    exporting it into cod10k-train asks first (the Model tab warned already)."""
    from napari_focus.gui import dialogs

    questions: list[str] = []
    monkeypatch.setattr(dialogs, "ask_yes_no", lambda _, q, **_kw: questions.append(q) or False)
    viewer, widget = open_focus_widget()
    viewer.add_image(small_coffee, name="cup")
    widget.task.value = "cod"
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    export = widget.export_section
    export.dataset_root.value = tmp_path / "datasets"
    assert export.dataset_layout.value == "cod10k-train"
    outcomes: list = []
    export.export(on_done=outcomes.append)
    assert outcomes == [None] and len(questions) == 1
    assert "'cup' was made for salient objects (SOD)" in questions[0]
    assert not (tmp_path / "datasets").exists()


def test_an_export_that_cannot_write_says_so_in_the_export_tab_s_words(
    qtbot, open_focus_widget, small_coffee, tmp_path, monkeypatch
):
    """The dataset root's lock cannot be created (here a folder stands where the lock
    file goes): the message names the file and the cause in plain words, not Python's."""
    from napari_focus.gui import export_section

    errors: list[str] = []
    monkeypatch.setattr(export_section, "show_error", errors.append)
    viewer, widget = open_focus_widget()
    viewer.add_image(small_coffee, name="cup")
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    root = tmp_path / "datasets"
    (root / ".napari_focus.lock").mkdir(parents=True)
    export = widget.export_section
    export.dataset_root.value = root
    outcomes: list = []
    export.export(on_done=outcomes.append)
    qtbot.waitUntil(lambda: len(outcomes) == 1 and not export.busy, timeout=WAIT_MS)
    assert outcomes == [None] and len(errors) == 1
    assert errors[0] == (
        f"FOCUS export: cannot create or open the lock file in {root}: Is a directory. Your "
        "mask is still in the viewer: free some space or choose another dataset root, then "
        "export again"
    )
    assert "Errno" not in export.result_label.value
    assert "cup [FOCUS SOD]" in [layer.name for layer in viewer.layers]


def test_run_with_an_empty_checkpoint_field_says_to_choose_one(open_focus_widget, small_coffee):
    viewer, widget = open_focus_widget()
    viewer.add_image(small_coffee, name="cup")
    widget.weights_path.line_edit.value = ""  # the field emptied: it holds "."
    with pytest.raises(ValueError, match=r"^choose a checkpoint file") as error:
        widget.model_key()
    assert "'.'" not in str(error.value)
    assert "under 'checkpoint' in the Model tab first" in str(error.value)
    widget.weights_path.value = folder = Path.cwd()
    with pytest.raises(ValueError, match=f"^'{folder}' is a folder: choose the checkpoint"):
        widget.model_key()


def test_an_export_that_ends_after_the_widget_was_deleted_reports_to_nobody(
    qtbot, open_focus_widget, small_coffee, tmp_path, monkeypatch
):
    """napari deletes its dock widgets while an export still writes: the export's end
    touches none of the deleted controls (no error from Qt's event loop)."""
    import threading

    from napari_focus.gui import export_section

    viewer, widget = open_focus_widget()
    viewer.add_image(small_coffee, name="cup")
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    writing, release, written = threading.Event(), threading.Event(), threading.Event()
    real = export_section.export_sample

    def held(*args, **kwargs):
        writing.set()
        release.wait(30)
        try:
            return real(*args, **kwargs)
        finally:
            written.set()

    monkeypatch.setattr(export_section, "export_sample", held)
    export = widget.export_section
    export.dataset_root.value = tmp_path / "datasets"
    outcomes: list = []
    export.export(on_done=outcomes.append)
    assert writing.wait(30)
    with qtbot.waitSignal(widget.native.destroyed, timeout=WAIT_MS):
        widget.native.deleteLater()
    release.set()
    assert written.wait(30)
    qtbot.wait(300)  # the worker's end is delivered (to nobody) here
    assert outcomes == []
    assert list((tmp_path / "datasets").rglob("cup*.png"))  # the sample was written


def test_the_kernels_line_is_filled_from_a_worker(qtbot, open_focus_widget, monkeypatch):
    """On a CUDA machine the kernels line initialises CUDA and runs nvcc: seconds that
    opening the widget must not wait for on the GUI thread."""
    import threading

    from napari_focus.gui import model_section

    threads: list[threading.Thread] = []

    def status_text() -> str:
        threads.append(threading.current_thread())
        return "CPU loaded, CUDA unavailable"

    monkeypatch.setattr(model_section, "kernel_status_text", status_text)
    _, widget = open_focus_widget()
    qtbot.waitUntil(lambda: widget.kernels.value == "CPU loaded, CUDA unavailable", timeout=10_000)
    assert threads and threads[0] is not threading.main_thread()


def test_export_reads_the_image_pixels_in_its_worker(
    qtbot, open_focus_widget, small_coffee, tmp_path, monkeypatch
):
    """A dask or zarr layer reads its plane from disk: the export's worker does that,
    as Run's does, not napari's thread."""
    import threading

    from napari_focus.gui import export_section as module

    readers: list[threading.Thread] = []
    layer_planes = module.layer_planes

    class RecordedPlanes:
        def __init__(self, planes):
            self.planes = planes

        def __getattr__(self, name):
            return getattr(self.planes, name)

        def plane(self, index):
            readers.append(threading.current_thread())
            return self.planes.plane(index)

    monkeypatch.setattr(module, "layer_planes", lambda layer: RecordedPlanes(layer_planes(layer)))
    export = _cup_proposed(qtbot, open_focus_widget, small_coffee, tmp_path)
    outcomes: list = []
    export.export(on_done=outcomes.append)
    qtbot.waitUntil(lambda: len(outcomes) == 1 and not export.busy, timeout=WAIT_MS)
    assert outcomes[0] is not None and outcomes[0].image.is_file()
    assert readers and threading.main_thread() not in readers


def test_strokes_painted_while_the_mask_is_refined_are_not_replaced_unasked(
    qtbot, open_focus_widget, small_coffee, monkeypatch
):
    """A refinement runs in a worker (a large proposal: about a second); a stroke made
    meanwhile is replaced only when the user says so."""
    import threading

    from napari_focus.gui import refine_section

    viewer, widget = open_focus_widget()
    viewer.add_image(small_coffee, name="cup")
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    labels = viewer.layers["cup [FOCUS SOD]"]
    gate = threading.Event()
    refine = refine_section.refine

    def held_refine(*args):
        gate.wait(30)
        return refine(*args)

    monkeypatch.setattr(refine_section, "refine", held_refine)
    questions: list[str] = []
    monkeypatch.setattr(dialogs, "ask_yes_no", lambda _p, q: questions.append(q) or False)
    widget.official.value = False
    widget.threshold.value = 0.35  # no edits yet: refined in the worker, unasked
    qtbot.waitUntil(lambda: widget.status.value == "refining the mask…", timeout=WAIT_MS)
    labels.paint((5, 5), 1)  # painted while the worker refines
    painted = np.array(labels.data)
    gate.set()
    qtbot.waitUntil(lambda: widget.refine_section.idle, timeout=WAIT_MS)
    assert questions == [
        "'cup [FOCUS SOD]' was edited while it was being refined. Replace the edits with "
        "the refined mask?"
    ]
    np.testing.assert_array_equal(labels.data, painted)  # "No": the stroke stays
    assert widget.status.value == "kept your edits"

    def new_proposal_meanwhile(_parent, question):  # arrives while the dialog is open
        if "while it was being refined" in question:
            state = dict(labels.metadata["napari_focus"])
            labels.metadata = {**labels.metadata, "napari_focus": state}
        return True

    monkeypatch.setattr(dialogs, "ask_yes_no", new_proposal_meanwhile)
    gate.clear()
    widget.threshold.value = 0.6
    qtbot.waitUntil(lambda: widget.status.value == "refining the mask…", timeout=WAIT_MS)
    labels.paint((8, 8), 1)
    painted = np.array(labels.data)
    gate.set()
    qtbot.waitUntil(lambda: widget.refine_section.idle, timeout=WAIT_MS)
    np.testing.assert_array_equal(labels.data, painted)  # not the old proposal's refinement


def test_new_data_for_a_locked_mask_keeps_it_locked(make_napari_viewer):
    """A series locks the mask while the next image opens; a refinement arriving then
    gives the layer new data without unlocking it."""
    from napari_focus.gui.proposal_layers import replace_labels_data

    viewer = make_napari_viewer()
    labels = viewer.add_labels(np.zeros((20, 30), np.uint8), name="mask")
    labels.mode = "paint"
    labels.editable = False
    replace_labels_data(labels, np.ones((20, 30), np.uint8))
    assert not labels.editable and labels.data.all()
    labels.editable = True
    labels.mode = "paint"
    replace_labels_data(labels, np.zeros((20, 30), np.uint8))
    assert labels.editable and labels.mode == "paint" and not labels.data.any()
