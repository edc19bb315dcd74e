"""The inbox: SUCCESS once recorded durably, the handler run once per event by drain()."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import anyio.to_thread
import httpx
import psycopg
import pytest

from cmpay_async import Md5Signer, PaymentEvent, verify_notification
from cmpay_async.inbox import Inbox, InboxBackend, backoff
from cmpay_async.inbox.postgres import PostgresInbox
from cmpay_async.inbox.sqlite import SqliteInbox
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, sign_notification
from tests.support.helpers import query_result

pytestmark = pytest.mark.anyio


class Clock:
    """SQLite leases and retries are measured on this clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class PostgresClock(Clock):
    """PostgreSQL keeps its own time: moving the clock makes every row due instead."""

    def __init__(self, backend: PostgresInbox) -> None:
        super().__init__()
        self.backend = backend

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "now" and hasattr(self, "now"):
            with psycopg.connect(self.backend._dsn, autocommit=True) as db:
                db.execute(
                    f"UPDATE {self.backend.table} SET due = now() - interval '1 second' "  # noqa: S608
                    "WHERE state = 'pending'"
                )
        super().__setattr__(name, value)


class ClockAndBackend(NamedTuple):
    """A hand-moved clock and the inbox backend that reads it."""

    clock: Clock
    backend: InboxBackend


@pytest.fixture(params=["sqlite", "postgres"])
def clock_and_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClockAndBackend]:
    """Each backend, on a hand-moved clock."""
    if request.param == "sqlite":
        clock = Clock()
        sqlite = SqliteInbox(tmp_path / "inbox.db", clock=clock)
        yield ClockAndBackend(clock, sqlite)
        sqlite.close()
        return
    backend = PostgresInbox(
        request.getfixturevalue("postgres_dsn"), table=f"cmpay_inbox_{uuid.uuid4().hex[:8]}"
    )
    yield ClockAndBackend(PostgresClock(backend), backend)
    backend.close()
    with psycopg.connect(backend._dsn, autocommit=True) as db:
        db.execute(f"DROP TABLE IF EXISTS {backend.table}")


class Runs:
    """The handler: records each run; fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.events: list[PaymentEvent] = []
        self.threads: list[int] = []
        self.failing = False

    def __call__(self, event: PaymentEvent) -> None:
        self.threads.append(threading.get_ident())
        if self.failing:
            raise LookupError(f"no order {event.order_id} in the shop's database")
        self.events.append(event)

    @property
    def orders(self) -> list[str]:
        return [e.order_id for e in self.events]


def inbox_for(backend: InboxBackend, runs: Runs, **kw: Any) -> Inbox:
    """An inbox on the test key."""
    return Inbox(
        backend=backend,
        verifier=Md5Signer(PUBLIC_TEST_KEY),
        merchant_id=PUBLIC_TEST_MERCHANT,
        handler=runs,
        **kw,
    )


def paid(order_id: str, kind: str = "OfflineNotify") -> bytes:
    """A signed notification of a paid order."""
    return sign_notification(kind=kind, order_id=order_id, amount=1250)


async def test_accepts_durably_then_drains_once(
    clock_and_backend: tuple[Clock, InboxBackend],
) -> None:
    """SUCCESS before the handler runs; duplicates collapse; drain runs the handler once."""
    _, backend = clock_and_backend
    runs = Runs()
    inbox = inbox_for(backend, runs)

    first = paid("I1")
    answers = [
        await inbox.process(body)
        for body in (first, paid("I1", "PageNotify"), paid("I1"), paid("I2"))
    ]

    assert [b"SUCCESS"] * 4 == [a.body for a in answers]
    assert [] == runs.orders
    assert 2 == await inbox.pending()
    report = await inbox.drain()
    assert (2, 0) == (report.handled, report.failed)
    assert ["I1", "I2"] == sorted(runs.orders)
    event = next(e for e in runs.events if e.order_id == "I1")
    assert "OfflineNotify" == event.source
    assert 1250 == event.amount
    # The handler gets the first delivery's notification as it verified, fields and all.
    assert verify_notification(first, verifier=Md5Signer(PUBLIC_TEST_KEY)) == event.notification
    assert (0, 0) == ((await inbox.drain()).handled, await inbox.pending())
    assert b"SUCCESS" == (await inbox.process(paid("I1"))).body  # handled: still SUCCESS
    assert 0 == await inbox.pending()
    assert 0 == (await inbox.drain()).handled


async def test_refuses_forged_bodies(clock_and_backend: tuple[Clock, InboxBackend]) -> None:
    """A forged notification is answered 400 FAIL and recorded nowhere."""
    _, backend = clock_and_backend
    inbox = inbox_for(backend, Runs())

    forged = sign_notification(order_id="F1", amount=1, signer=Md5Signer("x" * 64))
    answer = await inbox.process(forged)

    assert (400, b"FAIL") == (answer.status_code, answer.body)
    assert 0 == await inbox.pending()


async def test_a_failing_handler_is_retried_after_backoff_and_stays_visible(
    clock_and_backend: tuple[Clock, InboxBackend],
) -> None:
    """A handler that raises: FAIL counted, attempts and last error kept, due after backoff."""
    clock, backend = clock_and_backend
    runs = Runs()
    inbox = inbox_for(backend, runs)
    await inbox.process(paid("R1"))

    runs.failing = True
    assert 1 == (await inbox.drain()).failed
    assert 0 == (await inbox.drain()).failed  # not due again yet
    [failure] = await inbox.failures()
    assert ("R1", 1) == (failure.key.split(":")[2], failure.attempts)
    assert "LookupError: no order R1" in (failure.last_error or "")

    clock.now += 3600
    runs.failing = False
    assert 1 == (await inbox.drain()).handled
    assert ["R1"] == runs.orders
    assert [] == await inbox.failures()


async def test_a_drainer_that_died_leaves_its_lease_to_run_out(
    clock_and_backend: tuple[Clock, InboxBackend],
) -> None:
    """A taken event is not taken again while its lease runs; afterwards the sweep takes it."""
    clock, backend = clock_and_backend
    runs = Runs()
    inbox = inbox_for(backend, runs)
    await inbox.process(paid("L1"))

    taken = await backend.take(lease=60)  # a drainer that then dies mid-handler
    assert taken is not None
    assert 0 == (await inbox.drain()).handled  # a second drainer finds nothing due

    clock.now += 61
    assert 1 == (await inbox.drain()).handled
    assert ["L1"] == runs.orders
    assert not await backend.finish(taken.key, taken.token or "")  # the dead one's token


async def test_reconciliation_results_are_recorded_and_drained(
    clock_and_backend: tuple[Clock, InboxBackend],
) -> None:
    """A paid query result is one event with the notification of the same payment."""
    _, backend = clock_and_backend
    runs = Runs()
    inbox = inbox_for(backend, runs)
    result = query_result("Q1")

    assert await inbox.process_result(result)
    assert b"SUCCESS" == (await inbox.process(paid("Q1"))).body
    await inbox.drain()

    [event] = runs.events
    assert ("reconciliation", 5, result) == (event.source, event.amount, event.query)


async def test_a_store_that_fails_is_answered_503(tmp_path: Path) -> None:
    """When the event cannot be recorded, the gateway is told to come back (never SUCCESS)."""
    inbox = inbox_for(SqliteInbox(tmp_path / "missing-dir" / "inbox.db"), Runs())

    answer = await inbox.process(paid("U1"))

    assert (503, b"FAIL") == (answer.status_code, answer.body)


def test_drain_sync_runs_a_plain_handler_in_the_calling_thread(tmp_path: Path) -> None:
    """From a task-queue job: accept_sync and drain_sync, the handler in the job's thread."""
    runs = Runs()
    inbox = inbox_for(SqliteInbox(tmp_path / "inbox.db"), runs)

    assert b"SUCCESS" == inbox.process_sync(paid("D1")).body
    report = inbox.drain_sync()

    assert (1, ["D1"], [threading.get_ident()]) == (report.handled, runs.orders, runs.threads)


