"""Write benchmarks/MUTATION.md from mutmut's results (run by `nox -s mutants`).

The score counts killed mutants (timeouts included) against all that ran, less the survivors
that are equivalent: no behaviour can tell them from the original. Those are recognised two
ways, each with its reason printed in the report:

- by rule, from the mutant's own diff: a change of letter case inside an SQL statement, in
  a codec name or in an HTTP header name (all three are case-insensitive);
- by name, from the ``equivalent`` table of ``benchmarks/equivalent_mutants.json``, and only
  while the mutant of that name still makes the change recorded for it in ``changes``
  (mutmut renumbers a function's mutants when the function is edited).

Its ``accepted`` table names survivors that a test could kill but that we chose not to chase
(a race, a debugger's view), each with the reason: they count against the score. Its
``killed_by_hand`` table names survivors that mutmut ran without the tests that kill them
(mutmut links tests to a function in its stats run; an incremental run links only new tests,
so a function split off since the last full stats run has none of the old ones), each with
the tests that were run against the same change by hand: they count as killed, and are
listed. Every survivor is listed with its diff. Exits 1 below 90 %.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).parent.parent
EQUIVALENT = ROOT / "benchmarks" / "equivalent_mutants.json"
REPORT = ROOT / "benchmarks" / "MUTATION.md"

_SQL = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|WHERE|VALUES|CONFLICT|PRIMARY|NULL|RETURNING|FROM"
    r"|PRAGMA|BEGIN|ROLLBACK|COMMIT|INTO|REPLACE|EXCLUDED|SET|INTERVAL|TABLE|EXISTS)\b",
    re.IGNORECASE,
)
_CODEC = re.compile(r"\b(?:en|de)code\(\s*\"([A-Za-z0-9_-]+)\"")
_SQL_CASED = re.compile(r"'[^']*'|%[A-Za-z]")
_QUOTED = re.compile(r"\"([^\"]*)\"")
_HEADER_NAMES = frozenset({"content-type", "content-length", "content-encoding", "accept-encoding"})


def _results(*extra: str) -> list[tuple[str, str]]:
    done = subprocess.run(
        ["mutmut", "results", *extra], cwd=ROOT, capture_output=True, text=True, check=True
    )
    out = []
    for line in done.stdout.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            out.append((name, status))
    return out


def _diff(name: str) -> tuple[list[str], list[str]]:
    # check=False: a mutant of code edited since the run has no diff to show any more.
    shown = subprocess.run(
        ["mutmut", "show", name], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.splitlines()
    removed = [line[1:] for line in shown if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in shown if line.startswith("+") and not line.startswith("+++")]
    return removed, added


def _module(name: str) -> str:
    return name.split(".x")[0]


def _function(name: str) -> str:
    return name.rsplit("__mutmut_", 1)[0]


def _bare(function: str) -> str:
    """A mutated function's name without its module."""
    return function.rsplit(".", 1)[-1]


def _by_rule(name: str, removed: list[str], added: list[str]) -> str | None:
    """The reason a survivor is equivalent, judged from its diff alone; None if it is not."""
    before, after = "\n".join(removed), "\n".join(added)
    if not before or before == after or before.lower() != after.lower():
        return None
    if (
        _module(name).startswith("cmpay_async.stores")
        and _SQL.search(before)
        # Quoted SQL strings ('in_progress') and placeholders (%s) do depend on case.
        and _SQL_CASED.findall(before) == _SQL_CASED.findall(after)
    ):
        return "letter case inside an SQL statement: keywords and unquoted names ignore case"
    pairs = zip(_QUOTED.findall(before), _QUOTED.findall(after), strict=True)
    changed = [a for a, b in pairs if a != b]
    if changed and all(a.lower() in _HEADER_NAMES for a in changed):
        return "letter case of an HTTP header name: httpx matches header names ignoring case"
    codecs = _CODEC.findall(before)
    if codecs and [c.lower() for c in codecs] == [c.lower() for c in _CODEC.findall(after)]:
        return "letter case of a codec name: Python's codec lookup ignores case"
    return None


def _change(removed: list[str], added: list[str]) -> str:
    return "\n".join(
        [f"-{line.strip()}" for line in removed] + [f"+{line.strip()}" for line in added]
    )


class _Table:
    """A hand-kept table of survivors, checked against each mutant's own change.

    mutmut numbers a function's mutants afresh when the function is edited, so a name may
    come to mean another mutation. The ``changes`` table records the change each name was
    judged on: a name whose mutant now changes something else is not trusted; the entry
    whose recorded change it is (in the same function) is used instead.
    """

    def __init__(self, reasons: dict[str, str], changes: dict[str, str]) -> None:
        self.reasons, self.changes = reasons, changes
        self.by_change = {(_function(n), c): n for n, c in changes.items() if n in reasons}
        # A function moved to another module (issue 25 split _client and _codec) keeps what
        # was recorded of it: the same function name making the same change, where only one
        # recorded entry matches.
        moved: dict[tuple[str, str], list[str]] = {}
        for n, c in changes.items():
            if n in reasons:
                moved.setdefault((_bare(_function(n)), c), []).append(n)
        self.by_moved_change = {k: names[0] for k, names in moved.items() if len(names) == 1}

    def reason(self, name: str, change: str) -> str | None:
        """The reason recorded for this mutant's change, if any."""
        recorded = self.changes.get(name)
        if name in self.reasons and recorded in (None, change):
            return self.reasons[name]
        other = self.by_change.get((_function(name), change))
        if other is None:
            other = self.by_moved_change.get((_bare(_function(name)), change))
        return self.reasons[other] if other else None


