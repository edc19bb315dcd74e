"""The inbox with a real Celery worker: 200 payments, two workers killed, a purged queue.

The web side (this process, eight threads) accepts each payment's PageNotify and
OfflineNotify into the inbox (SQLite, and PostgreSQL) and nudges ``cmpay.drain``; the
Celery recipe's worker (prefork, with its beat sweep every second) drains. A pool process
is SIGKILLed twice in the middle of a handler, and the queue is purged with half the nudges
in it, and again with the killed task given back to it: every payment must still be
handled exactly once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import psycopg
import pytest
import redis

from cmpay_async import Md5Signer
from cmpay_async.inbox import Inbox
from cmpay_async.inbox.postgres import PostgresInbox
from cmpay_async.inbox.sqlite import SqliteInbox
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, sign_notification
from tests.support.queues import (
    batch_ids,
    new_queue,
    postgres_server,
    wait_until,
    worker,
    worker_env,
)

from .test_recipes import _celery

pytestmark = pytest.mark.integration

PAYMENTS = 200


def _runs(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        try:
            rows = conn.execute("SELECT order_id, count(*) FROM runs GROUP BY order_id")
            return dict(rows.fetchall())
        except sqlite3.OperationalError:  # the first handler has not made the table yet
            return {}


def _deliveries(order_id: str) -> list[bytes]:
    """What the gateway and the buyer's browser send for one payment."""
    return [
        sign_notification(kind="PageNotify", order_id=order_id, amount=100),
        sign_notification(order_id=order_id, amount=100),
        sign_notification(order_id=order_id, amount=100),
    ]


class InboxUnderTest(NamedTuple):
    """The inbox as the recipe's environment names it, and the web side's own."""

    env: dict[str, str]
    inbox: Any


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[InboxUnderTest]:
    """The inbox's backend, as the recipe's environment names it, and the web side's."""
    if request.param == "sqlite":
        sqlite = SqliteInbox(tmp_path / "inbox.db")
        yield InboxUnderTest({"CMPAY_INBOX_DB": str(tmp_path / "inbox.db")}, sqlite)
        sqlite.close()
        return
    with postgres_server() as dsn:
        table = f"cmpay_inbox_{uuid.uuid4().hex[:8]}"
        postgres = PostgresInbox(dsn, table=table)
        yield InboxUnderTest({"CMPAY_INBOX_DSN": dsn, "CMPAY_INBOX_TABLE": table}, postgres)
        postgres.close()
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute(f"DROP TABLE IF EXISTS {table}")


def test_celery_inbox_handles_each_payment_once_through_kills_and_a_purge(
    redis_url: str, tmp_path: Path, backend: tuple[dict[str, str], Any]
) -> None:
    """200 payments x 3 deliveries: each handled once, though workers die and tasks vanish."""
    queue = new_queue()
    ids = batch_ids("INB", PAYMENTS)
    slow = [ids[30], ids[150]]  # their first handler run is where a worker is killed
    markers = tmp_path / "markers"
    markers.mkdir()
    handled_db = tmp_path / "handled.db"
    env = worker_env(
        redis_url,
        "http://127.0.0.1:9",
        queue,
        **backend[0],
        CMPAY_HANDLED_DB=str(handled_db),
        CMPAY_PAYMENT_HANDLER="tests.support.inbox_handler:record",
        CMPAY_SLOW_ORDERS=",".join(slow),
        CMPAY_MARKERS=str(markers),
        CMPAY_INBOX_LEASE="3",
        CMPAY_SWEEP_SECONDS="1",
        CMPAY_VISIBILITY_TIMEOUT="5",
    )
    inbox = Inbox(
        backend=backend[1],
        verifier=Md5Signer(PUBLIC_TEST_KEY),
        merchant_id=PUBLIC_TEST_MERCHANT,
        handler=lambda event: None,  # the web side never drains
    )
    forged = [
        sign_notification(order_id=f"FORGED{i}", amount=1, signer=Md5Signer("x" * 64))
        for i in range(5)
    ]
    command = ["celery", "-A", "recipes.celery_app", "worker", "--pool=prefork"]
    command += ["--concurrency=2", "-Q", queue, "--loglevel=WARNING", "-B"]
    command += ["-s", str(tmp_path / "beat-schedule")]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    answers: dict[str, list[bytes]] = {oid: [] for oid in ids}
    killed: list[int] = []

    def deliver(order_id: str, body: bytes) -> None:
        answers[order_id].append(inbox.process_sync(body).body)

    def deliver_batch(batch: list[str], app: Any, pool: ThreadPoolExecutor) -> None:
        futures = [pool.submit(deliver, oid, body) for oid in batch for body in _deliveries(oid)]
        for future in futures:
            future.result()
        for _ in batch:
            app.send_task("cmpay.drain", queue=queue)

    def kill_in_handler(order_id: str) -> None:
        marker = markers / order_id
        wait_until(marker.exists, 120, f"the slow handler of {order_id}")
        wait_until(lambda: marker.read_text() != "", 10, "the marker's pid")
        pid = int(marker.read_text())
        os.kill(pid, signal.SIGKILL)  # mid-handler: its lease must run out
        killed.append(pid)

    with (
        _celery(redis_url) as app,
        worker(command, env, tmp_path / "celery.log"),
        ThreadPoolExecutor(8) as pool,
    ):
        deliver_batch(ids[:100], app, pool)
        kill_in_handler(slow[0])
        deliver_batch(ids[100:], app, pool)
        redis.Redis.from_url(redis_url).delete(queue)  # the queue loses every nudge in it
        forged_answers = [inbox.process_sync(body).body for body in forged]
        kill_in_handler(slow[1])
        last_kill = time.monotonic()
        # The killed drain task, given back to the queue, is lost too: only the sweep is left.
        redis.Redis.from_url(redis_url).delete(queue)
        wait_until(lambda: len(_runs(handled_db)) == PAYMENTS, 180, "every payment handled")
        caught_up = time.monotonic() - last_kill
        assert 0 == anyio.run(inbox.pending)  # nothing left that could run a handler again

    runs = _runs(handled_db)
    assert {oid: 1 for oid in ids} == runs
    assert all(b"SUCCESS" in answers[oid] for oid in ids)
    assert [b"FAIL"] * len(forged) == forged_answers
    assert len(set(killed)) == 2
    print(f"all handled {caught_up:.1f} s after the second kill (lease 3 s, sweep 1 s)")
