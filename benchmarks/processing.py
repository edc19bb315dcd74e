"""12. Notifications through NotificationProcessor with each store; 13. reconciliation rate.

12. Distinct signed notifications processed one after another in one process (verify, claim,
    handler, complete), against bare ``verify_notification`` of the same bodies: the
    store's overhead as a ratio. Then two worker processes sharing one store, each handed
    every notification in the same order (so each is delivered twice at about the same
    moment, as concurrent duplicates are): deliveries per second across both, and the number
    of handler runs, which must equal the number of notifications.
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
    from tests.support.queues import _answers_ping

    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        stores: dict[str, Store] = {
            "MemoryStore": MemoryStore(),
            "SqliteStore": SqliteStore(Path(tmp) / "events.db"),
        }
        if _answers_ping("127.0.0.1", 6379):
            from cmpay_async.stores.redis import RedisStore

            redis = RedisStore(prefix=f"cmpay-bench:{uuid.uuid4().hex[:8]}:")
            stack.callback(_drop, "RedisStore", redis._prefix)
            stack.callback(redis.close)
            stores["RedisStore"] = redis
        try:
            from cmpay_async.stores.postgres import PostgresStore

            postgres = PostgresStore(
                "postgresql://127.0.0.1:5432/test", table=f"cmpay_bench_{uuid.uuid4().hex[:8]}"
            )
            anyio.run(postgres.migrate)
            stack.callback(_drop, "PostgresStore", postgres.table)
            stack.callback(postgres.close)
            stores["PostgresStore"] = postgres
        except Exception as exc:  # no server, no driver: that store is not measured
            print(f"PostgresStore not measured: {type(exc).__name__}: {exc}")
        yield stores


def store_overhead(count: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Per store: (µs per processed notification, µs per bare verification).

    Both sides get notifications never seen before (so neither finds the date and escape
    memos warm from the other's bodies), and take turns going first in each round.
    """
    stores_count = 4
    bodies = iter(
        [
            sign_notification(order_id=f"B{n:06d}", amount=100, pay_no=f"P{n:010d}")
            for n in range(2 * count * rounds * stores_count)
        ]
    )

    async def handler(event: PaymentEvent) -> None:
        pass

    def bare(chunk: list[bytes]) -> float:
        start = time.perf_counter()
        for body in chunk:
            verify_notification(body, verifier=VERIFIER, merchant_id=PUBLIC_TEST_MERCHANT)
        return (time.perf_counter() - start) / len(chunk) * 1e6

    out: dict[str, tuple[float, float]] = {}
    with _stores() as stores:
        assert len(stores) <= stores_count
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
                ours = [next(bodies) for _ in range(count)]
                theirs = [next(bodies) for _ in range(count)]
                if r % 2:
                    baseline.append(bare(theirs))
                    samples.append(anyio.run(run, ours))
                else:
                    samples.append(anyio.run(run, ours))
                    baseline.append(bare(theirs))
            out[name] = (statistics.median(samples), statistics.median(baseline))
    return out


def _worker(kind: str, where: str, bodies: list[bytes], start: Any, runs: Any, out: Any) -> None:
    """One worker process: its own store object on the shared backend; count handler runs."""
    store = _open(kind, where)

    async def handler(event: PaymentEvent) -> None:
        with runs.get_lock():
            runs.value += 1

    processor = NotificationProcessor(
        verifier=VERIFIER, merchant_id=PUBLIC_TEST_MERCHANT, store=store, handler=handler
    )

    async def run() -> None:
        for body in bodies:
            await processor.process(body)

    start.wait()
    began = time.perf_counter()
    anyio.run(run)
    out.put((began, time.perf_counter()))
    store.close()  # type: ignore[attr-defined]


def _open(kind: str, where: str) -> Store:
    if kind == "SqliteStore":
        return SqliteStore(where)
    if kind == "RedisStore":
        from cmpay_async.stores.redis import RedisStore

        return RedisStore(prefix=where)
    from cmpay_async.stores.postgres import PostgresStore

    return PostgresStore("postgresql://127.0.0.1:5432/test", table=where)


def two_processes(count: int) -> dict[str, tuple[float, int]]:
    """Per shared store: (deliveries per second over 2 processes, handler runs)."""
    import multiprocessing

    from tests.support.queues import _answers_ping

    context = multiprocessing.get_context("spawn")
    out: dict[str, tuple[float, int]] = {}
    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as tmp:
        backends = {"SqliteStore": str(Path(tmp) / "shared.db")}
        if _answers_ping("127.0.0.1", 6379):
            backends["RedisStore"] = f"cmpay-bench2:{tag}:"
        try:
            import psycopg

            psycopg.connect("postgresql://127.0.0.1:5432/test", connect_timeout=3).close()
            backends["PostgresStore"] = f"cmpay_bench2_{tag}"
        except Exception as exc:  # no server, no driver: that store is not measured
            print(f"PostgresStore not measured: {type(exc).__name__}: {exc}")
        for kind, where in backends.items():
            bodies = [
                sign_notification(order_id=f"W{n:06d}{kind[:2]}", amount=100, pay_no=f"{n:010d}")
                for n in range(count)
            ]
            prepared = _open(kind, where)
            anyio.run(_prepare, prepared)
            prepared.close()  # type: ignore[attr-defined]
            # The parent and both workers meet here once each worker is ready: a fair start.
            start, runs, results = context.Barrier(3), context.Value("i", 0), context.Queue()
            workers = [
                context.Process(target=_worker, args=(kind, where, order, start, runs, results))
                for order in (bodies, bodies)  # the same order: the most contention
            ]
            for worker in workers:
                worker.start()
            start.wait(timeout=120)
            spans = [results.get(timeout=600) for _ in workers]
            for worker in workers:
                worker.join()
            elapsed = max(end for _, end in spans) - min(begin for begin, _ in spans)
            out[kind] = (2 * count / elapsed, runs.value)
            _drop(kind, where)
    return out


def _drop(kind: str, where: str) -> None:
    """Remove what a benchmark left in the shared Redis or PostgreSQL."""
    if kind == "RedisStore":
        import redis

        with redis.Redis() as db:
            for key in db.scan_iter(f"{where}*"):
                db.delete(key)
    elif kind == "PostgresStore":
        import psycopg

        with psycopg.connect("postgresql://127.0.0.1:5432/test", autocommit=True) as db:
            db.execute(f"DROP TABLE IF EXISTS {where}")


async def _prepare(store: Store) -> None:
    """Make the store's table (PostgreSQL, SQLite) before the timed part."""
    migrate = getattr(store, "migrate", None)
    if migrate is not None:
        await migrate()
    else:
        await store.claim("warm-up", lease=0.001)


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
