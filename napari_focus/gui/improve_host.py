"""What the Improve section needs from the widget it sits in, and the FOCUS dock widget's
side of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .fields import chosen_dir


@dataclass(frozen=True)
class WeightsChoice:
    """What the widget's model settings say: official hub weights or a local file."""

    source: str  # "official" or "file"
    path: Path | None
    size: str
    task: str
    device: str

    def describe(self) -> str:
        return str(self.path) if self.source == "file" else f"official FOCUS {self.size}"


#: the footer's status while its Cancel stops Improve's training
CANCELLING_IMPROVE = "cancelling Improve's training…"


class ImproveHost(Protocol):
    """What the section needs from the widget that hosts it."""

    def training_data(self) -> tuple[Path | None, str]:
        """The dataset root the exports go to (None if unset) and their layout."""

    def current_weights(self) -> WeightsChoice: ...

    def use_weights(self, choice: WeightsChoice) -> None:
        """Switch the widget's model settings to ``choice`` (the model reloads lazily)."""

    def repropose_open_images(self) -> int:
        """Recompute (and re-rank) the proposals of the series images not yet accepted;
        returns how many will be recomputed."""

    def job_changed(self) -> None:
        """A training run started or ended (the widget's own Cancel follows it)."""

    def watch_training_data(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever the dataset root or layout changes."""


class FocusWidgetHost:
    """:class:`ImproveHost` over the FOCUS dock widget's public parts."""

    def __init__(self, widget: Any) -> None:
        self.widget = widget

    def training_data(self) -> tuple[Path | None, str]:
        export = self.widget.export_section
        return chosen_dir(export.dataset_root.value), export.dataset_layout.value

    def job_changed(self) -> None:
        widget = self.widget
        if widget.status.value == CANCELLING_IMPROVE and not widget.improve.running:
            widget.set_status("Improve's training stopped: the Improve tab says where")
        widget.update_enabled()

    def watch_training_data(self, callback: Callable[[], None]) -> None:
        export = self.widget.export_section
        for field in (export.dataset_root, export.dataset_layout):
            field.changed.connect(lambda *_: callback())

    def current_weights(self) -> WeightsChoice:
        w = self.widget
        path = w.weights_path.value if w.weights_source.value == "file" else None
        return WeightsChoice(
            w.weights_source.value, Path(path) if path else None, w.size.value, w.task.value,
            w.device.value,
        )  # fmt: skip

    def use_weights(self, choice: WeightsChoice) -> None:
        w = self.widget
        w.task.value = choice.task
        w.size.value = choice.size
        if choice.path is not None:
            w.weights_path.value = choice.path
        w.weights_source.value = choice.source

    def repropose_open_images(self) -> int:
        series = self.widget.series
        if series.state is None:
            return 0
        from ..series.queue import Status

        pending = [i.key for i in series.state.queue if i.status != Status.ACCEPTED]
        series.cache.invalidate(*pending)
        for key in pending:
            series.scores.pop(key, None)
        series.propose_shown_again()  # on screen first, unless it holds edits
        series.order_by_uncertainty()  # computes the missing proposals, then re-ranks
        return len(pending)
