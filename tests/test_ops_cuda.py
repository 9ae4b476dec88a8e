"""The CUDA deformable-attention kernel (GPU tests skip cleanly without a GPU)."""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from msda_cases import golden, random_inputs, shapes

from napari_focus._paths import bundled_dir
from napari_focus.ops import build, ms_deform_attn, ms_deform_attn_torch

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _nvcc() -> str | None:
    if found := shutil.which("nvcc"):
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return None


def test_torch_free_kernel_compiles_with_nvcc(tmp_path: Path) -> None:
    """The kernels must build with plain nvcc, no torch headers (torch CPU wheels have none)."""
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found")
    source = bundled_dir("ops") / "msda_cuda_kernel.cu"
    result = subprocess.run(
        # The same half-type restrictions torch puts on extension builds.
        [
            nvcc,
            "-std=c++17",
            "-D__CUDA_NO_HALF_OPERATORS__",
            "-D__CUDA_NO_HALF_CONVERSIONS__",
            "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
            "-D__CUDA_NO_HALF2_OPERATORS__",
            "-c",
            str(source),
            "-o",
            str(tmp_path / "kernel.o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kernel.o").stat().st_size > 0


def test_cuda_binding_compiles_against_torch_headers(tmp_path: Path) -> None:
    """The ATen binding (with its level bounds check) is valid C++ for this torch, checked
    without a GPU: a syntax-only compile with torch's headers and the CUDA runtime's."""
    from torch.utils.cpp_extension import include_paths

    nvcc = _nvcc()
    cxx = shutil.which(os.environ.get("CXX", "c++"))
    if nvcc is None or cxx is None:
        pytest.skip("needs nvcc (for the CUDA headers) and a C++ compiler")
    homes = [Path(nvcc).resolve().parent.parent, Path("/usr/local/cuda")]
    if env_home := os.environ.get("CUDA_HOME"):
        homes.insert(0, Path(env_home))
    headers = [h / "include" for h in homes if (h / "include" / "cuda_runtime.h").exists()]
    if not headers:
        pytest.skip("the CUDA runtime headers (cuda_runtime.h) were not found")
    # CPU wheels ship c10/cuda headers without the one their CMake build generates
    stub = tmp_path / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    stub.parent.mkdir(parents=True)
    stub.write_text("#pragma once\n")
    includes = [*include_paths(), str(headers[0]), str(tmp_path)]
    result = subprocess.run(
        [cxx, "-std=c++17", "-fsyntax-only", *(f"-I{p}" for p in includes),
         str(bundled_dir("ops") / "msda_cuda.cpp")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def cuda_kernel() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if (reason := build.unavailable_reason("cuda")) is not None:
        pytest.skip(f"CUDA kernel cannot be built here: {reason}")
    build.load("cuda")


@pytest.mark.cuda
@needs_gpu
def test_golden(cuda_kernel: None, focus_reference: Path) -> None:
    args, expected = golden(focus_reference)
    out = ms_deform_attn(*[a.cuda() for a in args], backend="cuda")
    torch.testing.assert_close(out.cpu(), expected, atol=1e-5, rtol=0)


@pytest.mark.cuda
@needs_gpu
@settings(max_examples=40, deadline=None)
@given(case=shapes())
def test_matches_reference(cuda_kernel: None, case: dict) -> None:
    args = random_inputs(**case, device="cuda")
    torch.testing.assert_close(
        ms_deform_attn(*args, backend="cuda"), ms_deform_attn_torch(*args), atol=1e-5, rtol=1e-5
    )


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2), (torch.float64, 1e-12)]
)
def test_other_dtypes(cuda_kernel: None, dtype: torch.dtype, tol: float) -> None:
    args = random_inputs(0, 2, 50, 8, 32, [(9, 11), (5, 6), (3, 3)], 4, device="cuda")
    typed = [a.to(dtype) if a.is_floating_point() else a for a in args]
    out = ms_deform_attn(*typed, backend="cuda")
    assert out.dtype == dtype
    # Compare with float64 math on the same (rounded) inputs: the kernel
    # accumulates in float32, so only the final rounding to `dtype` remains.
    exact = ms_deform_attn_torch(*[a.double() if a.is_floating_point() else a for a in typed])
    torch.testing.assert_close(out.double(), exact, atol=tol, rtol=tol)


@pytest.mark.cuda
@needs_gpu
def test_auto_picks_the_cuda_kernel(cuda_kernel: None) -> None:
    args = random_inputs(1, 1, 20, 4, 16, [(4, 4)], 2, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ms_deform_attn(*args)
    assert build.state("cuda").op is not None
    torch.testing.assert_close(out, ms_deform_attn_torch(*args))


@pytest.mark.cuda
@needs_gpu
def test_cpu_backend_rejects_cuda_tensors() -> None:
    args = random_inputs(2, 1, 4, 2, 8, [(3, 3)], 2, device="cuda")
    with pytest.raises(ValueError, match="needs CPU tensors"):
        ms_deform_attn(*args, backend="cpu")


@pytest.mark.cuda
@needs_gpu
def test_gradients_come_from_the_reference(cuda_kernel: None) -> None:
    args = random_inputs(3, 2, 7, 3, 8, [(4, 5), (2, 3)], 3, dtype=torch.float64, device="cuda")
    for i in (0, 3, 4):
        args[i].requires_grad_(True)
    out = ms_deform_attn(*args, backend="cuda")
    grads = torch.autograd.grad(out.sum(), [args[0], args[3], args[4]])
    expected = torch.autograd.grad(ms_deform_attn_torch(*args).sum(), [args[0], args[3], args[4]])
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.cuda
@needs_gpu
def test_level_tensors_on_the_host_or_the_gpu(cuda_kernel: None) -> None:
    """The model passes host level tensors (no wait for the GPU); device ones work too,
    and out-of-range levels are refused either way instead of reading outside value."""
    value, shapes_, starts, locations, weights = random_inputs(
        5, 2, 30, 4, 16, [(6, 7), (3, 4)], 3, device="cuda"
    )
    on_gpu = ms_deform_attn(value, shapes_, starts, locations, weights, backend="cuda")
    on_host = ms_deform_attn(value, shapes_.cpu(), starts.cpu(), locations, weights, backend="cuda")
    torch.testing.assert_close(on_host, on_gpu, atol=0, rtol=0)
    for levels in ((shapes_, starts), (shapes_.cpu(), starts.cpu())):
        with pytest.raises(RuntimeError, match="does not fit"):
            ms_deform_attn(value[:, :40], *levels, locations, weights, backend="cuda")
    torch.cuda.synchronize()  # the CUDA context survived
