"""The notification processor and its stores: one handler run per payment outcome."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from cmpay_async import (
    Md5Signer,
    NotificationProcessor,
    OrderQueryResult,
    PaymentEvent,
    SignType,
    event_key,
)
from cmpay_async.stores import Claimed, ClaimState, MemoryStore, Store
from cmpay_async.stores.sqlite import SqliteStore
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, sign_notification

pytestmark = pytest.mark.anyio

VERIFIER = Md5Signer(PUBLIC_TEST_KEY)


class Clock:
    """A clock the test moves by hand (leases are about time, the tests never wait)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
def clock_and_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Clock, Store]]:
    """Each store, on a hand-moved clock."""
    clock = Clock()
    if request.param == "memory":
        yield clock, MemoryStore(clock=clock)
    else:
        yield clock, SqliteStore(tmp_path / "events.db", clock=clock)


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


def _result(order_id: str, status: str) -> OrderQueryResult:
    return OrderQueryResult(
        merchant_id=PUBLIC_TEST_MERCHANT,
        return_code="000000",
        message=status,
        sign_type=SignType.MD5,
        type="OrderQuery",
        version="2.0.0",
        order_id=order_id,
        status=status,
        pay_no="P9",
        amount=5,
        amount_items=None,
        bank_abbr="",
        mobile="",
        pay_date=None,
        order_date=None,
        fee=None,
        reserved1="",
        reserved2="",
    )


async def test_reconciliation_and_a_late_notification_are_one_event(
    clock_and_store: tuple[Clock, Store],
) -> None:
    """A paid query result is handled once; the notification arriving later is not."""
    _, store = clock_and_store
    seen: list[PaymentEvent] = []
    processor = _processor(store, seen)

    assert await processor.process_result(_result("A4", "SUCCESS"))
    assert not await processor.process_result(_result("A5", "PENDING"))
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
