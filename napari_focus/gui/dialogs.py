"""Modal questions the widget asks (patched in tests; nothing else here)."""

from __future__ import annotations

from typing import Any


def ask_yes_no(parent: Any, question: str) -> bool:
    """Modal Yes/No question; "No" is the default."""
    from qtpy.QtWidgets import QMessageBox

    buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
    answer = QMessageBox.question(parent, "FOCUS", question, buttons, QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def ask_policy(parent: Any, question: str) -> str | None:
    """Ask what to do with an existing sample: "replace", "rename", "skip" or None (cancel)."""
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox(parent)
    box.setWindowTitle("FOCUS export")
    box.setText(question)
    buttons = {
        box.addButton("Replace", QMessageBox.ButtonRole.DestructiveRole): "replace",
        box.addButton("Keep both (rename)", QMessageBox.ButtonRole.AcceptRole): "rename",
        box.addButton("Skip", QMessageBox.ButtonRole.RejectRole): "skip",
    }
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.exec()
    return buttons.get(box.clickedButton())
