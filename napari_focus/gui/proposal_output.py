"""The proposal the widget shows for an image: its Labels layer (with the hidden
probability layer beside it), and which Labels layer counts as the selected image's
mask (mixed into :class:`~napari_focus.gui.widget.FocusWidget`)."""

from __future__ import annotations

from typing import Any

from .job import JobResult, proposal_name
from .planes import LayerPlanes
from .proposal_layers import META_KEY, find_layer, merged_outputs, proposal_metadata, put_proposal
from .series_layers import ROLE_KEY, SERIES_KEY, series_layer

INLINE_REFINE_PIXELS = 2_000_000  # larger proposals are refined in a worker


class ProposalOutput:
    """Needs ``viewer``, ``task``, ``refine_section``, ``selected_layer()``,
    ``adopt_predictor()``, ``set_status()`` and ``update_enabled()`` of the widget."""

    viewer: Any
    task: Any
    refine_section: Any
    selected_layer: Any
    adopt_predictor: Any
    set_status: Any
    update_enabled: Any

    def show_result(
        self, result: JobResult, layer: Any, planes: LayerPlanes, *, adopt_model: bool = True
    ) -> Any:
        """Add or update the proposal (Labels + hidden probability) of ``layer``; its
        predictor is kept for reuse unless ``adopt_model`` is False (a proposal read back
        from disk comes with a description of its model, not a model)."""
        from ..mask_ops import Refinement, refine

        if adopt_model:
            self.adopt_predictor(result.key, result.predictor)
        name = proposal_name(layer.name, result.key.task)
        labels = find_layer(self.viewer, name)
        if labels is not None and tuple(labels.data.shape) != planes.spatial_shape:
            labels = None
        probability, official = merged_outputs(labels, result, planes)
        refinement = self.refine_section.refinement()
        deferred = refinement != Refinement() and probability.size > INLINE_REFINE_PIXELS
        if deferred:  # large image: show the model's mask now, refine in a worker
            refinement, mask = Refinement(), official.copy()
        else:
            mask = refine(probability, official, refinement)
        metadata = proposal_metadata(
            result, layer.name, probability, official, mask, refinement
        )
        labels = put_proposal(self.viewer, layer, name, mask, metadata)
        self.set_status(f"proposed {name}")
        if deferred:
            self.refine_section.apply_now()
        self.update_enabled()
        return labels

    # --------------------------------------------------------- mask layers
    def mask_layer(self) -> Any:
        """The Labels layer of the selected image: the series' mask for the series image
        (also once renamed), ``"<image> [FOCUS <task>]"`` for the current task, else the
        one FOCUS made for this image under another task (a task switch keeps the
        proposal)."""
        from napari.layers import Labels

        layer = self.selected_layer()
        if layer is None:
            return None
        if layer.metadata.get(ROLE_KEY) == "image":  # a series image, whatever its name now
            key = layer.metadata.get(SERIES_KEY)
            mask = series_layer(self.viewer, "labels")
            if isinstance(mask, Labels) and mask.metadata.get(SERIES_KEY) == key:
                return mask
        labels = find_layer(self.viewer, proposal_name(layer.name, self.task.value))
        if isinstance(labels, Labels):
            return labels
        for candidate in self.viewer.layers:
            state = candidate.metadata.get(META_KEY)
            if (
                isinstance(candidate, Labels)
                and isinstance(state, dict)
                and state.get("source_image") == layer.name
            ):
                return candidate
        return None

    def proposal_layer(self) -> Any:
        """:meth:`mask_layer` when it holds a model proposal (refinable)."""
        labels = self.mask_layer()
        return labels if labels is not None and META_KEY in labels.metadata else None

    def refinement(self) -> Any:
        return self.refine_section.refinement()
