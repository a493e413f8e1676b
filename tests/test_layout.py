"""The package's shape: imports form a DAG, the engine is laid out in small files, plots compile nothing.

Read from the sources (module-level imports, by AST), not by importing them.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cowbench"
README = PACKAGE.parent / "README.md"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports(path: Path) -> set[str]:
    """cowbench modules `path` imports at module level (imports inside functions are deliberate
    late bindings and do not make cycles at import time)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.startswith("cowbench"):
                if node.module:                 # `from . import x` needs the package begun, not finished
                    out.add(target)
                out.update(f"{target}.{a.name}" for a in node.names)     # x may be a module
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("cowbench"))
    return out


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {t for t in module_imports(p) if t in paths and t != m} for m, p in paths.items()}


def test_cowbench_has_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(g[m]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)


def reachable(g, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        for t in g[m]:
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


def test_plot_imports_nothing_of_the_engine():
    g = graph()
    for m in ("cowbench.plot", "cowbench.columns", "cowbench.fileio", "cowbench.report"):
        assert not {t for t in reachable(g, m) if t.startswith("cowbench._engine")}, m


def test_the_engine_compiles_only_its_own_package():
    g = graph()
    for m in g:
        if m.startswith("cowbench._engine"):
            outside = {t for t in g[m] if not t.startswith("cowbench._engine")}
            assert not outside, f"{m} imports {outside}"


def test_engine_modules_are_small():
    for path in (PACKAGE / "_engine").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 600, path.name


def test_readme_layout_names_every_module():
    text = README.read_text()
    layout = text[text.index("## Layout"):]
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        if path.name == "__init__.py" and path.parent != PACKAGE:
            continue                                  # a subpackage is named by its directory
        assert rel in layout, f"README's Layout does not name {rel}"
