"""The Model tab's choices (task, size, weights, device, precision, TTA), remembered
between napari sessions in a small JSON file of the user's configuration folder, so an
annotator working with a local checkpoint does not pick it again on every start.

The folder is ``$NAPARI_FOCUS_CONFIG_DIR`` when set, else the platform's configuration
folder for napari-focus (``~/.config/napari-focus`` on Linux). A remembered value that no
longer fits (a checkpoint moved away, a GPU gone) is left out; an unreadable or unwritable
file only costs the remembering.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes

CONFIG_ENV = "NAPARI_FOCUS_CONFIG_DIR"
FILENAME = "model_settings.json"
CHOICES = ("task", "size", "device", "precision")  # combo boxes, restored if still offered


def settings_file() -> Path:
    folder = os.environ.get(CONFIG_ENV)
    if not folder:
        import platformdirs

        folder = platformdirs.user_config_dir("napari-focus", appauthor=False)
    return Path(folder) / FILENAME


def recalled() -> dict[str, Any]:
    """What was remembered, or nothing when there is no readable file."""
    try:
        data = json.loads(settings_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def recall(section: Any) -> None:
    """Set the Model section's fields to the remembered values that still fit."""
    remembered = recalled()
    for name in CHOICES:
        widget, value = getattr(section, name), remembered.get(name)
        if value in widget.choices:
            widget.value = value
    if isinstance(remembered.get("tta"), bool):
        section.tta.value = remembered["tta"]
    path = remembered.get("weights_path")
    if isinstance(path, str) and path and Path(path).is_file():
        section.weights_path.value = Path(path)
        if remembered.get("weights_source") == "file":
            section.weights_source.value = "file"


def remember(section: Any) -> None:
    """Write the Model section's fields (small: on the GUI thread)."""
    write_values(values_of(section))


def values_of(section: Any) -> dict[str, Any]:
    path = section.weights_path.value
    values = {name: getattr(section, name).value for name in CHOICES}
    values["weights_source"] = section.weights_source.value
    values["weights_path"] = str(Path(path).absolute()) if path and str(path) != "." else ""
    values["tta"] = bool(section.tta.value)
    return values


def write_values(values: dict[str, Any]) -> None:
    target = settings_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, json.dumps(values, indent=1).encode("utf-8"))
    except OSError:
        pass  # e.g. a read-only home: the next session starts from the defaults


#: a change is written once the fields are still this long (a path typed key by key is
#: one write, not one synced write on napari's thread per key, on a network home folder)
SETTLE_MS = 400


def keep_remembered(section: Any) -> None:
    """Recall the remembered choices, then remember every change: written once the
    fields have settled, or when the section closes before."""
    from qtpy.QtCore import QTimer

    recall(section)
    unwritten: dict[str, dict[str, Any]] = {}

    def write() -> None:
        if "values" in unwritten:
            write_values(unwritten.pop("values"))

    timer = QTimer(section.native)  # lives and dies with the section
    timer.setSingleShot(True)
    timer.setInterval(SETTLE_MS)
    timer.timeout.connect(write)

    def changed(*_: Any) -> None:
        unwritten["values"] = values_of(section)  # read now: gone once the section closes
        timer.start()

    for name in (*CHOICES, "weights_source", "weights_path", "tta"):
        getattr(section, name).changed.connect(changed)
    section.native.destroyed.connect(lambda *_: write())
