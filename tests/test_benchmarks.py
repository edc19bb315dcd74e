"""The benchmark code runs (tiny counts) so it cannot rot; no timing is asserted here."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.suite import main, run


def test_every_benchmark_reports_a_figure() -> None:
    """Each of the thirteen benchmarks yields its figures; ratios are positive numbers."""
    results = run(quick=True)

    names = [row["benchmark"] for row in results["results"]]
    for number in range(1, 14):
        assert any(name.startswith(f"{number}. ") for name in names), number
    for row in results["results"]:
        if "ratio" in row:
            assert row["ratio"] > 0
            assert row["us_per_op"] > 0
    assert 0 == next(r for r in results["results"] if r["benchmark"].startswith("6."))["errors"]
    assert results["machine"]["python"]


def test_main_writes_json(tmp_path: Path) -> None:
    """The command writes results.json with the machine description and every row."""
    out = tmp_path / "results.json"

    assert 0 == main(["--quick", "--json", str(out)])

    data = json.loads(out.read_text("utf-8"))
    assert {"machine", "results", "table"} <= set(data)
