"""Reconciliation: find what became of orders whose notification never came (掉单).

The gateway retries OfflineNotify 8 times over about 24 hours (gaps of 1, 5, 10, 60, 120,
360 and 900 minutes), so most outcomes arrive on their own; a lost one shows up only if the
merchant asks. ``reconcile`` asks about the orders the merchant says are pending, on a
schedule that backs off with the order's age, as the gateway's own retries do:

- younger than 1 minute: not yet (the notification normally arrives within the minute);
- up to 1 hour: at most once a minute (a buyer may be waiting for the outcome);
- up to 24 hours: at most every 10 minutes (the gateway is still retrying on its own);
- up to 31 days: at most hourly (the longest validity an order can have is 99 months, but a
  payment that is not settled after a month is for a person to look at);
- older: never (report it instead).

Queries run at most ``concurrency`` at a time (an anyio ``CapacityLimiter``) and start at
most ``per_second`` times a second, so a backlog never floods the gateway.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import anyio
import attrs

from ._exceptions import CmpayError, ConfigurationError
from ._models import CHINA_TZ, OrderQueryResult

__all__ = ["DEFAULT_SCHEDULE", "PendingOrder", "due", "reconcile_orders"]

logger = logging.getLogger("cmpay_async")

#: (an age below which, query at most every): None means "not yet".
DEFAULT_SCHEDULE: tuple[tuple[dt.timedelta, dt.timedelta | None], ...] = (
    (dt.timedelta(minutes=1), None),
    (dt.timedelta(hours=1), dt.timedelta(minutes=1)),
    (dt.timedelta(days=1), dt.timedelta(minutes=10)),
    (dt.timedelta(days=31), dt.timedelta(hours=1)),
)


@attrs.frozen(kw_only=True)
class PendingOrder:
    """An order the merchant has no outcome for: its id, when it was made, when last asked."""

    order_id: str
    created_at: dt.datetime
    last_checked: dt.datetime | None = None


def due(
    order: PendingOrder,
    now: dt.datetime,
    schedule: tuple[tuple[dt.timedelta, dt.timedelta | None], ...] = DEFAULT_SCHEDULE,
) -> bool:
    """Whether ``order`` should be queried at ``now`` under ``schedule``."""
    age = now - order.created_at
    for below, every in schedule:
        if age < below:
            if every is None:
                return False
            return order.last_checked is None or now - order.last_checked >= every
    return False


#: The defaults of every ``reconcile``: queries in flight at once, and started per second.
CONCURRENCY = 8
PER_SECOND = 20.0


async def reconcile_orders(
    query: Callable[[str], Awaitable[OrderQueryResult]],
    pending: Iterable[PendingOrder],
    *,
    now: dt.datetime | None = None,
    concurrency: int = CONCURRENCY,
    per_second: float = PER_SECOND,
    schedule: tuple[tuple[dt.timedelta, dt.timedelta | None], ...] = DEFAULT_SCHEDULE,
) -> AsyncIterator[OrderQueryResult]:
    """Query the due orders of ``pending``; yield each verified result.

    ``query`` is ``CmpayClient.query_order``. A query that fails is logged and skipped: the
    next run asks again.
    """
    # bool is an int: True would pass for one query at a time, which nobody means.
    if type(concurrency) is not int or concurrency < 1:
        raise ConfigurationError(f"concurrency must be a whole number >= 1, not {concurrency!r}")
    # Untyped callers may pass a str: refused here, not as a TypeError deep in the loop.
    if not isinstance(per_second, (int, float)) or not 0 < per_second < math.inf:  # type: ignore[redundant-expr]
        raise ConfigurationError(f"per_second must be a number > 0, not {per_second!r}")
    now = now or dt.datetime.now(CHINA_TZ)
    limiter = anyio.CapacityLimiter(concurrency)
    gap = 1.0 / per_second
    next_start = anyio.current_time()
    batch: list[str] = []

    async def run(order_ids: list[str]) -> list[OrderQueryResult]:
        results: list[OrderQueryResult] = []
        nonlocal next_start

        async def one(order_id: str) -> None:
            async with limiter:
                try:
                    results.append(await query(order_id))
                except CmpayError as exc:
                    logger.warning("reconciliation: query of %s failed: %s", order_id, exc)

        async with anyio.create_task_group() as tg:
            for order_id in order_ids:
                wait = next_start - anyio.current_time()
                if wait > 0:
                    await anyio.sleep(wait)
                next_start = max(next_start, anyio.current_time()) + gap
                tg.start_soon(one, order_id)
        return results

    for order in pending:
        if due(order, now, schedule):
            batch.append(order.order_id)
        if len(batch) >= concurrency * 4:
            for result in await run(batch):
                yield result
            batch = []
    if batch:
        for result in await run(batch):
            yield result
