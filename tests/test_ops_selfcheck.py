"""Kernels that build must also compute; the cache is keyed by what a build depends on,
shared safely between processes, and the toolchain is checked before building."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import napari_focus
from napari_focus.ops import (
    build,
    build_identity,
    error_check,
    ms_deform_attn_torch,
    selfcheck,
    toolchain,
)
from napari_focus.ops.compiled import KernelFallbackWarning

PACKAGE_PARENT = Path(napari_focus.__file__).resolve().parents[1]

_PROBE = textwrap.dedent(
    """
    import json, logging, sys, warnings
    from safetensors.torch import load_file
    from napari_focus.ops import build, ms_deform_attn
    from napari_focus.ops.doctor import doctor_report, kernel_status

    events = []
    class Events(logging.Handler):
        def emit(self, record):
            events.append([record.kernel_event, record.kernel_kind, record.getMessage()])
    logging.getLogger("napari_focus.ops.build").addHandler(Events())
    logging.getLogger("napari_focus.ops.build").setLevel(logging.INFO)

    golden = load_file(sys.argv[1])
    names = ("value", "spatial_shapes", "level_start_index", "sampling_locations",
             "attention_weights")
    args = [golden["msda." + name] for name in names]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        errors = [(ms_deform_attn(*args) - golden["msda.output"]).abs().max().item()
                  for _ in range(3)]
    try:
        ms_deform_attn(*args, backend="cpu")
        explicit = None
    except RuntimeError as exc:
        explicit = str(exc)
    print(json.dumps({
        "errors": errors, "explicit": explicit, "events": events,
        "warnings": [[w.category.__name__, str(w.message)] for w in caught],
        "status": kernel_status()["kernels"]["cpu"], "doctor": doctor_report(),
        "directory": str(build.build_directory("cpu")),
    }))
    """
)


def _probe(reference: Path, env_changes: dict[str, str], package_parent: Path = PACKAGE_PARENT):
    env = {**os.environ, **env_changes}  # CXX/CC as this process has them: the same build key
    env["PYTHONPATH"] = str(package_parent)
    return subprocess.Popen(
        [sys.executable, "-c", _PROBE, str(reference / "postprocess_and_msda_golden.safetensors")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def compiler() -> None:
    if (reason := build.unavailable_reason("cpu")) is not None:
        pytest.skip(f"CPU kernel cannot be built here: {reason}")


# ------------------------------------------------------------------------ the self-check
def _reference_op(*args):
    return ms_deform_attn_torch(*args)


def test_self_check_passes_a_correct_op():
    assert selfcheck.run(_reference_op, "cpu") is None


@pytest.mark.parametrize(
    ("op", "needle"),
    [
        (lambda *a: ms_deform_attn_torch(*a) * 1.001 + 1e-3, "differs from the PyTorch reference"),
        (lambda *a: ms_deform_attn_torch(*a) * float("nan"), "differs"),
        (lambda *a: ms_deform_attn_torch(*a)[:, :1], "returned shape"),
        (lambda *a: (_ for _ in ()).throw(RuntimeError("launch failed")), "raised RuntimeError"),
    ],
    ids=["off", "nan", "shape", "launch error"],
)
def test_self_check_catches_a_wrong_op(op, needle):
    problem = selfcheck.run(op, "cpu")
    assert problem is not None and needle in problem


@pytest.mark.slow
def test_a_wrong_kernel_is_caught_and_auto_falls_back_once(
    compiler, focus_reference: Path, tmp_path: Path
) -> None:
    """A kernel built with the fault macro computes wrong values: the self-check catches
    it, `auto` warns once and computes with PyTorch, and doctor says why."""
    env = {
        "NAPARI_FOCUS_CACHE": str(tmp_path / "cache"),
        "NAPARI_FOCUS_KERNEL_CFLAGS": "-DNAPARI_FOCUS_MSDA_FAULT",
    }
    probe = _result(_probe(focus_reference, env))
    assert max(probe["errors"]) < 1e-5  # the fallback's results are right
    assert len(probe["warnings"]) == 1, probe["warnings"]
    category, message = probe["warnings"][0]
    assert category == KernelFallbackWarning.__name__
    assert "self-check failed" in message and "differs from the PyTorch reference" in message
    assert "PyTorch implementation" in message
    assert "self-check failed" in probe["explicit"]
    events = [event for event, kind, _ in probe["events"]]
    assert events == ["build-started", "build-finished", "self-check-failed"]
    assert probe["events"][0][2].startswith(build.BUILD_STARTED)
    assert probe["status"]["status"] == "unavailable"
    assert probe["status"]["self_check"].startswith("failed")
    assert "cpu: unavailable - it built, but its self-check failed" in probe["doctor"]

    # the faulty build lives in its own folder, and the next process does not rebuild it
    again = _result(_probe(focus_reference, env))
    assert [event for event, _, _ in again["events"]] == ["self-check-failed"]
    assert again["directory"] == probe["directory"]
    assert max(again["errors"]) < 1e-5 and len(again["warnings"]) == 1


@pytest.mark.slow
def test_processes_with_other_source_paths_share_the_cache(
    compiler, focus_reference: Path, tmp_path: Path
) -> None:
    """An installed copy and a checkout use one cached build without rebuilding it in turn."""
    build.load("cpu")  # built (or loaded) by this process into the session's cache
    library = build.build_directory("cpu") / "napari_focus_msda_cpu.so"
    before = library.stat().st_mtime_ns
    copy = tmp_path / "elsewhere"
    for name in ("napari_focus", "ops", "resources"):
        shutil.copytree(PACKAGE_PARENT / name, copy / name)
    shutil.copy(PACKAGE_PARENT / "pyproject.toml", copy / "pyproject.toml")
    env = {"NAPARI_FOCUS_CACHE": str(build.cache_root())}
    procs = [_probe(focus_reference, env, parent) for parent in (copy, PACKAGE_PARENT, copy)]
    for proc in procs:
        result = _result(proc)
        assert result["events"] == [], result["events"]  # nothing was compiled
        assert result["warnings"] == [] and result["explicit"] is None
        assert max(result["errors"]) < 1e-5
        assert result["directory"] == str(build.build_directory("cpu"))
        assert "self-check against the PyTorch reference passed" in result["doctor"]
    assert library.stat().st_mtime_ns == before


# ------------------------------------------------------------------------ errors reach Python
_LOST_ERROR = textwrap.dedent(
    """
    import json, sys
    from napari_focus.ops import build, doctor, error_check, ms_deform_attn
    from msda_cases import random_inputs
    if sys.argv[1] == "crash":  # what a kernel from a broken compiler wrapper does
        error_check._ERROR_PROBE = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    try:
        ms_deform_attn(*random_inputs(0, 1, 3, 2, 8, [(3, 3)], 2), backend="cpu")
        explicit = None
    except RuntimeError as exc:
        explicit = str(exc)
    print(json.dumps({"explicit": explicit, "doctor": doctor.doctor_report()}))
    """
)


def test_the_built_kernel_raises_errors_into_python(compiler) -> None:
    build.load("cpu")
    marker = json.loads((build.build_directory("cpu") / "build.ok").read_text())
    assert marker["errors_reach_python"] is True and marker["error_problem"] is None
    library = build.build_directory("cpu") / "napari_focus_msda_cpu.so"
    assert error_check.errors_reach_python(library, "napari_focus_cpu") is None


@pytest.mark.parametrize(
    ("script", "needle"),
    [
        ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "killed by SIGSEGV"),
        ("import sys; sys.exit(3)", "must refuse was accepted"),
        ("raise SystemExit('cannot load the library')", "status 1 (cannot load the library)"),
    ],
    ids=["crash", "accepted", "no-load"],
)
def test_the_error_check_says_what_happened(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, script: str, needle: str
) -> None:
    monkeypatch.setattr(error_check, "_ERROR_PROBE", script)
    problem = error_check.errors_reach_python(tmp_path / "lib.so", "napari_focus_cpu")
    assert problem is not None and needle in problem, problem
    if needle.startswith("killed"):
        assert "CXX" in problem  # says what to do


def test_a_check_that_cannot_run_leaves_the_kernel_in_use(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def no_interpreter(*args, **kwargs):
        raise FileNotFoundError("no such file: python")

    monkeypatch.setattr(error_check.subprocess, "run", no_interpreter)
    marker = tmp_path / "build.ok"
    marker.write_text('{"key": "k"}\n')
    assert error_check.recorded_check(marker, tmp_path / "lib.so", "napari_focus_cpu") is None
    assert json.loads(marker.read_text()) == {"key": "k"}  # checked again next time
    assert "could not check" in caplog.text


@pytest.mark.slow
def test_a_kernel_whose_errors_kill_the_process_is_refused_and_remembered(
    compiler, tmp_path: Path
) -> None:
    """A cached build from before the check existed is checked once; a crash disables it
    with a reason naming the compiler, and the next process trusts the recorded result."""
    build.load("cpu")
    cache = tmp_path / "cache"
    built = build.build_directory("cpu")
    copy = cache / built.relative_to(build.cache_root())
    shutil.copytree(built, copy)
    (copy / "build.ok").write_text(json.dumps({"key": build_identity.build_key("cpu")}) + "\n")
    env = dict(os.environ)  # CXX/CC as this process has them: the same build key
    env.update(
        NAPARI_FOCUS_CACHE=str(cache),
        PYTHONPATH=os.pathsep.join([str(PACKAGE_PARENT), str(Path(__file__).parent)]),
    )
    results = []
    for mode in ("crash", "real"):
        proc = subprocess.run(
            [sys.executable, "-c", _LOST_ERROR, mode], env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    for result in results:
        assert "does not reach Python" in result["explicit"]
        assert "killed by SIGSEGV" in result["explicit"] and "CXX=" in result["explicit"]
        assert "cpu: unavailable - it built, but an error raised inside it" in result["doctor"]
    marker = json.loads((copy / "build.ok").read_text())
    assert marker["errors_reach_python"] is False and "SIGSEGV" in marker["error_problem"]


# ------------------------------------------------------------------------ the cache key
def test_cache_key_follows_sources_flags_and_compiler(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NAPARI_FOCUS_CACHE", str(tmp_path / "cache"))
    original = build.build_directory("cpu")
    assert original.name.startswith("napari_focus_msda_cpu-")
    assert original.parent == tmp_path / "cache" / "ops" / build_identity.torch_variant()

    sources = tmp_path / "ops"
    shutil.copytree(build_identity.bundled_dir("ops"), sources)
    monkeypatch.setattr(build_identity, "bundled_dir", lambda name: sources)
    assert build.build_directory("cpu") == original  # same contents, other path: same build
    with open(sources / "msda_cpu.cpp", "a") as f:
        f.write("\n// changed\n")
    changed_source = build.build_directory("cpu")
    assert changed_source != original

    monkeypatch.setenv(toolchain.EXTRA_CFLAGS_ENV, "-DSOMETHING")
    changed_flags = build.build_directory("cpu")
    assert changed_flags not in (original, changed_source)

    other = tmp_path / "other-c++"
    other.write_text("#!/bin/sh\necho 'c++ (Other) 99.1'\n")
    other.chmod(0o755)
    monkeypatch.setenv("CXX", str(other))
    assert build.build_directory("cpu") not in (original, changed_source, changed_flags)


# ------------------------------------------------------------------------ CUDA toolchain
def _fake_toolkit(tmp_path: Path, release: str, archs: list[str]) -> Path:
    home = tmp_path / f"cuda-{release}"
    (home / "bin").mkdir(parents=True)
    nvcc = home / "bin" / "nvcc"
    listing = "\\n".join(f"compute_{a}" for a in archs)
    nvcc.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        case "$1" in
          --version) echo "Cuda compilation tools, release {release}, V{release}.1";;
          --list-gpu-arch) printf "{listing}\\n";;
        esac
        """)
    )
    nvcc.chmod(0o755)
    return nvcc


