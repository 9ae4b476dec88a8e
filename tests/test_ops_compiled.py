"""The compiled CPU deformable-attention kernel, its JIT build and the fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from msda_cases import golden, random_inputs, shapes

import napari_focus
from napari_focus.ops import build, build_identity, ms_deform_attn, ms_deform_attn_torch
from napari_focus.ops.compiled import KernelFallbackWarning
from napari_focus.ops.doctor import doctor_report, kernel_status

PACKAGE_PARENT = Path(napari_focus.__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cpu_kernel() -> None:
    """Build (or load from the cache) the CPU kernel once per test session."""
    if (reason := build.unavailable_reason("cpu")) is not None:
        pytest.skip(f"CPU kernel cannot be built here: {reason}")
    build.load("cpu")


def test_golden(cpu_kernel: None, focus_reference: Path) -> None:
    args, expected = golden(focus_reference)
    out = ms_deform_attn(*args, backend="cpu")
    assert out.dtype == expected.dtype and out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@settings(max_examples=60, deadline=None)
@given(case=shapes())
def test_matches_reference(cpu_kernel: None, case: dict) -> None:
    args = random_inputs(**case)
    torch.testing.assert_close(
        ms_deform_attn(*args, backend="cpu"), ms_deform_attn_torch(*args), atol=1e-5, rtol=1e-5
    )


@settings(max_examples=15, deadline=None)
@given(case=shapes())
def test_float64(cpu_kernel: None, case: dict) -> None:
    args = random_inputs(**case, dtype=torch.float64)
    out = ms_deform_attn(*args, backend="cpu")
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ms_deform_attn_torch(*args), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_computed_in_float32(cpu_kernel: None, dtype: torch.dtype) -> None:
    args = random_inputs(0, 2, 30, 4, 32, [(5, 7), (3, 4)], 4, dtype=dtype)
    out = ms_deform_attn(*args, backend="cpu")
    assert out.dtype == dtype
    as_float = [a.float() if a.is_floating_point() else a for a in args]
    expected = ms_deform_attn_torch(*as_float).to(dtype)
    torch.testing.assert_close(out, expected)


def test_points_on_borders_and_far_outside(cpu_kernel: None) -> None:
    args = random_inputs(1, 1, 1, 2, 16, [(3, 5), (1, 1)], 8)
    edges = torch.tensor([0.0, 1.0, -1e30, 1e30, -0.5, 1.5, 0.5 / 3, 1 - 0.5 / 5])
    locations = args[3]
    locations[..., 0] = edges.view(1, 1, 1, 1, 8)
    locations[..., 1] = edges.flip(0).view(1, 1, 1, 1, 8)
    torch.testing.assert_close(
        ms_deform_attn(*args, backend="cpu"), ms_deform_attn_torch(*args), atol=1e-6, rtol=1e-6
    )


def test_non_contiguous_inputs(cpu_kernel: None) -> None:
    value, shapes_, starts, locations, weights = random_inputs(2, 2, 9, 3, 8, [(4, 6)], 2)
    value_t = value.transpose(2, 3).contiguous().transpose(2, 3)
    assert not value_t.is_contiguous()
    torch.testing.assert_close(
        ms_deform_attn(value_t, shapes_, starts, locations, weights, backend="cpu"),
        ms_deform_attn_torch(value, shapes_, starts, locations, weights),
    )


def test_empty_queries(cpu_kernel: None) -> None:
    args = random_inputs(3, 2, 0, 4, 8, [(3, 3)], 2)
    assert ms_deform_attn(*args, backend="cpu").shape == (2, 0, 32)


def test_levels_must_fit_in_value(cpu_kernel: None) -> None:
    value, shapes_, starts, locations, weights = random_inputs(4, 1, 3, 2, 8, [(4, 4)], 2)
    with pytest.raises(RuntimeError, match="does not fit"):
        ms_deform_attn(value[:, :10], shapes_, starts, locations, weights, backend="cpu")


def test_auto_uses_the_kernel_without_warning(cpu_kernel: None) -> None:
    args = random_inputs(5, 1, 10, 2, 8, [(3, 3)], 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ms_deform_attn(*args)
    assert build.state("cpu").op is not None
    torch.testing.assert_close(out, ms_deform_attn_torch(*args))


@pytest.mark.parametrize("backend", ["auto", "cpu"])
def test_gradients_come_from_the_reference(cpu_kernel: None, backend: str) -> None:
    args = random_inputs(6, 2, 7, 3, 8, [(4, 5), (2, 3)], 3, dtype=torch.float64)
    for i in (0, 3, 4):
        args[i].requires_grad_(True)
    out = ms_deform_attn(*args, backend=backend)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, [args[0], args[3], args[4]], grad_out)
    expected_out = ms_deform_attn_torch(*args)
    expected = torch.autograd.grad(expected_out, [args[0], args[3], args[4]], grad_out)
    torch.testing.assert_close(out, expected_out)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_gradient_for_one_input_only(cpu_kernel: None) -> None:
    args = random_inputs(7, 1, 5, 2, 8, [(3, 4)], 2)
    args[4].requires_grad_(True)
    out = ms_deform_attn(*args, backend="cpu")
    (grad,) = torch.autograd.grad(out.sum(), args[4])
    (expected,) = torch.autograd.grad(ms_deform_attn_torch(*args).sum(), args[4])
    torch.testing.assert_close(grad, expected)


def test_cuda_backend_rejects_cpu_tensors() -> None:
    args = random_inputs(8, 1, 4, 2, 8, [(3, 3)], 2)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        ms_deform_attn(*args, backend="cuda")


def test_doctor_reports_the_loaded_kernel(cpu_kernel: None) -> None:
    status = kernel_status()
    assert status["kernels"]["cpu"]["status"] == "loaded"
    assert status["torch"] == torch.__version__
    report = doctor_report()
    assert "cpu: loaded" in report and str(build.cache_root()) in report
    assert f"folder: {build.build_directory('cpu')}" in report
    if torch.version.cuda is None:  # no folder to look in for a kernel that cannot be built
        assert "cuda: unavailable" in report
        assert f"folder: {build.build_directory('cuda')}" not in report


def test_cache_layout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NAPARI_FOCUS_CACHE", str(tmp_path))
    directory = build.build_directory("cpu")
    assert directory.parent == tmp_path / "ops" / build_identity.torch_variant()
    assert directory.name.startswith("napari_focus_msda_cpu-")
    assert torch.__version__.split("+")[0] in build_identity.torch_variant()


_PROBE = textwrap.dedent(
    """
    import json, sys, warnings
    import torch
    from safetensors.torch import load_file
    from napari_focus.ops import ms_deform_attn

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
    print(json.dumps({"errors": errors, "explicit": explicit,
                      "warnings": [[w.category.__name__, str(w.message)] for w in caught]}))
    """
)


def _run_probe(reference: Path, env_changes: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CXX", "CC")}
    env.update(env_changes)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_PARENT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(reference / "postprocess_and_msda_golden.safetensors")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_auto_falls_back_without_a_compiler(focus_reference: Path, tmp_path: Path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    probe = _run_probe(
        focus_reference, {"PATH": str(empty_bin), "NAPARI_FOCUS_CACHE": str(tmp_path / "cache")}
    )
    assert max(probe["errors"]) < 1e-5
    assert len(probe["warnings"]) == 1
    category, message = probe["warnings"][0]
    assert category == KernelFallbackWarning.__name__
    assert "no C++ compiler" in message and "PyTorch implementation" in message
    assert "no C++ compiler" in probe["explicit"]


def test_auto_falls_back_when_the_build_fails(focus_reference: Path, tmp_path: Path) -> None:
    calls = tmp_path / "compiler-calls"
    broken = tmp_path / "broken-c++"
    # Answers torch's version probes like GCC, then fails every compilation.
    broken.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        case "$*" in
          *-dumpversion*) echo 12.2.0; exit 0;;
          -v|--version) echo "gcc version 12.2.0 (GCC)" >&2; exit 0;;
        esac
        echo call >> "{calls}"
        echo "napari-focus test: this compiler is broken" >&2
        exit 1
        """)
    )
    broken.chmod(0o755)
    cache = tmp_path / "cache"
    probe = _run_probe(focus_reference, {"CXX": str(broken), "NAPARI_FOCUS_CACHE": str(cache)})
    assert max(probe["errors"]) < 1e-5
    assert len(probe["warnings"]) == 1, probe["warnings"]
    category, message = probe["warnings"][0]
    assert category == KernelFallbackWarning.__name__
    logs = list(cache.glob("ops/*/napari_focus_msda_cpu-*/build.log"))
    assert len(logs) == 1
    assert str(logs[0]) in message and str(logs[0]) in probe["explicit"]
    assert "this compiler is broken" in logs[0].read_text()
    assert calls.read_text().count("call") == 1  # a failed build is not retried


