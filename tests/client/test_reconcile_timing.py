"""reconcile_orders' pacing, concurrency and batches, measured on trio's virtual clock.

MockClock(autojump_threshold=0) moves time only when every task waits, so each query's start
is an exact number: no wall clock, no margin, no sleeping.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest
import trio
import trio.testing

from cmpay_async import CmpayError, OrderQueryResult, PendingOrder
from cmpay_async._reconcile import reconcile_orders
from tests.support.helpers import query_result

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """trio on a virtual clock that jumps whenever everything waits."""
    return "trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}


def _pending(n: int, age: dt.timedelta = dt.timedelta(minutes=5)) -> list[PendingOrder]:
    return [PendingOrder(order_id=f"O{i}", created_at=NOW - age) for i in range(1, n + 1)]


class Gateway:
    """A query function that records when each query starts and holds it as told."""

    def __init__(self, holds: dict[str, float] | None = None, fail: set[str] = frozenset()) -> None:
        self.holds = holds or {}
        self.fail = fail
        self.starts: dict[str, float] = {}
        self.inside = self.peak = 0

    async def __call__(self, order_id: str) -> OrderQueryResult:
        self.starts[order_id] = trio.current_time()
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        try:
            await trio.sleep(self.holds.get(order_id, 0))
            if order_id in self.fail:
                raise CmpayError("gateway down")
            return query_result(order_id, "SUCCESS")
        finally:
            self.inside -= 1


def _relative(starts: dict[str, float]) -> list[float]:
    first = min(starts.values())
    return [round(starts[k] - first, 6) for k in sorted(starts, key=lambda k: int(k[1:]))]


@pytest.mark.anyio
async def test_queries_start_twenty_a_second_by_default() -> None:
    """Unless told otherwise, the i-th query starts i/20 s after the first."""
    gateway = Gateway()

    found = [r async for r in reconcile_orders(gateway, _pending(6), now=NOW)]

    assert 6 == len(found)
    assert [0.0, 0.05, 0.1, 0.15, 0.2, 0.25] == _relative(gateway.starts)


@pytest.mark.anyio
async def test_queries_start_at_the_rate_asked_for() -> None:
    """per_second=4: a query every 0.25 s."""
    gateway = Gateway()

    [r async for r in reconcile_orders(gateway, _pending(4), now=NOW, per_second=4)]

    assert [0.0, 0.25, 0.5, 0.75] == _relative(gateway.starts)


@pytest.mark.anyio
async def test_at_most_eight_queries_are_in_flight_by_default() -> None:
    """Twenty slow queries, started fast: eight at a time unless told otherwise."""
    gateway = Gateway(holds={f"O{i}": 10.0 for i in range(1, 21)})

    [r async for r in reconcile_orders(gateway, _pending(20), now=NOW, per_second=1e6)]

    assert 8 == gateway.peak


@pytest.mark.anyio
async def test_batches_of_four_times_the_concurrency_finish_before_the_next_starts() -> None:
    """concurrency=2: orders go in batches of 8; the 9th waits for the slowest of the first 8.

    O1 holds 10 s, the others 1 s: O2..O8 run one after another beside it (done at 7 s), so
    O9 and O10 start when O1 ends, at 10 s, not at 7 s and 8 s as without batches.
    """
    holds = {"O1": 10.0} | {f"O{i}": 1.0 for i in range(2, 11)}
    gateway = Gateway(holds=holds)

    [
        r
        async for r in reconcile_orders(
            gateway, _pending(10), now=NOW, concurrency=2, per_second=1e6
        )
    ]

    starts = [round(t) for t in _relative(gateway.starts)]
    assert [0, 0, 1, 2, 3, 4, 5, 6, 10, 10] == starts
    assert 2 == gateway.peak


@pytest.mark.anyio
async def test_a_failed_query_is_logged_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The failure is a warning naming the order and the error; the next run asks again."""
    gateway = Gateway(fail={"O2"})

    with caplog.at_level(logging.WARNING, logger="cmpay_async"):
        found = [r.order_id async for r in reconcile_orders(gateway, _pending(3), now=NOW)]

    assert ["O1", "O3"] == sorted(found)
    assert ["reconciliation: query of O2 failed: gateway down"] == [
        r.getMessage() for r in caplog.records
    ]


@pytest.mark.anyio
async def test_the_schedule_given_is_the_one_followed() -> None:
    """A schedule that waits an hour before the first query skips five-minute-old orders."""
    patient = ((dt.timedelta(hours=1), None), (dt.timedelta(days=2), dt.timedelta(0)))
    gateway = Gateway()

    young = [r async for r in reconcile_orders(gateway, _pending(2), now=NOW, schedule=patient)]
    old = _pending(1, age=dt.timedelta(hours=2))
    aged = [r async for r in reconcile_orders(gateway, old, now=NOW, schedule=patient)]

    assert ([], ["O1"]) == (young, [r.order_id for r in aged])


@pytest.mark.anyio
async def test_pacing_after_a_slow_batch_does_not_catch_up_in_a_burst() -> None:
    """per_second=1, batches of 8: O1 holds the first batch 20 s; the second batch then starts
    a query a second from when it can start (20, 21, 22, 23), not all at once to make up for
    the time the slow batch took."""
    gateway = Gateway(holds={"O1": 20.0})

    [r async for r in reconcile_orders(gateway, _pending(12), now=NOW, concurrency=2, per_second=1)]

    assert [0, 1, 2, 3, 4, 5, 6, 7, 20, 21, 22, 23] == [round(t) for t in _relative(gateway.starts)]
