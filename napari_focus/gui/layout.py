"""Qt layout helpers that keep the dock inside a laptop screen.

- :class:`WrappingLabel`: a label that wraps, never widens the dock, and keeps its full
  text in a tooltip;
- :func:`narrow_combo`: a combo box that does not grow with its longest choice;
- :func:`tabbed_sections`: the dock's sections as tabs, each inside a vertical scroll
  area, so the dock has a small minimum height and no horizontal growth.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from magicgui.widgets import ComboBox, Label


class WrappingLabel(Label):
    """A Label that wraps its text in at most ``max_lines`` lines and never widens the
    dock; longer text ends with "…", and the tooltip always holds the full text.
    ``value`` is the full text."""

    def __init__(self, *, max_lines: int = 4, **kwargs: Any) -> None:
        self._full = ""
        self._limit = 60 * max_lines  # characters shown; about a dock's width per line
        super().__init__(**kwargs)
        from qtpy.QtWidgets import QSizePolicy

        native = self.native
        native.setWordWrap(True)
        native.setMinimumWidth(10)
        native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
        native.setMaximumHeight(native.fontMetrics().lineSpacing() * max_lines + 4)
        self.value = self._full

    @property
    def value(self) -> str:
        return self._full

    @value.setter
    def value(self, text: Any) -> None:
        self._full = "" if text is None else str(text)
        shown = self._full
        if len(shown) > self._limit:
            shown = shown[: self._limit - 1] + "…"
        self.native.setText(shown)
        self.native.setToolTip(self._full)
        self.changed.emit(self._full)


def narrow_combo(combo: ComboBox, characters: int = 12) -> ComboBox:
    from qtpy.QtWidgets import QComboBox

    native = combo.native
    native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    native.setMinimumContentsLength(characters)
    return combo


def narrow_line_edits(widget: Any) -> None:
    """Let path fields and line edits shrink to the dock instead of sizing it."""
    from qtpy.QtWidgets import QLineEdit, QSizePolicy

    for edit in widget.native.findChildren(QLineEdit):
        edit.setMinimumWidth(60)
        edit.setSizePolicy(QSizePolicy.Policy.Ignored, edit.sizePolicy().verticalPolicy())


def scrolling(page: Any) -> Any:
    """``page`` (a QWidget) at the top of a vertical-only scroll area, never narrower
    than the page needs (so nothing is cut off at the right)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

    holder = QWidget()
    column = QVBoxLayout(holder)
    column.setContentsMargins(0, 0, 0, 0)
    column.addWidget(page)
    column.addStretch(1)
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setWidget(holder)
    area.setMinimumHeight(120)
    scrollbar = area.verticalScrollBar().sizeHint().width()
    area.setMinimumWidth(page.minimumSizeHint().width() + scrollbar + 4)
    return area


def tabbed_sections(sections: Iterable[tuple[str, Any]]) -> Any:
    """A QTabWidget with one scrolling tab per ``(title, magicgui widget)``."""
    from qtpy.QtWidgets import QSizePolicy, QTabWidget

    tabs = QTabWidget()
    tabs.setUsesScrollButtons(True)
    tabs.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
    for title, section in sections:
        tabs.addTab(scrolling(section.native), title)
    return tabs