def test_nvcc_of_another_cuda_major_is_refused(tmp_path: Path) -> None:
    toolchain._nvcc_output.cache_clear()
    nvcc = _fake_toolkit(tmp_path, "13.0", ["75", "80", "90"])
    assert toolchain.nvcc_release(nvcc) == (13, 0)
    problem = toolchain.nvcc_problem(nvcc, "12.8")
    assert problem is not None
    assert "CUDA 13.0" in problem and "CUDA 12.8" in problem and "CUDA 12.x toolkit" in problem
    assert toolchain.nvcc_problem(nvcc, "13.0") is None


def test_arch_list_is_clamped_to_the_toolkit(tmp_path: Path) -> None:
    toolchain._nvcc_output.cache_clear()
    nvcc = _fake_toolkit(tmp_path, "13.0", ["75", "80", "86", "90", "100", "120"])
    supported = toolchain.supported_cuda_archs(nvcc)
    assert supported == {"7.5", "8.0", "8.6", "9.0", "10.0", "12.0"}
    kept, dropped = toolchain.clamp_cuda_archs(["7.0", "8.0", "9.0+PTX", "12.0"], supported)
    assert kept == ["8.0", "9.0+PTX", "12.0"] and dropped == ["7.0"]
    assert toolchain.clamp_cuda_archs(["7.0"], supported) == ([], ["7.0"])
    assert toolchain.clamp_cuda_archs(["7.0"], None) == (["7.0"], [])


