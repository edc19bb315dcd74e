"""The cost of the strict notification grammar: ``verify_notification`` before and after.

``python -m benchmarks.strictness [--before REV] [--rounds N]`` (from the repository root)
extracts the package as it was at ``REV`` (default: the commit before the grammar) into a
temporary folder, then times both versions alternately, each in a fresh process, over the
same 1,000 distinct notifications (UTF-8 bodies with Chinese text, charset left to
detection, as the README's handler does), and a second line over the document's section 8.3
body alone. Alternating rounds share the machine's noise; the figure is the median of the
rounds' best passes.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from tests.support.helpers import NOTIFY_BODY, TEST_KEY, TEST_MERCHANT
from tests.support.notify_grammar_support import random_notification, signed_body

#: The last commit before the strict grammar (issue 22).
BEFORE = "7122d12"

_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import cmpay_async
from cmpay_async import Md5Signer, verify_notification
assert cmpay_async.__file__.startswith(sys.argv[1]), cmpay_async.__file__
bodies = [b.encode() for b in json.loads(open(sys.argv[2]).read())]
verifier, merchant = Md5Signer(sys.argv[3]), sys.argv[4]
passes = int(sys.argv[5])
def one_pass():
    start = time.perf_counter()
    for body in bodies:
        verify_notification(body, verifier=verifier, merchant_id=merchant)
    return (time.perf_counter() - start) / len(bodies)
one_pass()  # warm-up: plans compiled, caches filled
print(min(one_pass() for _ in range(passes)) * 1e6)
"""


def _tree(rev: str, into: Path) -> Path:
    # From the checkout's top: git refuses to archive from a folder it does not track (the
    # copy of the tree that mutmut runs the tests in).
    top = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], capture_output=True, check=True, text=True
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", top, "archive", "--format=tar", rev, "cmpay_async"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def _bodies(count: int) -> list[str]:
    rng = random.Random(2026)
    out = []
    for i in range(count):
        fields = random_notification(rng, f"{20261206000000 + i}")
        out.append(signed_body(fields, "utf-8").decode())
    return out


def _time(tree: Path, bodies: Path, passes: int) -> float:
    args = [sys.executable, "-c", _CHILD, str(tree), str(bodies), TEST_KEY, TEST_MERCHANT]
    return float(subprocess.run([*args, str(passes)], capture_output=True, check=True).stdout)


def main(argv: list[str] | None = None) -> int:
    """Time both versions and print a table; ``--json`` also writes the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help="the revision to compare with")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds per version")
    parser.add_argument("--passes", type=int, default=5, help="passes per round (best counts)")
    parser.add_argument("--count", type=int, default=1000, help="distinct notifications")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        before = _tree(args.before, Path(tmp, "before"))
        after = Path.cwd()
        inputs = {
            f"{args.count:,} distinct notifications": _bodies(args.count),
            "section 8.3 body, repeated": [NOTIFY_BODY] * args.count,
        }
        figures = {}
        for name, bodies in inputs.items():
            path = Path(tmp, "bodies.json")
            path.write_text(json.dumps(bodies))
            times: dict[str, list[float]] = {"before": [], "after": []}
            for _ in range(args.rounds):
                times["before"].append(_time(before, path, args.passes))
                times["after"].append(_time(after, path, args.passes))
            b, a = (statistics.median(times[k]) for k in ("before", "after"))
            figures[name] = {"before_us": round(b, 2), "after_us": round(a, 2), "ratio": a / b}
    print(f"verify_notification, {args.before} (before) vs the working tree (after)")
    print("| input | before µs | after µs | after/before |\n|---|---:|---:|---:|")
    for name, f in figures.items():
        print(f"| {name} | {f['before_us']:.2f} | {f['after_us']:.2f} | {f['ratio']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
