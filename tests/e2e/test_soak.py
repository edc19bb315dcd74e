"""The soak's checker and report writer, on synthetic data (the soak itself needs root)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from benchmarks.soak import (
    check_ledger,
    parse,
    plot,
    read_ledger,
    read_paid,
    unrecorded_orders,
    write_report,
)
from cmpay_async.testing import sign_notification

from .test_promise_gaps import Faulty, _counting


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_every_paid_order_handled_once_is_ok(tmp_path: Path) -> None:
    """Each paid order once in the ledger, nothing else: ok, with the counts."""
    paid = read_paid(_write(tmp_path / "paid.csv", "A1\nA2\nA3\n"))
    ledger = read_ledger(_write(tmp_path / "ledger.csv", "A2,n1,10\nA1,n2,11\nA3,n3,12\n"))
    result = check_ledger(paid, ledger)
    assert result["ok"] is True
    assert (result["paid"], result["handler_runs"], result["handled_orders"]) == (3, 3, 3)
    assert result["missing"] == result["duplicated"] == result["unexpected"] == []


def test_missing_duplicated_and_unexpected_orders_are_named(tmp_path: Path) -> None:
    """A paid order never handled, one handled twice and one handled unpaid each fail the check."""
    paid = ["A1", "A2", "A3"]
    ledger = [("A1", "n1", "10"), ("A1", "n2", "11"), ("A2", "n1", "10"), ("B9", "n3", "12")]
    result = check_ledger(paid, ledger)
    assert result["ok"] is False
    assert result["missing"] == ["A3"]
    assert result["duplicated"] == ["A1"]
    assert result["unexpected"] == ["B9"]
    assert result["handler_runs"] == 4


def test_a_torn_ledger_line_is_not_counted(tmp_path: Path) -> None:
    """A line cut short (a writer killed mid-line) is not a handler run."""
    ledger = read_ledger(_write(tmp_path / "ledger.csv", "A1,n1,10\nA2,n1\n"))
    assert ledger == [("A1", "n1", "10")]
    assert read_ledger(tmp_path / "absent.csv") == []


def test_report_and_plots_are_written(tmp_path: Path) -> None:
    """report.json round-trips; the three plots are PNG files."""
    series = [
        {"t": float(t), "handled_per_s": t % 3, "attempts_per_s": 2, "retries_per_s": 1}
        | {"outstanding": 5 - t}
        for t in range(5)
    ]
    faults = [
        {"kind": "worker_kill", "at": 1.0, "node": "n1"},
        {"kind": "partition", "at": 2.0, "duration": 1.5, "node": "n2"},
    ]
    report = {"nodes": [{"name": "n1", "netns": "soakabcd-n1"}], "faults": faults}
    path = write_report(tmp_path / "out", report)
    assert json.loads(path.read_text()) == report
    names = plot(tmp_path / "out", series, faults)
    assert sorted(names) == ["deliveries.png", "handled.png", "outstanding.png"]
    for name in names:
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_mode_defaults_and_node_minimum() -> None:
    """--quick asks for over 1,000 orders; fewer than three nodes is refused."""
    args = parse(["--quick"])
    assert args.orders > 1000
    assert args.nodes >= 3
    full = parse([])
    assert full.orders == 100_000
    with pytest.raises(SystemExit):
        parse(["--nodes", "2"])


@pytest.mark.anyio
async def test_unrecorded_completions_are_read_from_the_processors_own_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The order id of a handler run the store could not record, from the real ERROR line."""
    # SK7's every complete fails (tried until the short lease ends, then the ERROR); SK8's
    # first one does, and the next try records it.
    store = Faulty(complete=10**9)
    processor, seen = _counting(store, lease=0.3)
    with caplog.at_level(logging.ERROR, logger="cmpay_async"):
        await processor.process(sign_notification(order_id="SK7", amount=5))
        store.fail["complete"] = 1
        await processor.process(sign_notification(order_id="SK8", amount=5))
    assert 2 == len(seen)
    logs = [f"{r.levelname} {r.getMessage()}" for r in caplog.records]
    assert ["SK7"] == unrecorded_orders(["\n".join(logs)])
    assert [] == unrecorded_orders(["the handler for x ran fine"])
