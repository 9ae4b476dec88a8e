"""The README's Python API table states the signatures the code has: every parameter
it names exists, in the same place (before or after ``*``) and with the same default;
what it leaves out is keyword-only with a default (``cancelled=`` has a row of its own)."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

from napari_focus import FocusPredictor

README = Path(__file__).resolve().parents[1] / "README.md"
CALL = re.compile(r"`((?:FocusPredictor|predictor|napari_focus)\.[\w.]+)\(([^`]*)\)`")


def _documented_calls() -> list[tuple[str, str]]:
    if not README.is_file():
        pytest.skip("needs the source checkout's README.md")
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [m.groups() for row in rows for m in CALL.finditer(row.split(" | ")[0])]


def _target(name: str):
    parts = name.split(".")
    if parts[0] in ("FocusPredictor", "predictor"):
        return getattr(FocusPredictor, parts[1])
    module = importlib.import_module(".".join(parts[:-1]))
    return getattr(module, parts[-1])


def _parse(params: str) -> list[tuple[str, bool, object]]:
    """(name, keyword-only, default or inspect.Parameter.empty) per documented parameter."""
    tree = ast.parse(f"def f({params}): pass").body[0].args
    positional = tree.args
    defaults = [inspect.Parameter.empty] * (len(positional) - len(tree.defaults)) + [
        ast.unparse(d) for d in tree.defaults
    ]
    out = [(a.arg, False, d) for a, d in zip(positional, defaults, strict=True)]
    for arg, default in zip(tree.kwonlyargs, tree.kw_defaults, strict=True):
        value = inspect.Parameter.empty if default is None else ast.unparse(default)
        out.append((arg.arg, True, value))
    return out


def test_the_api_table_lists_calls() -> None:
    assert len(_documented_calls()) >= 10


@pytest.mark.parametrize(("name", "params"), _documented_calls() if README.is_file() else [])
def test_a_documented_signature_is_the_code_s(name: str, params: str) -> None:
    if '"large" \\| "giant"' in params:  # build_model's one argument, named by its values
        assert list(inspect.signature(_target(name)).parameters) == ["architecture"]
        return
    signature = inspect.signature(_target(name))
    actual = {k: p for k, p in signature.parameters.items() if k != "self"}
    documented = _parse(params)
    for param, keyword_only, default in documented:
        assert param in actual, f"{name}: README names {param!r}, the code has {list(actual)}"
        real = actual[param]
        assert (real.kind is inspect.Parameter.KEYWORD_ONLY) == keyword_only, (name, param)
        if default is not inspect.Parameter.empty:
            assert repr(real.default) == default or str(real.default) == default, (name, param)
    left_out = set(actual) - {p for p, _, _ in documented}
    for param in left_out:
        real = actual[param]
        assert real.kind is inspect.Parameter.KEYWORD_ONLY, (name, param)
        assert real.default is not inspect.Parameter.empty, (name, param)
