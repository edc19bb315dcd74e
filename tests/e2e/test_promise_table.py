"""tests/PROMISES.md, the table of every promise and the tests that pin it, checks out.

- every row names at least one test, and every test it names exists (module, then the
  function or class method by name; a ``[param]`` suffix is allowed);
- every row's source is a heading that exists (``page#Heading``) or a module whose docstring
  states the promise (``cmpay_async/x.py``);
- every public name of ``cmpay_async``, ``cmpay_async.stores`` and ``cmpay_async.testing`` is
  named by some row;
- every heading of the README and of the docs pages (outside code blocks) is the source of
  some row, or listed under "States no behaviour" in the table file.

And tests/semantic_mutants.json is usable: at least 40 mutants, unique ids, each old text
occurring exactly once in its file, each listed test file present.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

import cmpay_async
import cmpay_async.stores
import cmpay_async.testing
from tests.support.helpers import IN_MUTMUT_TREE

ROOT = Path(__file__).parents[2]
TABLE = ROOT / "tests" / "PROMISES.md"
#: Pages that only include other files (the changelog, the benchmark figures).
INCLUDES = {"docs/changelog.md", "docs/benchmarks.md"}

_ROW = re.compile(r"^\|\s*(P\d+)\s*\|(.*)\|(.*)\|(.*)\|(.*)\|\s*$")
_TICKED = re.compile(r"`([^`]+)`")


def _rows() -> list[tuple[str, str, list[str], list[str], list[str]]]:
    rows = []
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if match:
            key, promise, names, source, tests = match.groups()
            rows.append(
                (
                    key,
                    promise.strip(),
                    _TICKED.findall(names),
                    [s.strip() for s in source.split(";") if s.strip()],
                    _TICKED.findall(tests),
                )
            )
    return rows


def _no_behaviour() -> set[str]:
    text = TABLE.read_text(encoding="utf-8").split("## States no behaviour", 1)[1]
    return {m for line in text.splitlines() if line.startswith("- ") for m in _TICKED.findall(line)}


def headings(path: Path) -> list[str]:
    """The headings of a markdown file, outside fenced code blocks."""
    found, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,3} ", line):
            found.append(line.lstrip("#").strip())
    return found


def _pages() -> list[Path]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
    return [p for p in pages if str(p.relative_to(ROOT)) not in INCLUDES]


def test_the_table_has_rows_with_unique_ids() -> None:
    """Rows exist, each with a unique id and a promise."""
    rows = _rows()
    assert len(rows) >= 80
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids))
    assert all(r[1] for r in rows)


def test_every_promise_names_tests_that_exist() -> None:
    """Each row names at least one test; each test is a function (or Class::method) there."""
    missing = []
    for key, _, _, _, tests in _rows():
        if not tests:
            missing.append(f"{key}: no test")
        for node in tests:
            path, _, rest = node.partition("::")
            parts = re.sub(r"\[.*\]$", "", rest).split("::")
            if not path.startswith("tests/") or not rest:
                missing.append(f"{key}: {node} is not a test node id")
                continue
            module = importlib.import_module(path[:-3].replace("/", "."))
            target: object = module
            for part in parts:
                target = getattr(target, part, None)
            if not (callable(target) and parts[-1].startswith("test")):
                missing.append(f"{key}: {node}")
    assert [] == missing


def test_every_source_exists() -> None:
    """A source is ``page#Heading`` with that heading on that page, or a module path."""
    wrong = []
    for key, _, _, sources, _ in _rows():
        if not sources:
            wrong.append(f"{key}: no source")
        for source in sources:
            page, _, heading = source.partition("#")
            if not (ROOT / page).is_file():
                wrong.append(f"{key}: {page} does not exist")
            elif heading and heading not in headings(ROOT / page):
                wrong.append(f"{key}: {page} has no heading {heading!r}")
            elif not heading and not page.startswith("cmpay_async/"):
                wrong.append(f"{key}: {source} names a page but no heading")
    assert [] == wrong


@pytest.mark.parametrize(
    "module", [cmpay_async, cmpay_async.stores, cmpay_async.testing], ids=lambda m: m.__name__
)
def test_every_public_name_has_a_promise(module: object) -> None:
    """Each name in __all__ is named (in backticks) in the names column of some row."""
    named = {name for row in _rows() for name in row[2]}
    public = set(module.__all__)  # type: ignore[attr-defined]
    assert [] == sorted(public - named)


def test_every_heading_is_a_source_or_states_no_behaviour() -> None:
    """The README's and the docs pages' headings each have a row, or are listed as stating
    no behaviour; the list names only headings that exist."""
    sources = {s for row in _rows() for s in row[3]}
    quiet = _no_behaviour()
    every = {f"{p.relative_to(ROOT)}#{h}" for p in _pages() for h in headings(p)}
    assert [] == sorted(every - sources - quiet)
    assert [] == sorted(quiet - every)


@pytest.mark.skipif(
    IN_MUTMUT_TREE,
    reason="mutmut's tree holds a copy of each function per mutant of its own",
)
def test_the_semantic_mutants_apply_to_the_tree() -> None:
    """At least 40 mutants, unique ids, each old text once in its file, its tests present."""
    mutants = json.loads((ROOT / "tests" / "semantic_mutants.json").read_text(encoding="utf-8"))
    assert len(mutants) >= 40
    assert len({m["id"] for m in mutants}) == len(mutants)
    for mutant in mutants:
        text = (ROOT / mutant["file"]).read_text(encoding="utf-8")
        assert 1 == text.count(mutant["old"]), mutant["id"]
        assert mutant["old"] != mutant["new"], mutant["id"]
        assert mutant["promise"], mutant["id"]
        assert mutant["tests"], mutant["id"]
        assert all((ROOT / t).is_file() for t in mutant["tests"]), mutant["id"]
