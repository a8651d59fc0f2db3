"""The house rules that the code's shape must keep (docs/architecture.md): imports flow one way
(no circle between modules, lazy imports inside functions included) and the rooms that change
most keep their functions short."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "galaxysr"


def _modules() -> dict:
    """Dotted module name → (path, is a package's __init__)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


def _import_graph() -> dict:
    """Module → the galaxysr modules it imports anywhere in its text (module level or lazily)."""
    modules, graph = _modules(), {}
    for name, (path, package) in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = name.split(".") if package else name.split(".")[:-1]
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module
                for alias in node.names:
                    targets.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict) -> list:
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_import_graph_has_no_circle_lazy_imports_included():
    graph = _import_graph()
    assert "galaxysr.maps.fits_io" in graph["galaxysr.maps.field"]  # the graph sees real imports
    assert "galaxysr.inference" in graph["galaxysr.evaluate.runs"]  # and lazy ones
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_a_map_does_no_io_and_the_lower_floors_import_nothing_above_them():
    graph = _import_graph()
    assert not any(m.startswith("galaxysr.maps.fits_io") for m in graph["galaxysr.maps.core"])
    lowest = ("galaxysr.instruments", "galaxysr.config", "galaxysr.errors")
    for module in lowest:
        assert graph[module] <= set(lowest), (module, graph[module])
    for module in ("galaxysr.model", "galaxysr.datasets", "galaxysr.training"):
        assert not {m for m in graph[module] if m.startswith(("galaxysr.inference", "galaxysr.evaluate",
                                                              "galaxysr.catalogue", "galaxysr.cli"))}, module


@pytest.mark.parametrize("room", ["training.py", "model.py", "inference"])
def test_no_function_over_80_lines_in_the_rooms_that_change_most(room):
    paths = sorted((PACKAGE / room).rglob("*.py")) if (PACKAGE / room).is_dir() else [PACKAGE / room]
    long = [f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in paths for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80]
    assert long == []
