"""What an install gives a user: the wheel's files and metadata, and the command line on
a machine without a C++ compiler."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from PIL import Image

import napari_focus

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_PARENT = Path(napari_focus.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel `pip install .` installs, built from this checkout (no network)."""
    if not (REPO_ROOT / "pyproject.toml").is_file():
        pytest.skip("needs a source checkout (pyproject.toml) to build the wheel from")
    builder = pytest.importorskip("hatchling.builders.wheel")
    folder = tmp_path_factory.mktemp("wheel")
    (path,) = builder.WheelBuilder(str(REPO_ROOT)).build(
        directory=str(folder), versions=["standard"]
    )
    return zipfile.ZipFile(path)


def test_wheel_ships_the_manifest_the_kernel_sources_and_the_presets(wheel) -> None:
    names = set(wheel.namelist())
    # npe2 finds the plugin manifest only inside the installed package
    assert wheel.read("napari_focus/napari.yaml") == (REPO_ROOT / "napari.yaml").read_bytes()
    # the deformable-attention kernels are compiled from these on first use
    sources = sorted(p for p in (REPO_ROOT / "ops").iterdir() if p.is_file())
    assert {p.suffix for p in sources} >= {".cpp", ".cu", ".cuh", ".h"}
    for source in sources:
        assert wheel.read(f"napari_focus/_bundled/ops/{source.name}") == source.read_bytes()
    presets = REPO_ROOT / "resources" / "presets.json"
    assert wheel.read("napari_focus/_bundled/resources/presets.json") == presets.read_bytes()
    modules = {
        p.relative_to(REPO_ROOT).as_posix()
        for p in (REPO_ROOT / "napari_focus").rglob("*.py")
        if "_bundled" not in p.parts and "__pycache__" not in p.parts
    }
    assert modules <= names, sorted(modules - names)
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/")) or ".pyc" in n]


def test_a_wheel_built_from_the_sdist_ships_the_same_files(wheel, tmp_path: Path) -> None:
    """`pip install napari_focus-<version>.tar.gz` builds its wheel from the unpacked sdist."""
    import tarfile

    from hatchling.builders.sdist import SdistBuilder
    from hatchling.builders.wheel import WheelBuilder

    (sdist,) = SdistBuilder(str(REPO_ROOT)).build(directory=str(tmp_path), versions=["standard"])
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (root,) = (tmp_path / "unpacked").iterdir()
    for needed in ("pyproject.toml", "hatch_build.py", "napari.yaml", "LICENSE", "README.md"):
        assert (root / needed).is_file(), needed
    (rebuilt,) = WheelBuilder(str(root)).build(
        directory=str(tmp_path / "wheel"), versions=["standard"]
    )
    bundled = sorted(n for n in wheel.namelist() if n.startswith("napari_focus/"))
    rebuilt_names = zipfile.ZipFile(rebuilt).namelist()
    assert sorted(n for n in rebuilt_names if n.startswith("napari_focus/")) == bundled


def test_wheel_manifest_commands_point_into_the_wheel(wheel) -> None:
    manifest = yaml.safe_load(wheel.read("napari_focus/napari.yaml"))
    names = set(wheel.namelist())
    for command in manifest["contributions"]["commands"]:
        module, _, attribute = command["python_name"].partition(":")
        assert f"{module.replace('.', '/')}.py" in names, command["id"]
        source = wheel.read(f"{module.replace('.', '/')}.py").decode()
        assert f"def {attribute}" in source or f"class {attribute}" in source, command["id"]


def test_wheel_metadata_entry_points_and_extras(wheel) -> None:
    info = f"napari_focus-{napari_focus.__version__}.dist-info"
    entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert "napari-focus = napari_focus.cli:main" in entry_points
    assert "[napari.manifest]" in entry_points and "napari_focus:napari.yaml" in entry_points
    metadata = email.message_from_bytes(wheel.read(f"{info}/METADATA"))
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata["License-Expression"] == "MIT"
    assert f"{info}/licenses/LICENSE" in wheel.namelist()
    assert "Framework :: napari" in metadata.get_all("Classifier")
    assert {"gui", "metrics", "ray", "test", "dev"} <= set(metadata.get_all("Provides-Extra"))
    requires = metadata.get_all("Requires-Dist")
    assert any(r.startswith("ninja") and "extra" not in r for r in requires)
    assert any(r.startswith("pyqt6") and "extra == 'gui'" in r for r in requires)


