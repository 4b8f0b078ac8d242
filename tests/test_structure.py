"""The code's shape, read from the source with ``ast`` (nothing is imported):

* no import circle among the modules of ``bench/`` and ``baselines/``, counting imports inside
  functions too (a deferred import hides a circle, it does not remove it);
* no module imports another module's private (``_name``) name, or reaches one as ``module._name``;
* ``bench/`` imports nothing from ``baselines/`` (the baselines register through entry points);
* no function in ``bench/`` is longer than 60 lines, but the listed ones, each with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "baselines")
MAX_LINES = 60
#: Functions allowed over MAX_LINES, with the reason (path:qualified name -> why).
LONG_FUNCTIONS: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) of every import in ``module``, at any depth."""
    out = []
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, node)
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((sub, None, node.lineno) if sub in MODULES else (target, a.name, node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module in MODULES:
        graph[module] = {target for target, _, _ in _imports(module) if target in MODULES and target != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    cycles = _cycles(_graph())
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_import_graph_is_read_right():
    graph = _graph()
    assert "bench.protocols.context" in graph["bench.protocols.probe"]
    assert "bench.data.store" in graph["bench.perf"]          # from bench.data.store import ...
    assert "bench.errors" in graph["bench.registry"]
    # a circle is found where there is one
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_name_crosses_a_module():
    problems = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for target, name, line in _imports(module):
            if name and name.startswith("_") and not name.startswith("__") and target in MODULES:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {target}.{name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases.update({(a.asname or a.name.split(".")[0]): a.name for a in node.names})
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(module, node)
                aliases.update({(a.asname or a.name): f"{target}.{a.name}" for a in node.names
                                if f"{target}.{a.name}" in MODULES})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and aliases.get(node.value.id) in MODULES
                    and aliases[node.value.id] != module):
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}")
    assert not problems, "\n".join(problems)


def test_the_core_never_imports_the_baselines():
    found = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {target}"
             for m in MODULES if m.split(".")[0] == "bench"
             for target, _, line in _imports(m) if target.split(".")[0] == "baselines"]
    assert not found, "\n".join(found)


def _functions(tree: ast.AST, prefix: str = ""):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{prefix}{node.name}", node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")


def test_no_function_over_60_lines():
    long = {}
    for module, path in MODULES.items():
        if module.split(".")[0] != "bench":
            continue
        for name, node in _functions(ast.parse(path.read_text())):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_LINES:
                long[f"{path.relative_to(ROOT).as_posix()}:{name}"] = lines
    unexplained = {k: v for k, v in long.items() if k not in LONG_FUNCTIONS}
    assert not unexplained, "functions over 60 lines:\n" + "\n".join(f"{k}: {v}" for k, v in unexplained.items())
    stale = set(LONG_FUNCTIONS) - set(long)
    assert not stale, f"no longer over 60 lines, take them off LONG_FUNCTIONS: {sorted(stale)}"
