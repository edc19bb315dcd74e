"""The benchmark code runs (tiny counts) so it cannot rot; no timing is asserted here."""

from __future__ import annotations

import json
from typing import Any

import pytest

from benchmarks.suite import main

#: Real worker processes or servers: run once by `nox -s integration`, not per Python.
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One quick run of the command (it starts the sandbox, workers and stores: ~10 s)."""
    out = tmp_path_factory.mktemp("bench") / "results.json"
    assert 0 == main(["--quick", "--json", str(out)])
    data: dict[str, Any] = json.loads(out.read_text("utf-8"))
    return data


def test_every_benchmark_reports_a_figure(written: dict[str, Any]) -> None:
    """Each of the fourteen benchmarks yields its figures; ratios are positive numbers."""
    names = [row["benchmark"] for row in written["results"]]
    for number in range(1, 15):
        assert any(name.startswith(f"{number}. ") for name in names), number
    for row in written["results"]:
        if "ratio" in row:
            assert row["ratio"] > 0
            assert row["us_per_op"] > 0
    assert 0 == next(r for r in written["results"] if r["benchmark"].startswith("6."))["errors"]
    assert written["machine"]["python"]


def test_main_writes_json(written: dict[str, Any]) -> None:
    """The command writes results.json with the machine description, every row and a table."""
    assert {"machine", "results", "table"} <= set(written)
    assert all(row["benchmark"] in written["table"] for row in written["results"])


def test_the_strictness_benchmark_times_both_versions(tmp_path: Any) -> None:
    """``python -m benchmarks.strictness`` extracts the earlier package, times both versions
    on each input and writes positive figures."""
    from benchmarks.strictness import main as strictness

    out = tmp_path / "strictness.json"
    args = ["--rounds", "1", "--passes", "1", "--count", "20", "--json", str(out)]
    assert 0 == strictness(args)

    figures = json.loads(out.read_text("utf-8"))
    assert 2 == len(figures)
    for row in figures.values():
        assert row["before_us"] > 0
        assert row["after_us"] > 0
