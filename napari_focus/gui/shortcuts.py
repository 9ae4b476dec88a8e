"""Keyboard shortcuts of the FOCUS widget, bound on the viewer while the widget is open.

Shift + a letter: napari binds no Shift+letter on Image or Labels layers, nor globally
except Shift+V (show/hide the other layers), so these never clash with painting keys
(1-7, E, P, F, L, Z, M, X, B, [, ], -, =) or with napari's Ctrl shortcuts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# (key, what it does, the button it presses: "<section attribute>.<button attribute>")
SHORTCUTS: tuple[tuple[str, str, str], ...] = (
    ("Shift-R", "Run FOCUS on the selected image", "footer.run_button"),
    ("Shift-C", "Cancel the running job", "footer.cancel_button"),
    ("Shift-O", "Reset the mask to the proposal", "refine_section.reset_button"),
    ("Shift-N", "Next image of the series", "series.next_button"),
    ("Shift-B", "Previous image of the series", "series.previous_button"),
    ("Shift-Y", "Accept: export the mask, go to the next image", "series.accept_button"),
    ("Shift-D", "Reject the image, go to the next", "series.reject_button"),
    ("Shift-S", "Skip the image, go to the next", "series.skip_button"),
)


def _button(widget: Any, path: str) -> Any:
    section, name = path.split(".")
    return getattr(getattr(widget, section), name)


def press_if_enabled(button: Any) -> Callable[[Any], None]:
    def press(_viewer: Any) -> None:
        button.native.click()  # does nothing while the button is disabled

    return press


def bind_shortcuts(viewer: Any, widget: Any) -> Callable[[], None]:
    """Bind :data:`SHORTCUTS` on ``viewer`` for ``widget``'s buttons, add the key to each
    button's tooltip; returns the function that unbinds them."""
    bound: list[str] = []
    for key, text, path in SHORTCUTS:
        button = _button(widget, path)
        viewer.bind_key(key, press_if_enabled(button), overwrite=True)
        bound.append(key)
        label = key.replace("-", "+")
        button.tooltip = f"{text} ({label})"

    def unbind() -> None:
        for key in bound:
            viewer.bind_key(key, None)
        bound.clear()

    return unbind


def shortcut_table() -> str:
    """The shortcuts as a Markdown table (the README's list)."""
    rows = [f"| {key.replace('-', '+')} | {text} |" for key, text, _ in SHORTCUTS]
    return "\n".join(["| Key | Action |", "| --- | --- |", *rows])