def main() -> int:
    """Read mutmut's results, write the report; exit 1 below 90 %."""
    tables = json.loads(EQUIVALENT.read_text()) if EQUIVALENT.exists() else {}
    changes: dict[str, str] = tables.get("changes", {})
    listed = _Table(tables.get("equivalent", {}), changes)
    accepted_table = _Table(tables.get("accepted", {}), changes)
    by_hand_table = _Table(tables.get("killed_by_hand", {}), changes)
    accepted: dict[str, str] = {}
    by_hand: dict[str, str] = {}
    everything = _results("--all", "true")
    status = Counter(s for _, s in everything)
    survivors = [n for n, s in everything if s == "survived"]
    untested = [n for n, s in everything if s == "no tests"]
    equivalent: dict[str, str] = {}
    open_: list[tuple[str, list[str], list[str]]] = []
    for name in survivors:
        removed, added = _diff(name)
        change = _change(removed, added)
        reason = listed.reason(name, change) or _by_rule(name, removed, added)
        killed_by = by_hand_table.reason(name, change)
        if reason:
            equivalent[name] = reason
        elif killed_by:
            by_hand[name] = killed_by
        else:
            open_.append((name, removed, added))
            why = accepted_table.reason(name, change)
            if why:
                accepted[name] = why
    killed = status["killed"] + status["timeout"] + len(by_hand)
    considered = killed + len(open_) + len(untested)
    score = killed / considered if considered else 0.0
    ran = sum(status[s] for s in ("killed", "timeout", "survived", "no tests"))
    per_module: dict[str, Counter[str]] = {}
    for name, state in everything:
        counts = per_module.setdefault(_module(name), Counter())
        if state in ("killed", "timeout") or name in by_hand:
            counts["killed"] += 1
        elif name in equivalent:
            counts["equivalent"] += 1
        elif state in ("survived", "no tests"):
            counts["open"] += 1
        else:
            counts["not run"] += 1
    elapsed = os.environ.get("MUTMUT_ELAPSED")
    lines = [
        "# Mutation testing",
        "",
        "`nox -s mutants` runs mutmut over the modules listed in `[tool.mutmut]` of",
        "`pyproject.toml` (the core, the client, the processor, the blocking facade,",
        "reconciliation and the stores), judged by the fast suite on asyncio. The report is",
        "written by `benchmarks/mutation_report.py`; equivalent survivors are recognised by rule",
        "or listed in `benchmarks/equivalent_mutants.json`, each with its reason, and not counted.",
        "",
        f"- **score: {score:.1%}** of the non-equivalent mutants that ran killed "
        f"({killed} of {considered})"
        + (
            f"; **{status['not checked']} mutants not run** (see the table)"
            if status["not checked"]
            else ""
        ),
        f"- mutants: {len(everything)}; ran {ran}; killed {status['killed']}, timeouts "
        f"{status['timeout']} (counted as killed), survived {len(survivors)} "
        f"({len(equivalent)} equivalent, {len(by_hand)} killed when run by hand with the tests "
        f"mutmut had not linked), no tests {len(untested)}, "
        f"not run {status['not checked']}",
    ]
    if elapsed:
        lines.append(f"- wall time of the whole session on this machine: {elapsed}")
    lines += [
        "",
        "## By module",
        "",
        "| module | killed | open survivors | equivalent | not run | score of those run |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for module in sorted(per_module):
        c = per_module[module]
        judged = c["killed"] + c["open"]
        shown = f"{c['killed'] / judged:.1%}" if judged else "not run"
        lines.append(
            f"| `{module}` | {c['killed']} | {c['open']} | {c['equivalent']} | "
            f"{c['not run']} | {shown} |"
        )
    lines += ["", "## Surviving mutants (not equivalent)", ""]
    if not open_ and not untested:
        lines.append("None.")
    for name, removed, added in open_:
        lines += [f"### `{name}`", ""]
        if name in accepted:
            lines += [f"Accepted: {accepted[name]}", ""]
        lines += ["```diff"]
        lines += [f"-{line}" for line in removed] + [f"+{line}" for line in added]
        lines += ["```", ""]
    for name in untested:
        lines.append(f"- `{name}`: no test reaches it")
    if by_hand:
        lines += ["", "## Survivors killed by hand (counted as killed)", ""]
        for name, how in sorted(by_hand.items()):
            lines.append(f"- `{name}`: {how}")
    lines += ["", "## Equivalent survivors (not counted)", ""]
    for name, reason in sorted(equivalent.items()):
        lines.append(f"- `{name}`: {reason}")
    lines.append("")
    REPORT.write_text("\n".join(lines))
    print(f"score {score:.1%}; report in {REPORT.relative_to(ROOT)}")
    return 0 if score >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
