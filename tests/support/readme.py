"""Read the marked code examples of README.md and docs/, so tests run exactly what users copy.

A Python block is marked by an ``<!-- example: NAME -->`` line before it; names are unique
across the README and every docs page.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("**/*.md"))]
_BLOCK = re.compile(r"<!-- example: ([\w-]+) -->\s*```python\n(.*?)```", re.DOTALL)
_ANY_PYTHON = re.compile(r"^```python\b[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: A block that only includes files of recipes/ (pymdownx.snippets):
#: tests/integrations/test_recipes.py runs those files with real workers, so the block needs
#: no marker of its own.
_RECIPE_INCLUDE = re.compile(r'(?:--8<-- "recipes/\w+\.py"\n)+')


def examples() -> dict[str, str]:
    """Marked python blocks of README.md and docs/, by name."""
    found: dict[str, str] = {}
    for page in PAGES:
        for name, code in _BLOCK.findall(page.read_text("utf-8")):
            if name in found:
                raise AssertionError(f"example {name!r} is marked twice ({page.name})")
            found[name] = code
    return found


def unmarked() -> list[str]:
    """Pages whose python blocks are not all marked (a block no test runs), with counts."""
    out = []
    for page in PAGES:
        text = page.read_text("utf-8")
        blocks = [b for b in _ANY_PYTHON.findall(text) if not _RECIPE_INCLUDE.fullmatch(b)]
        blocks, marked = len(blocks), len(_BLOCK.findall(text))
        if blocks != marked:
            out.append(f"{page.relative_to(ROOT)}: {blocks - marked} unmarked python block(s)")
    return out


def run_examples(*names: str) -> dict[str, Any]:
    """Execute the named examples, in order, in one fresh namespace."""
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    blocks = examples()
    for name in names:
        exec(compile(blocks[name], f"{name}.md-example", "exec"), namespace)  # noqa: S102
    return namespace
