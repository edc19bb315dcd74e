"""The notification processor and its stores: one handler run per payment outcome."""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import psycopg
import pytest

from cmpay_async import (
    Md5Signer,
    NotificationProcessor,
    PaymentEvent,
    event_key,
)
from cmpay_async.stores import Claimed, ClaimState, MemoryStore, Store
from cmpay_async.stores.postgres import PostgresStore
from cmpay_async.stores.redis import RedisStore
from cmpay_async.stores.sqlite import SqliteStore
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, sign_notification
from tests.support.helpers import query_result

pytestmark = pytest.mark.anyio

VERIFIER = Md5Signer(PUBLIC_TEST_KEY)


class Clock:
    """A clock the test moves by hand (leases are about time, the tests never wait)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class RedisClock(Clock):
    """Redis keeps its own time: moving the clock ends every lease in Redis instead."""

    def __init__(self, store: RedisStore, prefix: str) -> None:
        super().__init__()
        self.store, self.prefix = store, prefix

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "now" and hasattr(self, "now"):
            client = self.store._redis
            for key in client.scan_iter(f"{self.prefix}*"):
                if client.get(key) != "done":
                    client.delete(key)  # what PX does when the lease runs out
        super().__setattr__(name, value)


class PostgresClock(Clock):
    """PostgreSQL keeps its own time: moving the clock ends every lease in the table."""

    def __init__(self, store: PostgresStore) -> None:
        super().__init__()
        self.store = store

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "now" and hasattr(self, "now"):
            with psycopg.connect(self.store._dsn, autocommit=True) as db:
                db.execute(
                    f"UPDATE {self.store.table} SET expires = now() - interval '1 second' "  # noqa: S608
                    "WHERE state = 'in_progress'"
                )
        super().__setattr__(name, value)


class ClockAndStore(NamedTuple):
    """A hand-moved clock and the store that reads it."""

    clock: Clock
    store: Store


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def clock_and_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClockAndStore]:
    """Each store, on a hand-moved clock."""
    if request.param == "memory":
        clock = Clock()
        yield ClockAndStore(clock, MemoryStore(clock=clock))
    elif request.param == "sqlite":
        clock = Clock()
        yield ClockAndStore(clock, SqliteStore(tmp_path / "events.db", clock=clock))
    elif request.param == "postgres":
        store = PostgresStore(
            request.getfixturevalue("postgres_dsn"), table=f"cmpay_test_{uuid.uuid4().hex[:8]}"
        )
        yield ClockAndStore(PostgresClock(store), store)
        store.close()
        with psycopg.connect(store._dsn, autocommit=True) as db:
            db.execute(f"DROP TABLE IF EXISTS {store.table}")
    else:
        prefix = f"cmpay-test:{uuid.uuid4().hex[:8]}:"
        store = RedisStore(request.getfixturevalue("redis_url"), prefix=prefix)
        yield ClockAndStore(RedisClock(store, prefix), store)
        for key in store._redis.scan_iter(f"{prefix}*"):
            store._redis.delete(key)
        store.close()


def _processor(store: Store, seen: list[PaymentEvent], **kw: Any) -> NotificationProcessor:
    async def handler(event: PaymentEvent) -> None:
        await anyio.sleep(0)  # a checkpoint: concurrent deliveries interleave here
        seen.append(event)

    return NotificationProcessor(
        verifier=VERIFIER, merchant_id=PUBLIC_TEST_MERCHANT, store=store, handler=handler, **kw
    )


async def test_concurrent_duplicates_and_the_page_notify_run_the_handler_once(
    clock_and_store: tuple[Clock, Store],
) -> None:
    """Ten copies of the OfflineNotify and the PageNotify at once: one handler run."""
    _, store = clock_and_store
    seen: list[PaymentEvent] = []
    processor = _processor(store, seen)
    offline = sign_notification(order_id="A1", amount=1250, pay_no="P1")
    page = sign_notification(kind="PageNotify", order_id="A1", amount=1250, pay_no="P1")
    answers: list[bytes] = []

    async def deliver(body: bytes) -> None:
        answers.append((await processor.process(body)).body)

    async with anyio.create_task_group() as tg:
        for body in [offline] * 10 + [page]:
            tg.start_soon(deliver, body)

    assert 1 == len(seen)
    assert seen[0].paid
    assert 1250 == seen[0].amount
    assert set(answers) <= {b"SUCCESS", b"FAIL"}
    assert b"SUCCESS" in answers
    # Every later delivery, from either direction, is answered SUCCESS without the handler.
    assert b"SUCCESS" == (await processor.process(offline)).body
    assert b"SUCCESS" == (await processor.process(page)).body
    assert 1 == len(seen)


async def test_forged_notification_never_reaches_the_handler(
    clock_and_store: tuple[Clock, Store],
) -> None:
    """A payload signed with another key is refused with 400 and leaves the store alone."""
    _, store = clock_and_store
    seen: list[PaymentEvent] = []
    forged = sign_notification(order_id="A1", amount=1, signer=Md5Signer("x" * 64))

    answer = await _processor(store, seen).process(forged)

    assert (400, b"FAIL") == (answer.status_code, answer.body)
    assert [] == seen
    key = event_key(PUBLIC_TEST_MERCHANT, "A1", "SUCCESS")
    assert ClaimState.NEW is (await store.claim(key, lease=1)).state


async def test_a_failing_handler_releases_the_event_for_the_retry(
    clock_and_store: tuple[Clock, Store],
) -> None:
    """The handler raises: FAIL (the gateway retries), and the retry runs the handler."""
    _, store = clock_and_store
    calls: list[PaymentEvent] = []

    async def flaky(event: PaymentEvent) -> None:
        calls.append(event)
        if len(calls) == 1:
            raise RuntimeError("database down")

    processor = NotificationProcessor(
        verifier=VERIFIER, merchant_id=PUBLIC_TEST_MERCHANT, store=store, handler=flaky
    )
    body = sign_notification(order_id="A2", amount=5)

    assert b"FAIL" == (await processor.process(body)).body
    assert b"SUCCESS" == (await processor.process(body)).body
    assert 2 == len(calls)


async def test_a_dead_workers_lease_runs_out(clock_and_store: tuple[Clock, Store]) -> None:
    """A worker that claimed and died holds the event only until its lease ends."""
    clock, store = clock_and_store
    seen: list[PaymentEvent] = []
    processor = _processor(store, seen, lease=30)
    key = event_key(PUBLIC_TEST_MERCHANT, "A3", "SUCCESS")
    dead = await store.claim(key, lease=30)  # the worker that died mid-handler
    body = sign_notification(order_id="A3", amount=5)

    assert b"FAIL" == (await processor.process(body)).body  # still its lease
    clock.now += 31
    assert b"SUCCESS" == (await processor.process(body)).body
    assert 1 == len(seen)
    assert dead.token is not None
    assert not await store.complete(key, dead.token)  # the dead worker's token is void


async def test_only_the_owner_completes_or_releases(clock_and_store: tuple[Clock, Store]) -> None:
    """Another token neither completes nor releases a claimed key."""
    _, store = clock_and_store
    mine = await store.claim("k", lease=60)
    assert mine.token is not None

    await store.release("k", "not-the-token")
    assert not await store.complete("k", "not-the-token")
    assert ClaimState.IN_PROGRESS is (await store.claim("k", lease=60)).state
    assert await store.complete("k", mine.token)
    assert Claimed(ClaimState.DONE) == await store.claim("k", lease=60)


async def test_reconciliation_and_a_late_notification_are_one_event(
    clock_and_store: tuple[Clock, Store],
) -> None:
    """A paid query result is handled once; the notification arriving later is not."""
    _, store = clock_and_store
    seen: list[PaymentEvent] = []
    processor = _processor(store, seen)

    assert await processor.process_result(query_result("A4"))
    assert not await processor.process_result(query_result("A5", "PENDING"))
    answer = await processor.process(sign_notification(order_id="A4", amount=5))

    assert b"SUCCESS" == answer.body
    assert ["reconciliation"] == [e.source for e in seen]


def _claim_many(path: str, keys: list[str]) -> list[str]:
    async def run() -> list[str]:
        store = SqliteStore(path)
        won = []
        for key in keys:
            if (await store.claim(key, lease=60)).state is ClaimState.NEW:
                won.append(key)
        return won

    return asyncio.run(run())


def test_sqlite_claims_are_atomic_across_processes(tmp_path: Path) -> None:
    """Two processes claim the same 300 keys at once: each key is won exactly once."""
    path = str(tmp_path / "shared.db")
    keys = [f"key-{i}" for i in range(300)]
    _claim_many(path, ["warm-up"])  # the table exists before the race
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        won = pool.starmap(_claim_many, [(path, keys), (path, list(reversed(keys)))])

    assert sorted(keys) == sorted(won[0] + won[1])


async def test_sqlite_first_use_from_many_tasks_at_once(tmp_path: Path) -> None:
    """Twenty first claims at once on a new file: the set-up runs once, nothing is locked."""
    store = SqliteStore(tmp_path / "fresh.db")
    states: list[ClaimState] = []

    async def claim(n: int) -> None:
        states.append((await store.claim(f"k{n % 5}", lease=60)).state)

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(claim, n)

    assert 5 == states.count(ClaimState.NEW)
    assert 15 == states.count(ClaimState.IN_PROGRESS)