def test_cuda_reasons_name_the_toolkit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a CUDA torch and a GPU (simulated), a mismatched or too new toolkit is named."""
    toolchain._nvcc_output.cache_clear()
    from torch.utils import cpp_extension

    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    nvcc = _fake_toolkit(tmp_path, "13.0", ["75", "80", "90"])
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", str(nvcc.parent.parent))
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "7.0")
    if build.unavailable_reason("cpu") is not None:
        pytest.skip("no C++ compiler or ninja: the CUDA checks come after those")
    reason = build.unavailable_reason("cuda")
    assert reason is not None and "CUDA 13.0 toolkit cannot compile" in reason and "7.0" in reason
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "7.0;9.0")
    assert build.unavailable_reason("cuda") is None
    assert build_identity.cuda_archs() == ["9.0"]
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert "this PyTorch was built with CUDA 12.8" in build.unavailable_reason("cuda")


# ------------------------------------------------------------------------ CLI announcement
def test_cli_prints_the_first_build(capsys: pytest.CaptureFixture) -> None:
    import logging

    from napari_focus.cli import _announce_kernel_builds

    _announce_kernel_builds()
    _announce_kernel_builds()  # once only
    build._announce("cpu", "build-started", f"{build.BUILD_STARTED}: CPU, into /x")
    build._announce("cpu", "self-check-failed", "not for the CLI: the warning says it")
    err = capsys.readouterr().err
    assert err == f"napari-focus: {build.BUILD_STARTED}: CPU, into /x\n"
    log = logging.getLogger("napari_focus.ops.build")
    for handler in list(log.handlers):
        log.removeHandler(handler)
