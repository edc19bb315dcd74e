"""The package's shape, as CONTRIBUTING.md writes it down: layers, no circles, no giant.

The layer table is the one in CONTRIBUTING.md (between its ``layers`` markers): each module
of ``cmpay_async`` stands on one floor, and may import only from its own floor or those
below. The imports are read with ``ast`` (every ``import`` statement, those inside
functions and ``TYPE_CHECKING`` blocks included), never by importing the package. Also: no
import circle, no class above 400 lines, no function above 60 lines (a function that only
returns a literal table is data, not logic).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.support.helpers import IN_MUTMUT_TREE

# mutmut's tree holds a copy of each function per mutant (and classes grow with them): the
# limits below describe the source, not a mutant of it.
pytestmark = pytest.mark.skipif(IN_MUTMUT_TREE, reason="mutmut's tree is not the source's layout")

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
PACKAGE = ROOT / "cmpay_async"
GUIDE = ROOT / "CONTRIBUTING.md"

MAX_CLASS = 400
MAX_FUNCTION = 60

_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*([a-z]+)\s*\|(.*?)\|")
_TICKED = re.compile(r"`([^`]+)`")


def layer_table(text: str) -> dict[str, tuple[int, str]]:
    """Module prefix (``_codec``, ``stores``) -> (floor, layer name), from the guide's table."""
    begin, end = text.index("<!-- layers:begin -->"), text.index("<!-- layers:end -->")
    table: dict[str, tuple[int, str]] = {}
    for line in text[begin:end].splitlines():
        row = _ROW.match(line)
        if row is None:
            continue
        floor, name, cell = int(row[1]), row[2], row[3]
        for entry in _TICKED.findall(cell):
            prefix = entry.rstrip("/").replace("/", ".")
            assert prefix not in table, f"{entry} stands on two floors"
            table[prefix] = (floor, name)
    return table


def module_name(path: Path) -> str:
    """``cmpay_async/stores/sqlite.py`` -> ``cmpay_async.stores.sqlite`` (a package: its name)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: Mapping[str, Path]) -> Iterator[tuple[str, int]]:
    """The package's modules that ``name`` imports, with the line of each import."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _own(alias.name, node.lineno, known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # ``from pkg import sub`` imports the submodule; ``from pkg import name``
                # the package's __init__.
                sub = f"{base}.{alias.name}"
                yield from _own(sub if sub in known else base, node.lineno, known)


def _own(target: str, line: int, known: Mapping[str, Path]) -> Iterator[tuple[str, int]]:
    while target and target not in known:
        target = target.rpartition(".")[0]  # ``import a.b.c`` of a name inside a module
    if target.startswith("cmpay_async"):
        yield target, line


def graph() -> dict[str, dict[str, int]]:
    """Module -> {imported module: line of the first such import}."""
    known = modules()
    out: dict[str, dict[str, int]] = {}
    for name, path in known.items():
        edges: dict[str, int] = {}
        for target, line in imports_of(name, path, known):
            if target != name:
                edges.setdefault(target, line)
        out[name] = edges
    return out


def floor_of(module: str, table: Mapping[str, tuple[int, str]]) -> tuple[int, str] | None:
    """The floor of ``module``: its longest prefix in the table (the face is ``__init__``)."""
    rest = module.removeprefix("cmpay_async").lstrip(".") or "__init__"
    while rest:
        if rest in table:
            return table[rest]
        rest = rest.rpartition(".")[0]
    return None


def circles(edges: Mapping[str, Mapping[str, int]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def _is_data_table(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A function whose body (past its docstring) only returns a literal: a table, not logic."""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    if len(body) != 1 or not isinstance(body[0], ast.Return) or body[0].value is None:
        return False
    literal = (ast.Constant, ast.Dict, ast.List, ast.Tuple, ast.Set, ast.Name, ast.Attribute)
    return all(isinstance(n, (*literal, ast.expr_context)) for n in ast.walk(body[0].value))


def _over_limits(node: ast.AST, rel: str, prefix: str) -> Iterator[tuple[str, str, int, int]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            qualified = f"{prefix}{child.name}"
            size = (child.end_lineno or child.lineno) - child.lineno + 1
            if isinstance(child, ast.ClassDef):
                if size > MAX_CLASS:
                    yield rel, qualified, size, MAX_CLASS
            elif size > MAX_FUNCTION and not _is_data_table(child):
                yield rel, qualified, size, MAX_FUNCTION
            yield from _over_limits(child, rel, f"{qualified}.")
        else:
            yield from _over_limits(child, rel, prefix)


def oversized() -> list[tuple[str, str, int, int]]:
    """(file, qualified name, lines, limit) of every class or function over its limit."""
    out: list[tuple[str, str, int, int]] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        out.extend(_over_limits(tree, path.relative_to(ROOT).as_posix(), ""))
    return out


@pytest.fixture(scope="module")
def table() -> dict[str, tuple[int, str]]:
    """The layer table of CONTRIBUTING.md."""
    return layer_table(GUIDE.read_text(encoding="utf-8"))


def test_every_module_stands_on_a_floor(table: dict[str, tuple[int, str]]) -> None:
    """A new module must be placed in CONTRIBUTING.md's layer table before it can land."""
    unplaced = [m for m in modules() if floor_of(m, table) is None]
    assert [] == unplaced


def test_no_import_runs_up_a_layer(table: dict[str, tuple[int, str]]) -> None:
    """Each import goes to the importer's own floor or one below it."""
    upward = []
    for module, edges in graph().items():
        here = floor_of(module, table)
        for target, line in edges.items():
            there = floor_of(target, table)
            if here is not None and there is not None and there[0] > here[0]:
                upward.append(f"{module} ({here[1]}) line {line} -> {target} ({there[1]})")
    assert [] == upward


def test_no_import_circle() -> None:
    """No modules import each other, directly or round a loop."""
    assert [] == circles(graph())


def test_no_class_or_function_over_its_limit() -> None:
    """No class above 400 lines, no function above 60 (data tables aside)."""
    found = [
        f"{rel} {name}: {size} lines (limit {limit})" for rel, name, size, limit in oversized()
    ]
    assert [] == found


def test_the_checks_see_what_they_look_for() -> None:
    """The readers find a circle, an upward import and a long function in made-up code."""
    assert [["a", "b"]] == circles({"a": {"b": 1}, "b": {"a": 2}, "c": {"a": 3}})
    table = layer_table(
        "<!-- layers:begin -->\n| 1 | ground | `_x` |\n| 2 | top | `pkg/`, `__init__` |\n"
        "<!-- layers:end -->"
    )
    assert (1, "ground") == floor_of("cmpay_async._x", table)
    assert (2, "top") == floor_of("cmpay_async.pkg.deep", table)
    assert (2, "top") == floor_of("cmpay_async", table)
    assert floor_of("cmpay_async._y", table) is None
    (logic,) = ast.parse("def f():\n" + "    x = 1\n" * 70).body
    (data,) = ast.parse("def g():\n    return {\n" + "        'k': 1,\n" * 70 + "    }\n").body
    assert isinstance(logic, ast.FunctionDef)
    assert isinstance(data, ast.FunctionDef)
    assert not _is_data_table(logic)
    assert _is_data_table(data)
    assert [("f.py", "f", 71, MAX_FUNCTION)] == list(
        _over_limits(ast.Module([logic], []), "f.py", "")
    )
    assert [] == list(_over_limits(ast.Module([data], []), "g.py", ""))
