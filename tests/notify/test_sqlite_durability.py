"""What SqliteStore syncs to disk, read from the statements SQLite runs: a completion is
committed with ``synchronous=FULL``, a claim and a release with ``synchronous=OFF`` (a claim
lost in a crash behaves as a lease that ran out), and each connection is told once.

Every connection the store opens is traced (``sqlite3.Connection.set_trace_callback``), so
the tests see each statement and the connection it ran on; no timing is involved.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from cmpay_async import NotificationProcessor, PaymentEvent, StoreError
from cmpay_async.stores import ClaimState
from cmpay_async.stores.sqlite import SqliteStore
from cmpay_async.testing import sign_notification
from tests.support.helpers import processor_for

pytestmark = pytest.mark.anyio


class Trace:
    """Every statement of every connection opened while it is installed, in order."""

    def __init__(self) -> None:
        self.statements: list[tuple[int, str]] = []
        self.lock = threading.Lock()
        self.connections = 0

    def connect(self, original: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = original(*args, **kwargs)
        with self.lock:
            self.connections += 1
            number = self.connections

        def record(statement: str) -> None:
            with self.lock:
                self.statements.append((number, statement.strip()))

        connection.set_trace_callback(record)
        return connection

    def commits(self) -> list[tuple[str, str]]:
        """Each transaction as (its first write statement's verb, the synchronous setting in
        force on its connection when it committed)."""
        setting: dict[int, str] = {}
        first: dict[int, str] = {}
        out = []
        for number, statement in self.statements:
            upper = statement.upper()
            if upper.startswith("PRAGMA SYNCHRONOUS="):
                setting[number] = upper.split("=", 1)[1]
            elif upper.startswith(("INSERT", "UPDATE", "DELETE")) and number not in first:
                first[number] = upper.split()[0]
            elif upper == "COMMIT":
                out.append((first.pop(number, "-"), setting.get(number, "DEFAULT")))
            elif upper == "ROLLBACK":
                first.pop(number, None)
        return out

    def pragmas(self) -> list[tuple[int, str]]:
        return [(n, s) for n, s in self.statements if s.upper().startswith("PRAGMA SYNCHRONOUS")]


@pytest.fixture
def trace(monkeypatch: pytest.MonkeyPatch) -> Trace:
    """Traces every sqlite3 connection opened during the test."""
    traced = Trace()
    original = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **kw: traced.connect(original, *a, **kw))
    return traced


def _processor(store: SqliteStore, seen: list[str]) -> NotificationProcessor:
    async def handler(event: PaymentEvent) -> None:
        seen.append(event.order_id)

    return processor_for(store, handler)


async def test_each_handled_notification_is_one_synced_commit(trace: Trace, tmp_path: Path) -> None:
    """Five notifications one after another: five claims committed unsynced, five
    completions committed synced (FULL), nothing else written."""
    store = SqliteStore(tmp_path / "events.db")
    seen: list[str] = []
    processor = _processor(store, seen)
    try:
        for n in range(5):
            answer = await processor.process(sign_notification(order_id=f"S{n}", amount=100))
            assert b"SUCCESS" == answer.body
    finally:
        store.close()

    assert [f"S{n}" for n in range(5)] == seen
    commits = trace.commits()
    assert [("INSERT", "OFF")] * 5 == [c for c in commits if c[0] == "INSERT"]
    assert [("UPDATE", "FULL")] * 5 == [c for c in commits if c[0] == "UPDATE"]
    assert 10 == len([c for c in commits if c[0] != "-"])


async def test_a_release_is_not_synced_and_frees_the_key(trace: Trace, tmp_path: Path) -> None:
    """A handler that fails: the claim and the release are both unsynced commits; the retry
    claims the key again and its completion is the one synced commit."""
    store = SqliteStore(tmp_path / "events.db")
    calls: list[str] = []

    async def flaky(event: PaymentEvent) -> None:
        calls.append(event.order_id)
        if len(calls) == 1:
            raise RuntimeError("ledger down")

    processor = processor_for(store, flaky)
    body = sign_notification(order_id="R1", amount=100)
    try:
        assert b"FAIL" == (await processor.process(body)).body
        assert b"SUCCESS" == (await processor.process(body)).body
    finally:
        store.close()

    writes = [c for c in trace.commits() if c[0] != "-"]
    assert [
        ("INSERT", "OFF"),
        ("DELETE", "OFF"),
        ("INSERT", "OFF"),
        ("UPDATE", "FULL"),
    ] == writes


async def test_each_connection_is_told_its_synchronous_setting_once(
    trace: Trace, tmp_path: Path
) -> None:
    """Twenty claims on one connection set synchronous once; the committer connection sets
    FULL once however many completions it writes."""
    store = SqliteStore(tmp_path / "events.db")
    try:
        tokens = []
        for n in range(20):
            claimed = await store.claim(f"K{n}", lease=60)
            assert claimed.token is not None
            tokens.append(claimed.token)
        for n, token in enumerate(tokens):
            assert await store.complete(f"K{n}", token)
    finally:
        store.close()

    by_connection: dict[int, list[str]] = {}
    for number, statement in trace.pragmas():
        by_connection.setdefault(number, []).append(statement.upper().replace(" ", ""))
    settings = sorted(by_connection.values())
    # One connection per worker thread that claimed (OFF once each), one committer (FULL).
    assert ["PRAGMA SYNCHRONOUS=FULL".replace(" ", "")] in settings
    assert all(len(s) == 1 for s in settings), settings


async def test_a_locked_file_is_a_timeout_that_was_not_applied(tmp_path: Path) -> None:
    """Another connection holds the write lock past the store's timeout: the claim raises
    StoreTimeoutError naming the operation, and says nothing was written (rolled back)."""
    path = tmp_path / "events.db"
    store = SqliteStore(path, timeout=0.2)
    assert ClaimState.NEW is (await store.claim("L0", lease=60)).state  # the file exists
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with anyio.fail_after(10), pytest.raises(StoreError) as caught:
            await store.claim("L1", lease=60)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
        store.close()

    error = caught.value
    assert "StoreTimeoutError" == type(error).__name__
    assert "claim" == error.operation
    assert error.maybe_sent is False
    assert str(error).startswith("SqliteStore failed to claim: OperationalError: database is")


async def test_a_completion_the_lock_keeps_out_fails_and_can_be_tried_again(
    tmp_path: Path,
) -> None:
    """Another connection holds the write lock past the timeout while a completion is
    written: complete() raises StoreTimeoutError naming ``complete``, nothing was applied;
    once the lock is gone the same completion succeeds (the claim still holds)."""
    path = tmp_path / "events.db"
    store = SqliteStore(path, timeout=0.2)
    claimed = await store.claim("C1", lease=60)
    assert claimed.token is not None
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with anyio.fail_after(10), pytest.raises(StoreError) as caught:
            await store.complete("C1", claimed.token)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    try:
        assert await store.complete("C1", claimed.token)
        assert ClaimState.DONE is (await store.claim("C1", lease=60)).state
    finally:
        store.close()

    error = caught.value
    assert "StoreTimeoutError" == type(error).__name__
    assert ("complete", False) == (error.operation, error.maybe_sent)
    assert str(error).startswith("SqliteStore failed to complete: OperationalError: database is")


async def test_a_batch_that_fails_while_written_fails_each_of_its_completions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch was taken and the write failed inside its transaction (a disk error):
    complete() raises StoreError naming ``complete``, the transaction is rolled back, and
    the same completion succeeds once the disk is back."""
    from cmpay_async.stores import sqlite as sqlite_module

    mark_done = sqlite_module._mark_done
    broken = True

    def failing(db: sqlite3.Connection, batch: list[list[object]]) -> list[bool]:
        if broken:
            raise sqlite3.OperationalError("disk I/O error")
        return mark_done(db, batch)

    monkeypatch.setattr(sqlite_module, "_mark_done", failing)
    store = SqliteStore(tmp_path / "events.db")
    claimed = await store.claim("B1", lease=60)
    assert claimed.token is not None
    try:
        with anyio.fail_after(10), pytest.raises(StoreError) as caught:
            await store.complete("B1", claimed.token)
        broken = False
        assert await store.complete("B1", claimed.token)
    finally:
        store.close()

    assert "complete" == caught.value.operation
    assert str(caught.value).startswith(
        "SqliteStore failed to complete: OperationalError: disk I/O"
    )


async def test_a_release_the_lock_keeps_out_is_a_timeout_of_the_release(tmp_path: Path) -> None:
    """Another connection holds the write lock past the timeout: release() raises a
    StoreTimeoutError naming ``release``, nothing applied (the claim still holds)."""
    path = tmp_path / "events.db"
    store = SqliteStore(path, timeout=0.2)
    claimed = await store.claim("R1", lease=60)
    assert claimed.token is not None
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with anyio.fail_after(10), pytest.raises(StoreError) as caught:
            await store.release("R1", claimed.token)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    try:
        assert ClaimState.IN_PROGRESS is (await store.claim("R1", lease=60)).state
    finally:
        store.close()

    error = caught.value
    assert "StoreTimeoutError" == type(error).__name__
    assert ("release", False) == (error.operation, error.maybe_sent)
