"""What Next and Previous do at the ends of a series: say so, and stay."""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_info

from ..series import Status


class SeriesEnds:
    """Next at the last image that can be shown, Previous at the first."""

    state: Any
    include_exported: Any
    _shown: str | None

    def _at_an_end(self, direction: int) -> bool:
        """Whether Next (``direction`` 1) or Previous (-1) finds no image from the one on
        screen: said, and it stays with its edits, nothing asked (a "No" to keeping them
        would have thrown them away)."""
        queue = None if self.state is None else self.state.queue
        if queue is None or queue.current is None or queue.current.key != self._shown:
            return False
        here = queue.index
        step = queue.next if direction > 0 else queue.previous
        if step(include_exported=self.include_exported.value) is not None:
            queue.jump(here)  # only looked
            return False
        show_info(f"FOCUS: {self._end_text(direction)}")
        return True

    def _end_text(self, direction: int) -> str:
        """Why Next (``direction`` 1) or Previous (-1) found no image, and what to do."""
        assert self.state is not None
        queue = list(self.state.queue)
        here = self.state.queue.index
        beyond = queue[here + 1 :] if direction > 0 else queue[:here]
        edge = "last" if direction > 0 else "first"
        hidden = sum(item.exported and not item.missing for item in beyond)
        if hidden and not self.include_exported.value:
            where = "after" if direction > 0 else "before"
            text = (
                f"no image {where} this one is left to annotate; {hidden} accepted "
                f"{'image is' if hidden == 1 else 'images are'} passed over: tick "
                f"'{self.include_exported.text}' to see them again"
            )
        else:
            text = f"this is the {edge} image of the series that can be shown"
        if direction > 0:
            open_ = (Status.PENDING, Status.PROPOSED, Status.CORRECTED, Status.SKIPPED)
            todo = [item for item in queue[:here] if item.status in open_ and not item.missing]
            if todo:
                text += f"; {len(todo)} before it still to do (◀ Previous, or 'go to #')"
            elif queue[here].status in (Status.ACCEPTED, Status.REJECTED):
                text += "; every image that can be shown has its decision"
        return text
