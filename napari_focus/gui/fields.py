"""Small helpers for reading magicgui fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def chosen_dir(value: Any) -> Path | None:
    """The folder a FileEdit holds, or None when nothing was chosen (empty or ".")."""
    if value is None or str(value).strip() in ("", "."):
        return None
    return Path(value)


def clear_path(field: Any) -> None:
    """Empty a FileEdit (its ``value = ""`` would name the current working folder)."""
    field.line_edit.value = ""
