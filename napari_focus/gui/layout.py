"""Qt layout helpers that keep the dock inside a laptop screen.

- :class:`WrappingLabel`: a label that wraps, never widens the dock, and keeps its full
  text in a tooltip;
- :func:`narrow_combo`: a combo box that does not grow with its longest choice;
- :func:`enter_to_apply`: a spin box that acts on Return, not on every digit typed;
- :func:`tabbed_sections`: the dock's sections as tabs, each inside a vertical scroll
  area, so the dock has a small minimum height and no horizontal growth.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from magicgui.widgets import ComboBox, Label


class WrappingLabel(Label):
    """A Label that wraps its text in at most ``max_lines`` lines and never widens the
    dock; text that does not fit the label's width ends with "…" (measured with the
    label's font, again on every resize), and the tooltip always holds the full text.
    ``value`` is the full text."""

    def __init__(self, *, max_lines: int = 4, **kwargs: Any) -> None:
        self._full = ""
        self._max_lines = max_lines
        super().__init__(**kwargs)
        from qtpy.QtCore import QEvent, QObject
        from qtpy.QtWidgets import QSizePolicy

        native = self.native
        native.setWordWrap(True)
        native.setMinimumWidth(10)
        native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
        native.setMaximumHeight(native.fontMetrics().lineSpacing() * max_lines + 4)

        label = self

        class _OnResize(QObject):
            def eventFilter(self, _watched: Any, event: Any) -> bool:
                if event.type() == QEvent.Type.Resize:
                    label._show()
                return False

        self._resize_filter = _OnResize(native)
        native.installEventFilter(self._resize_filter)
        self.value = self._full

    @property
    def value(self) -> str:
        return self._full

    @value.setter
    def value(self, text: Any) -> None:
        self._full = "" if text is None else str(text)
        self._show()
        self.native.setToolTip(self._full)
        self.changed.emit(self._full)

    def _show(self) -> None:
        self.native.setText(self._elided(breakable(self._full)))

    def _elided(self, text: str) -> str:
        """The longest prefix of ``text`` (+ "…") that wraps into ``max_lines`` lines,
        measured by the label itself at its current width and font (napari's style
        sheet sets the font after construction)."""
        native = self.native
        width = native.width()
        if width < 20 or not text:  # not laid out yet: the resize shows it again
            return text
        native.setText("\n".join("x" * self._max_lines))
        limit = native.heightForWidth(width)
        native.setMaximumHeight(limit)

        def fits(candidate: str) -> bool:
            native.setText(candidate)
            return native.heightForWidth(width) <= limit

        if fits(text):
            return text
        low, high = 0, len(text)  # fits(text[:low] + "…"), not fits(text[:high] + "…")
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if fits(text[:middle] + "…") else (low, middle)
        return text[:low].rstrip() + "…"


def breakable(text: str) -> str:
    """``text`` with a zero-width space after each ``/``, ``\\`` and ``_``: Qt wraps
    lines only between words, and a long path is one word it would cut at the label's
    edge."""
    return text.translate({ord(c): f"{c}\u200b" for c in "/\\_"})


def narrow_combo(combo: ComboBox, characters: int = 12) -> ComboBox:
    from qtpy.QtWidgets import QComboBox

    native = combo.native
    native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    native.setMinimumContentsLength(characters)
    return combo


def enter_to_apply(spin_box: Any) -> Any:
    """A magicgui SpinBox that emits ``changed`` on Return, focus out or its arrows, not
    on each digit typed (typing 12 no longer passes through 1). Keyboard tracking off
    also stops superqt's spin box from taking the keyboard focus whenever code sets its
    value, which pulled the focus out of the canvas away from napari's keys."""
    spin_box.native.setKeyboardTracking(False)
    return spin_box


def narrow_line_edits(widget: Any) -> None:
    """Let path fields and line edits shrink to the dock instead of sizing it. A file
    field's button becomes a narrow "…" (its words move to its tooltip), so the path
    gets the row's width; the path shows its end (the folder's own name) and its
    tooltip holds the whole path after the field's own tooltip."""
    from magicgui.widgets import FileEdit
    from qtpy.QtWidgets import QLineEdit, QSizePolicy

    for edit in widget.native.findChildren(QLineEdit):
        edit.setMinimumWidth(60)
        edit.setSizePolicy(QSizePolicy.Policy.Ignored, edit.sizePolicy().verticalPolicy())
    if isinstance(widget, FileEdit):
        button = widget.choose_btn
        button.native.setToolTip(f"{button.text}…")
        button.text = "…"
        button.native.setFixedWidth(button.native.fontMetrics().horizontalAdvance("…") + 28)
        widget.changed.connect(lambda _value: _show_path(widget))
        _show_path(widget)


def _show_path(field: Any) -> None:
    edit = field.line_edit.native
    text = edit.text()
    edit.setCursorPosition(len(text))  # the end of a long path: the folder's own name
    description = field.native.toolTip()
    edit.setToolTip("\n".join(part for part in (description, text) if part))


def scrolling(page: Any) -> Any:
    """``page`` (a QWidget) at the top of a vertical-only scroll area, never narrower
    than the page needs (so nothing is cut off at the right)."""
    from qtpy.QtCore import QSize, Qt
    from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

    class VerticalScrollArea(QScrollArea):
        # asked each time, not fixed once: napari's theme, applied after the widget is
        # built, makes the page wider than it measured at first
        def minimumSizeHint(self) -> QSize:
            scrollbar = self.verticalScrollBar().sizeHint().width()
            return QSize(page.minimumSizeHint().width() + scrollbar + 4, 120)

    holder = QWidget()
    column = QVBoxLayout(holder)
    column.setContentsMargins(0, 0, 0, 0)
    column.addWidget(page)
    column.addStretch(1)
    area = VerticalScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setWidget(holder)
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
