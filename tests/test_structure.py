"""The package's shape: no import cycle (function-level imports included) and short functions."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gptkit"
LONGEST = 60  # lines, decorators and docstring included


def gptkit_imports(path: Path) -> set[str]:
    """Every gptkit module `path` imports, at any depth of the file (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gptkit"):
            if node.module == "gptkit":
                found.update(f"gptkit.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("gptkit."))
    modules = {f"gptkit.{p.stem}" for p in PACKAGE.glob("*.py")}
    return {m for m in found if m in modules} - {f"gptkit.{path.stem}"}


def import_graph() -> dict[str, set[str]]:
    return {f"gptkit.{p.stem}": gptkit_imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt] if nxt in path else path + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_find_cycle_sees_a_cycle_through_a_function_level_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert graph["gptkit.checkpoint"], "the scan found no imports: it is broken"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_pretrained_never_imports_the_model():
    """GPT.from_pretrained calls into pretrained; the other way round would be a cycle."""
    assert "gptkit.model" not in import_graph()["gptkit.pretrained"]


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_no_function_is_longer_than_a_screen(path):
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1 + len(node.decorator_list)} lines)"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 + len(node.decorator_list) > LONGEST
    ]
    assert not long, f"{path.name}: {', '.join(long)}"
