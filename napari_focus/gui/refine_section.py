"""Refine section: threshold and clean-up of the stored model output (no model call),
computed in a worker; one confirmation per gesture; "reset to proposal"."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, Container, FloatSlider, PushButton, SpinBox

from ..mask_ops import Refinement, refine
from . import dialogs
from .proposal_layers import META_KEY, is_edited, replace_labels_data
from .workers import WidgetLifetime, background

DEBOUNCE_MS = 60


class RefineSection(Container):
    """Re-derive the mask from the proposal's probability map and official mask."""

    def __init__(self, owner: Any) -> None:
        from qtpy.QtCore import QTimer

        self.owner = owner
        self.official = CheckBox(text="official mask (uncheck to threshold)", value=True)
        self.threshold = FloatSlider(
            label="threshold", min=0.0, max=1.0, step=0.01, value=0.5, enabled=False
        )
        self.fill_holes = CheckBox(text="fill holes", value=False)
        self.min_size = SpinBox(label="remove objects <", min=0, max=10**7, value=0)
        self.keep_largest = CheckBox(text="keep largest object", value=False)
        self.reset_button = PushButton(text="Reset to proposal")
        super().__init__(
            widgets=[
                self.official,
                self.threshold,
                self.fill_holes,
                self.min_size,
                self.keep_largest,
                self.reset_button,
            ],
            labels=True,
        )
        self.official.tooltip = "The mask FOCUS itself gives; uncheck to threshold the probability"
        self.threshold.tooltip = "Foreground where the probability is above this value"
        self.fill_holes.tooltip = "Fill background regions enclosed by the foreground"
        self.min_size.tooltip = "Remove foreground objects smaller than this many pixels"
        self.keep_largest.tooltip = "Keep only the largest foreground object"
        self._worker: Any = None
        self._lifetime = WidgetLifetime(self.native)
        self._pending = False
        self._approved = False  # the user agreed to replace their edits in this gesture
        self._syncing = False
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self._apply)
        self.official.changed.connect(self._on_official_toggled)
        for control in (self.threshold, self.fill_holes, self.min_size, self.keep_largest):
            control.changed.connect(self._on_changed)
        self.reset_button.changed.connect(self.reset_to_proposal)

    def refinement(self) -> Refinement:
        return Refinement(
            threshold=None if self.official.value else float(self.threshold.value),
            fill_holes=self.fill_holes.value,
            min_size=int(self.min_size.value),
            keep_largest=self.keep_largest.value,
        )

    @property
    def idle(self) -> bool:
        """No refinement waiting or being computed."""
        return self._worker is None and not self._pending and not self._timer.isActive()

    def _on_official_toggled(self, official: bool) -> None:
        self.threshold.enabled = not official
        self._on_changed()

    def _on_changed(self, _value: Any = None) -> None:
        if not self._syncing:
            self._timer.start()

    def show_refinement(self, refinement: dict[str, Any]) -> None:
        """Set the controls to what a mask was made with, without refining again."""
        self._syncing = True
        try:
            threshold = refinement.get("threshold")
            self.official.value = threshold is None
            self.threshold.enabled = threshold is not None
            if threshold is not None:
                self.threshold.value = float(threshold)
            self.fill_holes.value = bool(refinement.get("fill_holes", False))
            self.min_size.value = int(refinement.get("min_size", 0))
            self.keep_largest.value = bool(refinement.get("keep_largest", False))
        finally:
            self._syncing = False

    def apply_now(self) -> None:
        """Refine the new proposal with the current settings (no question: nothing of
        the user's is replaced)."""
        self._approved = True
        self._apply()

    def _apply(self) -> None:
        labels = self.owner.proposal_layer()
        if labels is None:
            return
        if self._worker is not None:
            self._pending = True
            return
        state = labels.metadata[META_KEY]
        if not self._approved and is_edited(labels):
            question = f"'{labels.name}' has edits. Replace them with the refined proposal?"
            if not dialogs.ask_yes_no(self.native, question):
                self.show_refinement(state["refinement"])  # the controls show the mask
                self.owner.set_status("kept your edits")
                return
        self._approved = True
        refinement = self.refinement()
        worker = background(refine, state["probability"], state["official_mask"], refinement)
        guard = self._lifetime.guard
        shown = np.array(labels.data)  # painting while it refines changes the layer's
        worker.returned.connect(
            guard(lambda mask: self._on_refined(labels, state, refinement, mask, shown))
        )
        worker.errored.connect(guard(self.owner.report_error))
        worker.finished.connect(guard(self._on_finished))
        self._worker = worker
        self.owner.set_status("refining the mask…")
        worker.start()

    def _on_refined(
        self, labels: Any, state: dict, refinement: Refinement, mask: np.ndarray,
        shown: np.ndarray,
    ) -> None:  # fmt: skip
        if labels.metadata.get(META_KEY) is not state:
            return  # a new proposal arrived meanwhile
        if not np.array_equal(labels.data, shown):  # painted on while it was refined
            question = (
                f"'{labels.name}' was edited while it was being refined. Replace the edits "
                "with the refined mask?"
            )
            if not dialogs.ask_yes_no(self.native, question):
                self.show_refinement(state["refinement"])  # the controls show the mask
                self.owner.set_status("kept your edits")
                return
            if labels.metadata.get(META_KEY) is not state or labels not in self.owner.viewer.layers:
                return  # another proposal, or the layer gone, while the dialog was open
        state["proposal"] = mask.copy()
        state["refinement"] = asdict(refinement)
        replace_labels_data(labels, mask)
        self.owner.set_status("mask updated")

    def _on_finished(self) -> None:
        self._worker = None
        if self._pending:
            self._pending = False
            self._apply()
        else:
            self._approved = False

    def reset_to_proposal(self) -> None:
        """Throw away the edits: the mask becomes the proposal (for a series image shown
        with a saved mask, the model's proposal, read or computed first)."""
        labels = self.owner.mask_layer()
        if labels is None:
            self.owner.report_error(ValueError("no proposal to reset to: press Run first"))
            return
        state = labels.metadata.get(META_KEY)
        if state is None and self.owner.series.reset_to_proposal(labels):
            return  # a saved mask of the series: the model's proposal replaces it
        if state is None:
            self.owner.report_error(ValueError(f"'{labels.name}' has no proposal to reset to"))
            return
        start = state["proposal"]
        question = f"Throw away your edits of '{labels.name}' and go back to the proposal?"
        if is_edited(labels) and not dialogs.ask_yes_no(self.native, question):
            self.owner.set_status("kept your edits")  # a stray Shift+O undoes nothing
            return
        replace_labels_data(labels, np.asarray(start).astype(labels.data.dtype))
        self.owner.set_status(f"'{labels.name}' reset to the proposal")