async def test_two_drainers_never_run_one_event_twice(
    clock_and_backend: tuple[Clock, InboxBackend],
) -> None:
    """Four drainers in threads share 30 events: each handled once."""
    _, backend = clock_and_backend
    runs = Runs()
    inbox = inbox_for(backend, runs)
    for i in range(30):
        await inbox.process(paid(f"C{i:02d}"))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(anyio.to_thread.run_sync, inbox.drain_sync)

    assert sorted(f"C{i:02d}" for i in range(30)) == sorted(runs.orders)


async def test_the_framework_glue_takes_an_inbox(tmp_path: Path) -> None:
    """notify_endpoint(inbox): SUCCESS once recorded, the handler later."""
    from starlette.applications import Starlette

    from cmpay_async.integrations.starlette import notify_endpoint

    runs = Runs()
    inbox = inbox_for(SqliteInbox(tmp_path / "inbox.db"), runs)
    app = Starlette()
    app.add_route("/cmpay/notify", notify_endpoint(inbox), methods=["POST"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        response = await client.post("/cmpay/notify", content=paid("G1"))

    assert (200, b"SUCCESS", []) == (response.status_code, response.content, runs.orders)
    assert 1 == (await inbox.drain()).handled


def test_backoff_doubles_up_to_an_hour() -> None:
    """5 s, 10 s, 20 s ... at most an hour."""
    assert [5.0, 10.0, 20.0, 3600.0] == [backoff(n) for n in (1, 2, 3, 20)]


def test_pending_events_and_reports_survive_pickling() -> None:
    """What failures() and drain() return crosses a process pool intact."""
    import pickle

    from cmpay_async.inbox import DrainReport, Pending

    pending = Pending(key="k", source="OfflineNotify", data="{}", attempts=2, last_error="x")
    report = DrainReport(handled=3, failed=1)

    assert pending == pickle.loads(pickle.dumps(pending))
    assert report == pickle.loads(pickle.dumps(report))


async def test_an_async_handler_is_awaited_with_each_event(tmp_path: Path) -> None:
    """An ``async def`` handler (or an object with an async ``__call__``) is awaited on the
    drainer's loop with the event."""
    seen: list[tuple[str, int]] = []

    class Handler:
        async def __call__(self, event: PaymentEvent) -> None:
            seen.append((event.order_id, threading.get_ident()))

    backend = SqliteInbox(tmp_path / "inbox.db")
    try:
        inbox = Inbox(
            backend=backend,
            verifier=Md5Signer(PUBLIC_TEST_KEY),
            merchant_id=PUBLIC_TEST_MERCHANT,
            handler=Handler(),
        )
        assert b"SUCCESS" == (await inbox.process(paid("A1"))).body
        assert 1 == (await inbox.drain()).handled
    finally:
        backend.close()
    assert [("A1", threading.get_ident())] == seen
