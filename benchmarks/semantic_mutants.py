"""Hand-written semantic mutants: plant each bug of tests/semantic_mutants.json, run its tests.

mutmut's operator swaps say little about whether the tests state the library's promises; these
mutants each break one promise (a changed rule, a missing step, a state transition done
wrong), as a reviewer would write them. For each mutant the tree is copied once per worker
to a temporary directory, the mutant's text replaced there (the worktree is never touched),
and the test files listed with the mutant run with ``-x -q`` on both anyio backends (a
trio-only test once hid a bug from an asyncio-only judge). A mutant is caught when pytest
fails, or hangs past the per-mutant timeout (a hang fails CI as surely). Exit status 1 when
any survives, or when the unmutated tests fail, or when a mutant's old text does not occur
exactly once (the code moved: update the mutant).

    python benchmarks/semantic_mutants.py [--jobs N] [--write] [ID ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "tests" / "semantic_mutants.json"
REPORT = ROOT / "benchmarks" / "SEMANTIC.md"
#: A mutant whose tests run longer than this is counted as caught (it hangs the suite).
TIMEOUT = 600.0
_COPIED = ("cmpay_async", "tests", "recipes", "benchmarks", "docs", "pyproject.toml", "README.md")


def load(path: Path = MUTANTS) -> list[dict[str, Any]]:
    """The mutants, each checked to apply to the current tree exactly once."""
    mutants: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    for mutant in mutants:
        found = (ROOT / mutant["file"]).read_text(encoding="utf-8").count(mutant["old"])
        if found != 1:
            raise SystemExit(
                f"mutant {mutant['id']}: its old text occurs {found} times in {mutant['file']} "
                "(must be exactly once): update the mutant to the current code"
            )
    return mutants


def _copy_tree(into: Path) -> Path:
    tree = into / "tree"
    tree.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in _COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, tree / name)
    return tree


def _pytest(tree: Path, tests: list[str], backends: str) -> tuple[int | None, str]:
    env = dict(os.environ, CMPAY_ANYIO_BACKENDS=backends, PYTHONPATH=str(tree))
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
    command += ["-m", "not integration", *tests]
    try:
        done = subprocess.run(
            command, cwd=tree, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return None, f"no result within {TIMEOUT:.0f} s"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, lines[-1] if lines else done.stderr[-300:]


def _judge(tree: Path, mutant: dict[str, Any], backends: str) -> dict[str, Any]:
    target = tree / mutant["file"]
    original = target.read_text(encoding="utf-8")
    target.write_text(original.replace(mutant["old"], mutant["new"]), encoding="utf-8")
    started = time.monotonic()
    try:
        code, last = _pytest(tree, mutant["tests"], backends)
    finally:
        target.write_text(original, encoding="utf-8")
    if code is None:
        verdict = "caught (hang)"
    elif code == 1:
        verdict = "caught"
    elif code == 0:
        verdict = "SURVIVED"
    else:  # 2-5: the run itself broke (an import error, no tests): not a judgement
        verdict = f"caught (pytest exit {code})"
    return {
        "id": mutant["id"],
        "verdict": verdict,
        "seconds": round(time.monotonic() - started, 1),
        "last": last,
    }


def main(argv: list[str] | None = None) -> int:
    """Judge the mutants; print one line each and the totals; 1 if any survived."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("ids", nargs="*", help="only these mutant ids")
    parser.add_argument("--jobs", type=int, default=2, help="mutants judged at once")
    parser.add_argument("--write", action="store_true", help=f"write {REPORT.name}")
    parser.add_argument(
        "--backends",
        default=os.environ.get("CMPAY_ANYIO_BACKENDS", "asyncio,trio"),
        help="CMPAY_ANYIO_BACKENDS for the judged tests (default: both)",
    )
    args = parser.parse_args(argv)
    mutants = load()
    if args.ids:
        unknown = set(args.ids) - {m["id"] for m in mutants}
        if unknown:
            parser.error(f"unknown mutant ids: {sorted(unknown)}")
        mutants = [m for m in mutants if m["id"] in args.ids]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cmpay-semantic-") as tmp:
        trees = []
        for n in range(args.jobs):
            Path(tmp, str(n)).mkdir()
            trees.append(_copy_tree(Path(tmp, str(n))))
        every_test = sorted({t for m in mutants for t in m["tests"]})
        code, last = _pytest(trees[0], every_test, args.backends)
        if code != 0:
            print(f"the unmutated tests fail ({last}): no mutant can be judged", file=sys.stderr)
            return 1
        free = list(trees)

        def judge(mutant: dict[str, Any]) -> dict[str, Any]:
            tree = free.pop()
            try:
                result = _judge(tree, mutant, args.backends)
            finally:
                free.append(tree)
            print(
                f"{result['verdict']:<22} {result['seconds']:>6.1f} s  {mutant['id']}", flush=True
            )
            return result

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(judge, mutants))
    elapsed = time.monotonic() - started
    survived = [r for r in results if r["verdict"] == "SURVIVED"]
    summary = (
        f"{len(results) - len(survived)} of {len(results)} semantic mutants caught, "
        f"{len(survived)} survived; {elapsed / 60:.1f} min with {args.jobs} jobs, "
        f"backends {args.backends}"
    )
    print(summary)
    if args.write:
        _write(results, summary, {m["id"]: m for m in mutants})
    return 1 if survived else 0


def _write(results: list[dict[str, Any]], summary: str, mutants: dict[str, Any]) -> None:
    rows = [
        f"| `{r['id']}` | `{mutants[r['id']]['file']}` | {mutants[r['id']]['promise']} | "
        f"{r['verdict']} | {r['seconds']:.0f} s |"
        for r in results
    ]
    REPORT.write_text(
        "# Semantic mutants\n\n"
        "Written by `nox -s semantic` (`python benchmarks/semantic_mutants.py --write`): each "
        "mutant of `tests/semantic_mutants.json` plants one bug that breaks a documented "
        "promise; its listed test files run with `-x` on asyncio and trio.\n\n"
        f"**{summary}.**\n\n"
        "| mutant | file | promise it breaks | verdict | time |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    raise SystemExit(main())