@pytest.mark.slow
def test_concurrent_first_builds_share_the_cache(focus_reference: Path, tmp_path: Path) -> None:
    """Two processes building into one empty cache both get a working kernel."""
    if (reason := build.unavailable_reason("cpu")) is not None:
        pytest.skip(f"CPU kernel cannot be built here: {reason}")
    env = {
        **os.environ,
        "NAPARI_FOCUS_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": os.pathsep.join([str(PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")]),
    }
    golden_file = focus_reference / "postprocess_and_msda_golden.safetensors"
    probe = [sys.executable, "-c", _PROBE, str(golden_file)]
    procs = [
        subprocess.Popen(probe, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr
        result = json.loads(stdout.strip().splitlines()[-1])
        assert result["warnings"] == [] and result["explicit"] is None
        assert max(result["errors"]) < 1e-5


def test_the_kernel_traces_under_torch_compile(cpu_kernel: None) -> None:
    """`predict --compile`: Dynamo traces the op through its fake implementation (shape
    and dtype only), with no graph break, and the compiled call gives the same values."""
    args = random_inputs(4, 2, 9, 2, 8, [(4, 4), (2, 3)], 2)
    traced = torch.compile(
        lambda *a: ms_deform_attn(*a, backend="cpu") * 2, backend="eager", fullgraph=True
    )
    torch.testing.assert_close(traced(*args), 2 * ms_deform_attn_torch(*args))


_FIRST_USE_TRACED = textwrap.dedent(
    """
    import json, torch
    from msda_cases import random_inputs
    from napari_focus.ops import ms_deform_attn, ms_deform_attn_torch, selfcheck
    checks, real = [], selfcheck.run
    def spy(op, kind):
        checks.append(torch.compiler.is_compiling())
        return real(op, kind)
    selfcheck.run = spy
    args = random_inputs(4, 2, 9, 2, 8, [(4, 4), (2, 3)], 2)
    out = torch.compile(lambda *a: ms_deform_attn(*a) * 2, backend="eager")(*args)
    error = float((out - 2 * ms_deform_attn_torch(*args)).abs().max())
    print(json.dumps({"checks_traced": checks, "error": error}))
    """
)


def test_a_first_use_under_torch_compile_loads_the_kernel_untraced(cpu_kernel: None) -> None:
    """A model compiled before its kernel was loaded: the loading and the self-check run
    as plain Python, not traced by Dynamo (on an H100, tracing them took FOCUS-L's
    compile past minutes, a graph break at every file and random-number call)."""
    paths = os.pathsep.join([str(PACKAGE_PARENT), str(Path(__file__).parent)])
    env = {**os.environ, "PYTHONPATH": paths}
    proc = subprocess.run(
        [sys.executable, "-c", _FIRST_USE_TRACED], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["checks_traced"] == [False]  # loaded once (from the cache), untraced
    assert result["error"] < 1e-5


def test_a_compiler_named_by_its_path_that_is_not_there_is_said_so(monkeypatch) -> None:
    from napari_focus.ops.toolchain import unavailable_reason

    monkeypatch.setenv("CXX", "/opt/nowhere/g++")
    assert "('/opt/nowhere/g++' does not exist;" in unavailable_reason("cpu")
    monkeypatch.setenv("CXX", "no-such-compiler++")
    assert "('no-such-compiler++' is not on PATH;" in unavailable_reason("cpu")


def test_a_kernel_cache_that_cannot_be_written_is_said_before_a_build(
    monkeypatch, tmp_path: Path
) -> None:
    """doctor said "builds on first use" of a cache no build could write into; the first
    use then failed with a PermissionError that named neither the cache nor its setting."""
    from napari_focus.ops import toolchain

    if toolchain.unavailable_reason("cpu") is not None:
        pytest.skip("no C++ compiler or ninja: their reason comes first")
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("NAPARI_FOCUS_CACHE", str(blocker / "cache"))
    reason = build.unavailable_reason("cpu")
    assert reason == (
        f"the kernel cache cannot be written ({blocker} is a file, not a folder; the build goes "
        f"into {build.build_directory('cpu')}); set NAPARI_FOCUS_CACHE to a folder you can write"
    )
    assert str(blocker / "cache") in reason
    monkeypatch.setitem(build._STATES, "cpu", build.KernelState("cpu"))
    assert f"cpu: unavailable - {reason}" in doctor_report()
    monkeypatch.setenv("NAPARI_FOCUS_CACHE", str(tmp_path / "cache"))
    assert build.unavailable_reason("cpu") is None
