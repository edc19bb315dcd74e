"""12. Notifications through NotificationProcessor with each store; 13. reconciliation rate.

12. Distinct signed notifications processed one after another in one process (verify, claim,
    handler, complete), against bare ``verify_notification`` of the same bodies: the
    store's overhead as a ratio. (Two worker processes sharing one store are not measured
    yet.)
13. Reconciliation queries per second against the sandbox process over TCP at the default
    concurrency (8), with the rate limit lifted.
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio

from cmpay_async import (
    CmpayClient,
    Md5Signer,
    NotificationProcessor,
    Order,
    PaymentEvent,
    PendingOrder,
    verify_notification,
)
from cmpay_async.stores import MemoryStore, Store
from cmpay_async.stores.sqlite import SqliteStore
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, sign_notification

VERIFIER = Md5Signer(PUBLIC_TEST_KEY)


@contextmanager
def _stores() -> Iterator[dict[str, Store]]:
    """Every store that can run here: Redis and PostgreSQL only where they answer."""
    from tests.queues import _answers_ping

    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        stores: dict[str, Store] = {
            "MemoryStore": MemoryStore(),
            "SqliteStore": SqliteStore(Path(tmp) / "events.db"),
        }
        if _answers_ping("127.0.0.1", 6379):
            from cmpay_async.stores.redis import RedisStore

            redis = RedisStore(prefix=f"cmpay-bench:{uuid.uuid4().hex[:8]}:")
            stack.callback(redis.close)
            stores["RedisStore"] = redis
        try:
            from cmpay_async.stores.postgres import PostgresStore

            postgres = PostgresStore(
                "postgresql://127.0.0.1:5432/test", table=f"cmpay_bench_{uuid.uuid4().hex[:8]}"
            )
            anyio.run(postgres.migrate)
            stack.callback(postgres.close)
            stores["PostgresStore"] = postgres
        except Exception as exc:  # no server, no driver: that store is not measured
            print(f"PostgresStore not measured: {type(exc).__name__}: {exc}")
        yield stores


def store_overhead(count: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Per store: (µs per processed notification, µs per bare verification)."""
    bodies = [
        sign_notification(order_id=f"B{n:06d}", amount=100, pay_no=f"P{n:010d}")
        for n in range(count * rounds)
    ]

    async def handler(event: PaymentEvent) -> None:
        pass

    def bare() -> float:
        start = time.perf_counter()
        for body in bodies[:count]:
            verify_notification(body, verifier=VERIFIER, merchant_id=PUBLIC_TEST_MERCHANT)
        return (time.perf_counter() - start) / count * 1e6

    out: dict[str, tuple[float, float]] = {}
    with _stores() as stores:
        for name, store in stores.items():
            processor = NotificationProcessor(
                verifier=VERIFIER, merchant_id=PUBLIC_TEST_MERCHANT, store=store, handler=handler
            )
            samples: list[float] = []
            baseline: list[float] = []

            async def run(chunk: list[bytes], proc: Any = processor) -> float:
                start = time.perf_counter()
                for body in chunk:
                    await proc.process(body)
                return (time.perf_counter() - start) / len(chunk) * 1e6

            for r in range(rounds):
                samples.append(anyio.run(run, bodies[r * count : (r + 1) * count]))
                baseline.append(bare())
            out[name] = (statistics.median(samples), statistics.median(baseline))
    return out


async def _reconcile_rate(gateway: str, count: int) -> float:
    settings = {
        "merchant_id": PUBLIC_TEST_MERCHANT,
        "signer": Md5Signer(PUBLIC_TEST_KEY),
        "endpoint": f"{gateway}/ips/cmpayService",
        "callback_url": "https://shop.example/r",
        "notify_url": "https://shop.example/n",
    }
    tag = uuid.uuid4().hex[:8]
    ids = [f"RB{tag}{n:05d}" for n in range(count)]
    async with CmpayClient(**settings) as client:
        for order_id in ids:
            order = Order(amount=100, order_id=order_id, product_name="T")
            await client.create_payment(order, ip_address="203.0.113.7")
        created = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
        pending = [PendingOrder(order_id=i, created_at=created) for i in ids]
        start = time.perf_counter()
        found = [r async for r in client.reconcile(pending, per_second=1e6)]
        elapsed = time.perf_counter() - start
    assert len(found) == count
    return count / elapsed


def reconcile_rate(gateway: str, count: int) -> float:
    """Queries per second of ``reconcile`` at concurrency 8 against the sandbox over TCP."""
    return anyio.run(_reconcile_rate, gateway, count)
