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


def middle_cut(text: str, limit: int = 40) -> str:
    """``text`` shortened in the middle to ``limit`` characters (``"a_very…name_07"``):
    the start and the end of a file name tell it apart, and what follows it stays
    visible in a one-line label."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return f"{text[:head]}…{text[len(text) - (limit - 1 - head):]}"
