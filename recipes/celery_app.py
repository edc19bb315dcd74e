"""Celery: sync tasks through BlockingCmpayClient, one client per worker process.

Run: ``celery -A recipes.celery_app worker --pool=prefork --concurrency=2 -Q cmpay``.
Tasks are acknowledged late and given back to the queue when their worker dies, so a job
can run twice: ``place_order`` makes that safe (the second run reports the order instead of
failing with RPM22208 or creating another one).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

from cmpay_async import BlockingCmpayClient, Order

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


@app.task(name="cmpay.notification")
def handle_notification(body: str) -> dict[str, Any]:
    """Verify a notification's raw body (queued by the web handler) and return it typed."""
    note = client().verify_notification(body.encode("utf-8"))
    # Here: record note.pay_no once (a unique key), after checking note.amount.
    return note.to_dict()


@app.task(name="cmpay.reconcile")
def reconcile(order_ids: list[str]) -> list[dict[str, Any]]:
    """Ask the gateway about orders left pending (a periodic job: celery beat)."""
    return [client().query_order(order_id).to_dict() for order_id in order_ids]
