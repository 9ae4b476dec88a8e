"""Showing the current item of a series: its image (decoded ahead when possible), then
its saved mask or its proposal (mixed into
:class:`~napari_focus.gui.series_section.SeriesSection`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_warning

from ..datasets import get_layout
from ..mask_files import read_mask_file
from ..predictor import Prediction
from ..quality import uncertainty
from ..series import Status
from ..series.item_files import still_current
from ..series.references import MaskFolder
from .fields import chosen_dir, middle_cut
from .job import JobResult, proposal_name
from .planes import current_plane_index, layer_planes
from .proposal_layers import find_layer
from .series_layers import (
    retarget_mask_layers,
    series_layer,
    show_image,
    show_saved_mask,
    tag,
    unlock_mask_layer,
)


class SeriesDisplay:
    """Image, mask and probability of the shown item."""

    state: Any
    owner: Any
    viewer: Any
    cache: Any
    prefetcher: Any
    decoded: Any
    autosaves: Any
    scores: dict[str, float]
    references: Any
    position: Any
    jump_to: Any
    _shown: str | None
    _awaiting: str | None
    _locked_mode: str | None
    _resetting: str | None
    _buttons_off: bool
    _start_listing: tuple[Any, MaskFolder] | None

    def _display(self, item: Any, image: np.ndarray | None) -> None:
        assert self.state is not None
        if self._buttons_off:  # nothing could be shown before (a folder of broken files)
            for button in self._buttons():
                button.enabled = True
            self._buttons_off = False
        self._shown = item.key
        self._awaiting = None
        self._resetting = None  # a reset asked for on the image left
        self._own_memo = None  # the proposal of the image left, read for its Accept
        unlock_mask_layer(self.viewer, self._locked_mode)
        self._locked_mode = None
        self._show_position(item)

        if item.path is None:  # a queue of open layers: show that layer
            layer = self.viewer.layers[item.key]
            for queued in self.state.queue:
                if queued.key in self.viewer.layers:
                    self.viewer.layers[queued.key].visible = queued.key == item.key
        else:
            layer = show_image(self.viewer, item.key, item.name, item.path, image)
        # the shown image is the active layer, as when the user clicks it: the Model
        # tab's image follows the active layer whenever layers change (a proposal arrives)
        self.viewer.layers.selection.active = layer
        self.owner.image.value = layer.name
        if (item.export or {}).get("name"):  # accepted before, perhaps under a name typed
            # then: Accept again meets that sample (and asks), never adds a second copy
            self.owner.export_section.sample_name.value = item.export["name"]
        shape = layer_planes(layer).spatial_shape
        name = proposal_name(item.name, self.owner.task.value)
        saved, provenance = self._saved_edits(item)
        made_for = (provenance or {}).get("task") if saved is not None else None
        if isinstance(made_for, str) and made_for:  # edits of another task's proposal
            name = proposal_name(item.name, made_for)
        kind = "autosaved"
        if saved is None and item.status is Status.ACCEPTED:  # what was accepted, not the
            saved, kind = self._exported_mask(item), "exported"  # proposal again
            made_for = _task_of_split(item.export)
            if saved is not None and made_for:  # ground truth of that split's task
                provenance, name = {"task": made_for}, proposal_name(item.name, made_for)
        start = saved if saved is not None else self._start_mask(item)
        if start is not None and start.shape != tuple(shape[-2:]):
            # e.g. drawn on a photo's stored pixels before its EXIF orientation was applied
            kind = kind if saved is not None else "existing"
            show_warning(
                f"the {kind} mask of {item.name} is {start.shape[1]}x{start.shape[0]} pixels "
                f"but the image is {shape[-1]}x{shape[-2]}: not loaded"
            )
            saved = start = None
        prediction = self._known_prediction(item) if start is None else None
        if prediction is not None and prediction.mask.shape != tuple(shape[-2:]):
            prediction = None  # a stored proposal of other pixels: computed again
        clear = start is None and prediction is None
        retarget_mask_layers(self.viewer, item.key, shape, name, clear=clear)
        if start is not None:
            show_saved_mask(self.viewer, layer, item.key, name, start, provenance)
            self.owner.set_status("loaded a saved mask")
        elif prediction is not None:
            self._show_prediction(layer, item.key, prediction)
        else:
            self._awaiting = item.key
            self.owner.set_status(f"computing the proposal of {item.name}…")
        if item.status in (Status.ACCEPTED, Status.REJECTED):  # not "proposed" again
            self.owner.set_status(f"{item.name} is {item.status}")
        self.owner.update_enabled()
        self._schedule()
        self._read_ahead()

    def _show_position(self, item: Any) -> None:
        assert self.state is not None
        counts = self.state.queue.counts()
        failed = f", {counts[Status.FAILED]} failed" if counts[Status.FAILED] else ""
        where = self.state.queue.position_text()
        self.position.value = f"{where} {middle_cut(item.name)} — {item.status}{failed}"
        whole = f"{where} {item.name} — {item.status}{failed}"  # the name uncut, and its file
        self.position.tooltip = whole if item.path is None else f"{whole}\n{item.path}"
        if self.jump_to.value != self.state.queue.index + 1:  # also after a new order
            with self.jump_to.changed.blocked():  # shown here, not a jump asked for
                self.jump_to.value = self.state.queue.index + 1

    def _known_prediction(self, item: Any) -> Prediction | None:
        """The proposal from memory, or from the series folder (computed earlier)."""
        if self.state is not None:
            try:
                self._use_model()  # proposals of other settings are forgotten first
            except ValueError:
                return None  # no model chosen: the reason is said when one is needed
        prediction = self.cache.get(item.key)
        if prediction is None and self.state is not None:
            stored = self._stored_proposal(item)
            if stored is not None:
                prediction, self.scores[item.key] = stored
                ticket = self.cache.mark_in_flight(item.key)
                if ticket is not None:  # kept in memory, as a computed one
                    self.cache.store(item.key, prediction, ticket)
        return prediction

    def _saved_edits(self, item: Any) -> tuple[np.ndarray | None, dict | None]:
        """The item's autosaved mask and where it came from: edits still being written,
        else the autosave read ahead with the image (when its file is still the one read),
        else read now."""
        assert self.state is not None
        pending = self.autosaves.edits_of(self.state, item.key)
        if pending is not None:
            return pending.mask, pending.provenance
        files = self.decoded.files(item.key)
        path = self.state.autosave_path(item.key)
        try:
            if files is not None and files.autosave_read and still_current(
                files.autosave_stamp, path
            ):
                saved = self.state.load_autosaved(item.key, read_ahead=files.autosave)
                return saved, files.provenance if saved is not None else None
            saved = self.state.load_autosaved(item.key)
        except (OSError, ValueError) as error:  # unreadable, or a stale one not set aside
            self._error(f"the autosaved mask of {item.name} cannot be used: {error}")
            return None, None
        return saved, self.state.autosaved_provenance(item.key) if saved is not None else None

    def _exported_mask(self, item: Any) -> np.ndarray | None:
        """The mask an accepted item's last export wrote: read ahead with the image when
        its file is still the one read, else read now."""
        assert self.state is not None
        path = self.state.exported_mask_path(item.key)
        files = self.decoded.files(item.key)
        if (
            path is not None
            and files is not None
            and files.exported_path == path
            and still_current(files.exported_stamp, path)
        ):
            return files.exported_mask
        return self.state.exported_mask(item.key)

    def _stored_proposal(self, item: Any) -> tuple[Prediction, float] | None:
        """The proposal kept in the series folder: read ahead with the image when its file
        is still the one read, else read now."""
        if self._read_ahead_current(item):
            files = self.decoded.files(item.key)
            stored = files.proposal
            if stored is None:
                return None
            # now kept in the proposals' cache: not twice in memory
            self.decoded.put_files(
                item.key, dataclasses.replace(files, proposal_folder=None, proposal=None)
            )
            return Prediction(probability=stored.probability, mask=stored.mask), stored.uncertainty
        return self.prefetcher.load_stored(item.key, item.path)

    def _read_ahead_current(self, item: Any) -> bool:
        """Whether the stored proposal of ``item`` (or its absence) was read ahead with
        the image from the current model's store and its file has not changed since."""
        files, store = self.decoded.files(item.key), self.prefetcher.store
        return (
            files is not None
            and store is not None
            and files.proposal_folder == store.folder
            and still_current(files.proposal_stamp, store.path(item.key))
        )

    def _start_masks_folder(self) -> Path | None:
        folder = chosen_dir(self.references.value)
        return folder if folder is not None and folder.is_dir() else None

    def _start_mask(self, item: Any) -> np.ndarray | None:
        """The item's mask in the start masks folder: read ahead with the image when its
        file is still the one read, else read now."""
        folder = self._start_masks_folder()
        if item.path is None or folder is None:
            return None
        files = self.decoded.files(item.key)
        if files is not None and files.start_folder == folder and (
            files.start_path is None or still_current(files.start_stamp, files.start_path)
        ):
            return files.start_mask
        path = self._start_masks_listed(folder).find(item.path)
        return read_mask_file(path) if path is not None else None

    def _start_masks_listed(self, folder: Path) -> MaskFolder:
        """The start masks folder listed once while it stays unchanged (its modification
        time changes when a mask is added, removed or renamed): listing 20,000 masks
        takes 0.2 s, too long for every image shown on the GUI thread."""
        try:
            stamp = (folder, folder.stat().st_mtime_ns)
        except OSError:
            stamp = None
        if stamp is None or self._start_listing is None or self._start_listing[0] != stamp:
            self._start_listing = (stamp, MaskFolder(folder))
        return self._start_listing[1]

    def _image_layer_for(self, key: str) -> Any:
        """The layer showing item ``key``; None when it is a layer closed since."""
        if self.state is not None and self.state.queue.item(key).path is None:
            return find_layer(self.viewer, key)
        return series_layer(self.viewer, "image")

    def _closed_layer(self, item: Any) -> bool:
        """Whether ``item`` is an image layer closed (or renamed) since the queue was
        made: it is then ``missing``, as a file the last scan did not find."""
        if item.path is None and item.key not in self.viewer.layers:
            item.missing = True
        return item.missing

    def _source(self, key: str) -> Path | np.ndarray:
        """What a background job reads for item ``key``: a file, or the pixels of a layer
        (taken here, on the UI thread)."""
        assert self.state is not None
        item = self.state.queue.item(key)
        if item.path is not None:
            return item.path
        layer = self.viewer.layers[key]
        planes = layer_planes(layer)
        return planes.plane(current_plane_index(layer, tuple(self.viewer.dims.point), planes))

    def _show_prediction(self, layer: Any, key: str, prediction: Prediction) -> None:
        assert self.state is not None
        model_key, predictor = self.owner.current_model()
        try:
            wanted = self.owner.model_key()
        except ValueError:  # the weights field is being typed in: the model that made it
            wanted = model_key
        if wanted is None:  # none loaded and none chosen: nothing to describe it by
            return
        # a proposal read from the series folder while the model of other settings is
        # loaded (the task switched back) is described by the settings it was made with
        stored = predictor is None or model_key != wanted
        if stored:
            model_key, predictor = wanted, _StoredModel(wanted)
        result = JobResult(
            predictor=predictor,
            key=model_key,
            indices=[()],
            probabilities=[prediction.probability],
            masks=[prediction.mask],
            tta=self.prefetcher.tta,
        )
        labels = self.owner.show_result(
            result, layer, layer_planes(layer), adopt_model=not stored
        )
        name = proposal_name(layer.name, self.owner.task.value)
        tag(labels, "labels", key)
        tag(self.viewer.layers[f"{name} probability"], "probability", key)
        self._awaiting = None
        if key not in self.scores:
            self.scores[key] = uncertainty(prediction.probability)
        if self.state.queue.current.status is Status.PENDING:
            try:
                self.state.mark(key, Status.PROPOSED)
            except OSError as error:
                self._error(self.close_guard.save_failure_text(error, "the series state"))
            self._show_position(self.state.queue.current)
        self.reset_shown(key)


class _StoredModel:
    """Stands in for the predictor of a proposal loaded from the series folder (only
    its description is used)."""

    def __init__(self, key: Any) -> None:
        self.device = key.device
        self.architecture = type("Architecture", (), {"size_name": key.size})()


def _task_of_split(export: dict | None) -> str | None:
    """The task of the split an export record names (None: generic, or unknown)."""
    try:
        return get_layout((export or {}).get("layout") or "").task
    except ValueError:
        return None
