"""A merchant's notify endpoint for the end-to-end tests: NotificationProcessor + one store.

Served by ``uvicorn tests.support.notify_app:create_app --factory --workers 2``. The environment
chooses the store (``CMPAY_STORE`` = sqlite, redis or postgres, at ``CMPAY_STORE_URL``) and
its lease (``CMPAY_LEASE`` seconds). The handler adds 1 to a per-order counter in an SQLite
file, so a test can see how often it ran. ``CMPAY_CRASH_ORDERS`` (comma-separated order ids)
makes the first handling of each such order, in any worker, crash mid-handler:
``CMPAY_CRASH=exit`` kills the worker process, ``raise`` raises.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import anyio.to_thread

from cmpay_async import Md5Signer, NotificationProcessor, PaymentEvent
from cmpay_async._asgi import read_request, respond
from cmpay_async.stores import Store
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT


def _credit(path: str, order_id: str) -> None:
    # closing(): a connection's own `with` commits but does not close it (3.13 warns).
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS credits (order_id TEXT PRIMARY KEY, n INTEGER)")
        db.execute(
            "INSERT INTO credits (order_id, n) VALUES (?, 1) "
            "ON CONFLICT (order_id) DO UPDATE SET n = n + 1",
            (order_id,),
        )


def _store() -> Store:
    kind, url = os.environ["CMPAY_STORE"], os.environ["CMPAY_STORE_URL"]
    if kind == "redis":
        from cmpay_async.stores.redis import RedisStore

        return RedisStore(url, prefix=os.environ["CMPAY_STORE_PREFIX"])
    if kind == "postgres":
        from cmpay_async.stores.postgres import PostgresStore

        return PostgresStore(url, table=os.environ["CMPAY_STORE_PREFIX"])
    from cmpay_async.stores.sqlite import SqliteStore

    return SqliteStore(url)


def _first_crash(marks: Path, order_id: str) -> bool:
    """True once per order across every worker: the mark file is created exclusively."""
    try:
        (marks / order_id).touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


def create_app() -> Any:
    """The ASGI app: POST /notify (OfflineNotify) and POST /return (PageNotify)."""
    credits_path = os.environ["CMPAY_CREDITS_PATH"]
    crash_orders = set(filter(None, os.environ.get("CMPAY_CRASH_ORDERS", "").split(",")))
    crash = os.environ.get("CMPAY_CRASH", "raise")
    marks = Path(credits_path).with_suffix(".crashed")
    marks.mkdir(exist_ok=True)

    # Handlers of this process that credited but whose claim is not completed yet. A worker
    # killed in that window makes its order run again after the lease (at-least-once, the
    # reason an effect should be idempotent); the crash waits it out so that the test sees
    # the lease path alone.
    unsettled = 0
    credited: ContextVar[list[bool]] = ContextVar("credited")

    async def credit(event: PaymentEvent) -> None:
        nonlocal unsettled
        if event.order_id in crash_orders and _first_crash(marks, event.order_id):
            if crash == "exit":
                with anyio.fail_after(30):
                    while unsettled:
                        await anyio.sleep(0.01)
                os._exit(1)  # the worker dies holding the claim: only its lease frees it
            raise RuntimeError(f"the shop's handler crashed on {event.order_id}")
        # Counted before the write starts: a write that lands in its thread before this task
        # runs again must already hold the crash back.
        unsettled += 1
        credited.get().append(True)
        await anyio.to_thread.run_sync(_credit, credits_path, event.order_id)

    processor = NotificationProcessor(
        verifier=Md5Signer(PUBLIC_TEST_KEY),
        merchant_id=PUBLIC_TEST_MERCHANT,
        store=_store(),
        handler=credit,
        lease=float(os.environ.get("CMPAY_LEASE", "60")),
    )

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        nonlocal unsettled
        request = await read_request(scope, receive)
        mine: list[bool] = []
        credited.set(mine)
        try:
            answer = await processor.process(request.body)
        finally:
            unsettled -= len(mine)
        await respond(send, answer.status_code, answer.body)

    return app
