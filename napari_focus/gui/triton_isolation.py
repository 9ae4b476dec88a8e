"""Triton and Mesa each bring an LLVM: Triton is loaded so that it binds to its own.

The CUDA builds of PyTorch (the default on PyPI for Linux) install Triton, which torch
imports lazily: when a model is built on the meta device, or at the first call of a
function that opts out of ``torch.compile``. Mesa's OpenGL drivers (llvmpipe, as under
Xvfb or a remote desktop, and AMD's radeonsi) load the system ``libLLVM`` when napari
opens its canvas. A ``libtriton`` loaded after that binds its LLVM calls to the system
library, and the whole napari process dies with a segmentation fault. Loaded with
``RTLD_DEEPBIND``, libtriton resolves its own symbols first, whatever was loaded before.
"""

from __future__ import annotations

import importlib.util
import os
import sys


def load_triton_isolated() -> None:
    """Import Triton, when it is installed and not imported yet, with ``RTLD_DEEPBIND``
    (Linux only; elsewhere, and without Triton, nothing happens)."""
    deepbind = getattr(os, "RTLD_DEEPBIND", 0)
    if not sys.platform.startswith("linux") or not deepbind or "triton" in sys.modules:
        return
    if importlib.util.find_spec("triton") is None:
        return
    import torch  # noqa: F401  torch's own libraries load with the usual flags

    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | deepbind)
    try:
        import triton  # noqa: F401
    except Exception:  # a broken Triton install: torch then goes on without it, as ever
        sys.modules.pop("triton", None)
    finally:
        sys.setdlopenflags(flags)
