"""The package's shape, read from its source: no import cycles, the model and the
command-line core never import napari or Qt, optional heavy dependencies load lazily."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import napari_focus

PACKAGE = Path(napari_focus.__file__).parent
GUI_MODULES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui",
               "superqt", "vispy")  # fmt: skip
# what must run on a cluster node or in a script without a display
HEADLESS = ("model", "ops", "predictor", "pipeline", "training", "distributed", "series",
            "datasets", "checkpoints", "io", "quality", "transforms", "runtime")  # fmt: skip


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports, at any depth (functions included), except under
    ``if TYPE_CHECKING``; ``from .x import y`` counts as ``x.y`` where that is a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                stem = package[: len(package) - node.level + 1]
                base = ".".join(stem + ([node.module] if node.module else []))
            found.update(f"{base}.{alias.name}" for alias in node.names)
            found.add(base)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(name, path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            # a module's own packages are imported before it: not an edge of a cycle
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    graph = _graph()
    assert len(graph) > 100 and "napari_focus.gui.widget" in graph
    assert _cycles(graph) == []


def test_the_model_and_the_command_line_core_never_import_napari_or_qt() -> None:
    headless = [f"napari_focus.{name}" for name in HEADLESS]
    offenders = {
        name: sorted(i for i in _imports(name, path) if i.split(".")[0] in GUI_MODULES)
        for name, path in _modules().items()
        if any(name == h or name.startswith(h + ".") for h in headless)
    }
    assert "napari_focus.model.focus" in offenders
    assert {name: found for name, found in offenders.items() if found} == {}


def test_importing_the_package_and_its_cli_loads_no_optional_or_gui_dependency() -> None:
    result = subprocess.run(
        [sys.executable, "-c",
         "import sys, napari_focus, napari_focus.cli, napari_focus.predictor; "
         "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'py_sod_metrics', "
         "'napari', 'qtpy', 'PyQt6', 'PySide6', 'magicgui', 'vispy'}))"],
        capture_output=True, text=True, cwd=PACKAGE.parent, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
