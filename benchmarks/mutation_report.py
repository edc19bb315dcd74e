"""Write benchmarks/MUTATION.md from mutmut's results (run by `nox -s mutants`).

The score counts killed mutants (and timeouts) against all that ran, less the survivors that
`benchmarks/equivalent_mutants.json` lists as equivalent, each with the reason no behaviour
can tell it from the original.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).parent.parent
EQUIVALENT = ROOT / "benchmarks" / "equivalent_mutants.json"
REPORT = ROOT / "benchmarks" / "MUTATION.md"


def _survivors() -> list[str]:
    done = subprocess.run(
        ["mutmut", "results"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [line.split(":")[0].strip() for line in done.stdout.splitlines() if "survived" in line]


def _killed_modules() -> list[str]:
    done = subprocess.run(
        ["mutmut", "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True
    )
    return [
        line.split(":")[0].strip().split(".x")[0]
        for line in done.stdout.splitlines()
        if line.strip().endswith(": killed")
    ]


def main() -> int:
    """Read the stats and survivors, write the report; exit 1 below 90 %."""
    stats = json.loads((ROOT / "mutants" / "mutmut-cicd-stats.json").read_text())
    equivalent: dict[str, str] = json.loads(EQUIVALENT.read_text()) if EQUIVALENT.exists() else {}
    survivors = _survivors()
    accepted = [s for s in survivors if s in equivalent]
    open_ = [s for s in survivors if s not in equivalent]
    killed = stats.get("killed", 0) + stats.get("timeout", 0)
    considered = killed + len(open_)
    score = killed / considered if considered else 0.0
    by_module = Counter(s.rsplit(".", 1)[0].split(".x")[0] for s in open_)
    ran = killed + len(survivors)
    measured = sorted({name.split(".x")[0] for name in survivors} | set(_killed_modules()))
    lines = [
        "# Mutation testing",
        "",
        "`nox -s mutants` (mutmut) over the modules listed in `[tool.mutmut]` of",
        "`pyproject.toml`, judged by the fast suite. Equivalent survivors are listed in",
        "`benchmarks/equivalent_mutants.json` with the reason, and not counted.",
        "",
        f"- **ran {ran} of {stats.get('total', '?')} mutants**; modules measured: "
        f"{', '.join(f'`{m}`' for m in measured) or 'none'} (the others not run yet)",
        f"- killed: {stats.get('killed', 0)}, "
        f"timeouts: {stats.get('timeout', 0)}, survived: {len(survivors)} "
        f"({len(accepted)} equivalent), no tests: {stats.get('no_tests', 0)}, "
        f"skipped: {stats.get('skipped', 0)}",
        f"- **score: {score:.1%}** of non-equivalent mutants killed",
        "",
        "## Survivors by module",
        "",
        *[f"- `{module}`: {count}" for module, count in by_module.most_common()],
        "",
        "## Survivors",
        "",
        *[f"- `{name}`" for name in open_],
        "",
        "## Equivalent (not counted)",
        "",
        *[f"- `{name}`: {equivalent[name]}" for name in accepted],
        "",
    ]
    REPORT.write_text("\n".join(lines))
    print(f"score {score:.1%}; report in {REPORT.relative_to(ROOT)}")
    return 0 if score >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
