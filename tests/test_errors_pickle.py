"""Every error the package raises survives pickling with its message and attributes.

Errors cross process boundaries: Ray workers send them back to the driver, training
runs in a child process of the widget. Python rebuilds an exception by calling its class
with ``self.args``; a class whose ``__init__`` takes other arguments than its message
then fails to unpickle and the user sees that failure instead of the error."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
from pathlib import Path

import pytest

import napari_focus

# the widget's modules need Qt and raise none of their own errors across processes
_SKIPPED = (".gui", "._bundled")


def _error_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(napari_focus.__path__, "napari_focus."):
        if any(part in info.name for part in _SKIPPED):
            continue
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__.startswith("napari_focus"):
                found[f"{cls.__module__}.{name}"] = cls
    return found


def _size_mismatch():
    from napari_focus.checkpoint_identity import CheckpointSizeMismatch

    return CheckpointSizeMismatch(
        "a.pth", "giant", "large", "by its tensor shapes (ViT width 1536)", recorded=False
    )


# the errors whose __init__ takes more than the message, built as the code builds them
_BUILT = {
    "napari_focus.atomic.WriteError": lambda cls: cls("/data/out.png", OSError(28, "full")),
    "napari_focus.checkpoint_identity.CheckpointSizeMismatch": lambda cls: _size_mismatch(),
    "napari_focus.checkpoint_identity.HubFileMismatch": lambda cls: cls(
        _size_mismatch(),
        "geshang/focus_large_sod",
        Path("/cache/models--geshang--focus_large_sod/snapshots/c0/focus_large_sod.pth"),
    ),
    "napari_focus.checkpoints.CheckpointNotAvailable": lambda cls: cls(
        "not in the cache", "focus_large_sod.pth"
    ),
    "napari_focus.prediction_files.OutputReplacesInput": lambda cls: cls(
        [("a.png", "mask", Path("/data/a.png")), ("b.png", "mask", Path("/data/b.png"))]
    ),
    "napari_focus.datasets.errors.ExportWriteError": lambda cls: cls("cannot write", "full"),
    "napari_focus.datasets.errors.SampleExistsError": lambda cls: cls("cup exists", "cup"),
    "napari_focus.devices.DeviceError": lambda cls: cls("cuda:3", "no such GPU", "cuda:0"),
    "napari_focus.training.state.ResumeMismatchError": lambda cls: cls(
        "run/resume.pt belongs to another run (differs in: data 2 -> 3)", ("data",),
        (("data", "2", "3"),),
    ),
    "napari_focus.training.state.UnreadableStateError": lambda cls: cls(
        Path("run/resume.pt"), "damaged or cut short"
    ),
    "napari_focus.ops.build.KernelUnavailableError": lambda cls: cls(
        "cuda", "nvcc not found", Path("/tmp/build.log")
    ),
    "napari_focus.distributed.engine.RunInterrupted": lambda cls: cls(
        _interrupted_run(), KeyboardInterrupt()
    ),
    "napari_focus.mask_provenance.MasksOfAnotherTask": lambda cls: _masks_of_another_task(cls),
    "napari_focus.pipeline.AppearedMeanwhile": lambda cls: cls("a.png"),
    "napari_focus.series.open_state.SeriesOfAnotherFolder": lambda cls: cls(
        Path("/data/series"), Path("/data/images"), Path("/other/images")
    ),
    "napari_focus.training.data.NoTrainingSamples": lambda cls: cls(
        Path("/data/datasets"), ("cod10k-train",), ("duts-tr",)
    ),
    "napari_focus.datasets.errors.UnusableNameError": lambda cls: cls(
        "sample name 'CON' is a reserved device name on Windows"
    ),
}


def _masks_of_another_task(cls):
    from napari_focus.mask_provenance import MadeBy

    found = [(Path("/out/a.png"), MadeBy("sod", "focus_large_sod.pth"))]
    return cls(found, MadeBy("cod", "focus_large_cod.pth"))


def _interrupted_run():
    from napari_focus.distributed.engine import DatasetRun

    row = {"source": "/data/a.png", "status": "pending"}
    return DatasetRun([row], Path("/out/manifest.csv"), ["b*.png"], workers=2, seconds=3.5)


def _takes_only_a_message(cls: type[BaseException]) -> bool:
    """Whether the nearest ``__init__`` is Python's own (it takes the message)."""
    owner = next(klass for klass in cls.__mro__ if "__init__" in klass.__dict__)
    return not owner.__module__.startswith("napari_focus")


ERRORS = _error_classes()


def test_every_error_with_its_own_arguments_is_built_here():
    custom = {name for name, cls in ERRORS.items() if not _takes_only_a_message(cls)}
    assert custom == set(_BUILT), "add a way to build the new error to _BUILT"


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_the_error_pickles_with_its_message_and_attributes(name):
    cls = ERRORS[name]
    error = _BUILT[name](cls) if name in _BUILT else cls("what went wrong; what to do")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert str(copy) == str(error)
    assert {k: str(v) for k, v in vars(copy).items()} == {
        k: str(v) for k, v in vars(error).items()
    }
