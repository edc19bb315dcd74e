"""Celery: sync tasks through BlockingCmpayClient, one client per worker process.

Run: ``celery -A recipes.celery_app worker --pool=prefork --concurrency=2 -Q cmpay -B``
(``-B``: the periodic sweep; or run ``celery beat`` on its own). Tasks are acknowledged late
and given back to the queue when their worker dies, so a job can run twice: ``place_order``
makes that safe (the second run reports the order instead of failing with RPM22208 or
creating another one).

Notifications go through an inbox (``cmpay_async.inbox``): the web handler calls
``accept(body)``, which verifies the body, records the payment's event durably and answers
``SUCCESS``, then nudges the ``cmpay.drain`` task; the task, and a sweep every
``CMPAY_SWEEP_SECONDS``, run ``handle_payment`` once per event. A lost or purged task, or a
worker killed mid-handler, costs a delay until the next sweep, never a payment.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

from cmpay_async import Ack, BlockingCmpayClient, Md5Signer, Order, PaymentEvent
from cmpay_async.inbox import Inbox, InboxBackend

from .settings import QUEUE, REDIS_URL, client_settings

app = Celery("cmpay", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",  # orders travel as Order.to_dict(), never pickled
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,  # a job whose worker dies is not lost...
    task_reject_on_worker_lost=True,  # ...it goes back to the queue
    worker_prefetch_multiplier=1,
    # Redis gives an unacknowledged message (its worker died with it) to another worker
    # after this many seconds; keep it above your longest task.
    broker_transport_options={
        "visibility_timeout": int(os.environ.get("CMPAY_VISIBILITY_TIMEOUT", "3600"))
    },
    broker_connection_retry_on_startup=True,
    # The sweep: drains whatever the queue lost (a purge, a worker killed mid-task).
    beat_schedule={
        "cmpay-sweep": {
            "task": "cmpay.drain",
            "schedule": float(os.environ.get("CMPAY_SWEEP_SECONDS", "60")),
            "options": {"queue": QUEUE},
        }
    },
)

_client: BlockingCmpayClient | None = None


@worker_process_init.connect
def _open_client(**_: Any) -> None:
    """Each prefork child builds its own client (and loop thread) after the fork."""
    global _client
    _client = BlockingCmpayClient(**client_settings())


@worker_process_shutdown.connect
def _close_client(**_: Any) -> None:
    if _client is not None:
        _client.close()


def client() -> BlockingCmpayClient:
    """This process's client (also made on demand, e.g. in a solo or threads pool)."""
    global _client
    if _client is None:
        _client = BlockingCmpayClient(**client_settings())
    return _client


@app.task(name="cmpay.pay")
def pay(order: dict[str, Any], ip_address: str) -> dict[str, Any]:
    """Create the payment, or say what became of it if this job already ran."""
    return client().place_order(Order.from_dict(order), ip_address=ip_address).to_dict()


def handle_payment(event: PaymentEvent) -> None:
    """Your code: runs once per payment outcome, in a worker; raise to be retried later."""
    # Here: check event.amount against the order, then mark it paid in your database.


def _handler() -> Any:
    """``handle_payment``, or the ``module:function`` named by CMPAY_PAYMENT_HANDLER."""
    named = os.environ.get("CMPAY_PAYMENT_HANDLER")
    if not named:
        return handle_payment
    module, _, function = named.partition(":")
    return getattr(importlib.import_module(module), function)


def _backend() -> InboxBackend:
    dsn = os.environ.get("CMPAY_INBOX_DSN")
    if dsn:
        from cmpay_async.inbox.postgres import PostgresInbox

        return PostgresInbox(dsn, table=os.environ.get("CMPAY_INBOX_TABLE", "cmpay_inbox"))
    from cmpay_async.inbox.sqlite import SqliteInbox

    return SqliteInbox(os.environ.get("CMPAY_INBOX_DB", "cmpay-inbox.db"))


_inbox: Inbox | None = None


def inbox() -> Inbox:
    """This process's inbox (the web app's and each worker's: one backend, shared)."""
    global _inbox
    if _inbox is None:
        _inbox = Inbox(
            backend=_backend(),
            verifier=Md5Signer(os.environ["CMPAY_SIGN_KEY"]),
            merchant_id=os.environ["CMPAY_MERCHANT_ID"],
            handler=_handler(),
            lease=float(os.environ.get("CMPAY_INBOX_LEASE", "60")),
        )
    return _inbox


def accept(body: bytes, *, charset: str | None = None) -> Ack:
    """In the web handler: record the notification durably, nudge a drain, answer."""
    answer = inbox().process_sync(body, charset=charset)
    if answer.body == b"SUCCESS":
        drain.delay()  # only a nudge: if it is lost, the sweep drains the event
    return answer


@app.task(name="cmpay.drain")
def drain() -> dict[str, int]:
    """Run the handler for every due event in the inbox (the nudge and the sweep)."""
    report = inbox().drain_sync()
    return {"handled": report.handled, "failed": report.failed}


@app.task(name="cmpay.reconcile")
def reconcile(order_ids: list[str]) -> list[dict[str, Any]]:
    """Ask the gateway about orders left pending (a periodic job: celery beat)."""
    return [client().query_order(order_id).to_dict() for order_id in order_ids]