def test_install_hints_name_the_extras_requirements() -> None:
    """Messages say what to pip install for a missing extra (the requirement itself: a
    checkout install has no PyPI name to add an extra to); they follow pyproject.toml."""
    import tomllib

    from napari_focus.distributed import cli as ray_cli
    from napari_focus.distributed import inputs
    from napari_focus.quality import require_metrics

    if not (REPO_ROOT / "pyproject.toml").is_file():
        pytest.skip("needs a source checkout (pyproject.toml)")
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    sources = {
        "metrics": (Path(require_metrics.__code__.co_filename).read_text(), 1),
        "ray": (Path(ray_cli.__file__).read_text() + Path(inputs.__file__).read_text(), 2),
    }
    for extra, (source, uses) in sources.items():
        (requirement,) = extras[extra]
        assert source.count(f"pip install '{requirement}'") == uses, extra


def _without_a_compiler(tmp_path: Path) -> dict[str, str]:
    """An environment with no c++/g++/ninja on PATH, no CXX and a fresh kernel cache."""
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CXX", "CC", "PYTHONPATH")}
    env.update(
        PATH=str(empty_bin),
        PYTHONPATH=str(PACKAGE_PARENT),
        NAPARI_FOCUS_CACHE=str(tmp_path / "cache"),
    )
    return env


def _the_one_fallback_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if "kernel is unavailable" in line]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("napari-focus: the compiled CPU deformable-attention kernel")
    assert "KernelFallbackWarning" not in stderr
    return lines[0]


def test_predict_without_a_compiler_says_the_fallback_in_one_line(
    tiny_checkpoint: Path, focus_reference: Path, tmp_path: Path
) -> None:
    """No c++/g++/ninja on PATH and no CXX: the masks are written by the PyTorch
    implementation, and the reason is one `napari-focus:` line, not a Python warning."""
    images = tmp_path / "images"
    images.mkdir()
    source = Image.open(focus_reference / "input.png").convert("RGB")
    source.resize((80, 64), Image.BILINEAR).save(images / "photo.png")
    env = {**_without_a_compiler(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "napari_focus", "predict", str(images), "--task", "sod",
         "--weights", str(tiny_checkpoint), "--out", str(tmp_path / "masks"), "--device",
         "cpu", "--quiet"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "masks" / "photo.png").is_file()
    line = _the_one_fallback_line(result.stderr)
    assert "no C++ compiler found" in line and "PyTorch implementation" in line
    assert "Traceback" not in result.stderr and ".py:" not in result.stderr


WORKER_SCRIPT = """
import sys
import numpy as np
from napari_focus.distributed.worker import FocusWorker, WorkerSettings
weights, out = sys.argv[1], sys.argv[2]
worker = FocusWorker(WorkerSettings(task="sod", weights=weights, device="cpu").as_dict())
image = np.full((64, 80, 3), 120, np.uint8)
rows = worker({
    "source": ["/in/photo.png"], "name": ["photo"], "mask": [out], "probability": [""],
    "pixels": [image.tobytes()], "height": [64], "width": [80], "error": [""],
})
print(rows["status"][0])
"""


def test_a_ray_worker_says_the_fallback_in_one_line(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """A worker of ``predict --engine ray`` on a node without a compiler (here its class in
    a process of its own, as Ray runs it): the same one line as the command line, which
    Ray shows on the driver, not a Python warning with a source line."""
    env = _without_a_compiler(tmp_path)
    mask = tmp_path / "photo.png"
    result = subprocess.run(
        [sys.executable, "-c", WORKER_SCRIPT, str(tiny_checkpoint), str(mask)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "written" and mask.is_file()
    _the_one_fallback_line(result.stderr)
    assert ".py:" not in result.stderr
