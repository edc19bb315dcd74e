"""Read the README's marked code examples, so tests run exactly what users copy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).parent.parent / "README.md"
_BLOCK = re.compile(r"<!-- example: ([\w-]+) -->\s*```python\n(.*?)```", re.DOTALL)


def examples() -> dict[str, str]:
    """Marked python blocks of README.md, by name."""
    return dict(_BLOCK.findall(README.read_text("utf-8")))


def run_examples(*names: str) -> dict[str, Any]:
    """Execute the named examples, in order, in one fresh namespace."""
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    blocks = examples()
    for name in names:
        exec(compile(blocks[name], f"README.md:{name}", "exec"), namespace)  # noqa: S102
    return namespace
