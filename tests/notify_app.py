"""A merchant's notify endpoint for the end-to-end tests: NotificationProcessor + SqliteStore.

Served by ``uvicorn tests.notify_app:create_app --factory --workers 2``; the handler adds 1
to a per-order counter in an SQLite file, so a test can see how often it ran.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import anyio.to_thread

from cmpay_async import Md5Signer, NotificationProcessor, PaymentEvent
from cmpay_async._asgi import read_request, respond
from cmpay_async.stores.sqlite import SqliteStore
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT


def _credit(path: str, order_id: str) -> None:
    with sqlite3.connect(path, timeout=30) as db:
        db.execute("CREATE TABLE IF NOT EXISTS credits (order_id TEXT PRIMARY KEY, n INTEGER)")
        db.execute(
            "INSERT INTO credits (order_id, n) VALUES (?, 1) "
            "ON CONFLICT (order_id) DO UPDATE SET n = n + 1",
            (order_id,),
        )


def create_app() -> Any:
    """The ASGI app: POST /notify (OfflineNotify) and POST /return (PageNotify)."""
    credits_path = os.environ["CMPAY_CREDITS_PATH"]

    async def credit(event: PaymentEvent) -> None:
        await anyio.to_thread.run_sync(_credit, credits_path, event.order_id)

    processor = NotificationProcessor(
        verifier=Md5Signer(PUBLIC_TEST_KEY),
        merchant_id=PUBLIC_TEST_MERCHANT,
        store=SqliteStore(os.environ["CMPAY_STORE_PATH"]),
        handler=credit,
    )

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = await read_request(scope, receive)
        answer = await processor.process(request.body)
        await respond(send, answer.status_code, answer.body)

    return app
