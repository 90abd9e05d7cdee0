"""medcot/ imports form no circle, read statically from every module's import statements (those under
TYPE_CHECKING and inside functions included: a circle there is a layering mistake too)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "medcot"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, modules: set[str]) -> set[str]:
    """The medcot modules ``path`` imports (``from medcot.x import y`` is medcot.x.y when that is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])]
                )
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imported(path, modules) for path in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_medcot_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "medcot.events" in graph and "medcot.engine" in graph["medcot.ui.rendering"]  # the graph is read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_a_cycle_is_found() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def runtime_imports(path: Path) -> set[str]:
    """Top-level names imported when ``path`` is imported: module level only, TYPE_CHECKING blocks left out."""
    names: set[str] = set()
    body = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while body:
        node = body.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            body += node.body + node.orelse
        elif isinstance(node, ast.Try):
            body += node.body + node.orelse + node.finalbody
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module or ""}
    return names


def test_server_mode_imports_no_torch_of_ours() -> None:
    """The server backend and the engine run without any medcot module that imports torch (transformers'
    AutoTokenizer, which loads the tokenizer, still does in transformers 5)."""
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    imports = {name: runtime_imports(path) for name, path in paths.items()}
    reached, todo = set(), ["medcot.backends.server", "medcot.engine"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += [name for name in imports[module] if name in paths]
    assert "medcot.backends.openai_client" in reached and "medcot.load_state" in reached
    with_torch = sorted(module for module in reached if any(name.split(".")[0] == "torch" for name in imports[module]))
    assert not with_torch, f"imported on the server path, and importing torch: {with_torch}"
    assert any(name.split(".")[0] == "torch" for name in imports["medcot.generation"])  # the check sees torch
