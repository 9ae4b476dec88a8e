"""Modal questions the widget asks (patched in tests; nothing else here)."""

from __future__ import annotations

from typing import Any


def ask_yes_no(parent: Any, question: str, *, default_yes: bool = False) -> bool:
    """Modal Yes/No question; the default (Return) is "No" unless ``default_yes``: the
    default is always the answer that loses nothing."""
    from qtpy.QtWidgets import QMessageBox

    yes, no = QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.No
    answer = QMessageBox.question(parent, "FOCUS", question, yes | no, yes if default_yes else no)
    return answer == yes


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
