"""arq: the client is made in ``on_startup`` and shared through ``ctx``.

Run: ``arq recipes.arq_worker.WorkerSettings``. Enqueue with ``_job_id=order_id`` so that a
payment is queued once; a job whose worker died runs again after ``job_timeout``, which
``place_order`` makes safe.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from arq.connections import RedisSettings

from cmpay_async import CmpayClient, Order

from .settings import QUEUE, REDIS_URL, client_settings


async def startup(ctx: dict[str, Any]) -> None:
    """One client per worker process, shared by its jobs."""
    ctx["cmpay"] = CmpayClient(**client_settings())


async def shutdown(ctx: dict[str, Any]) -> None:
    """Close the client's connections."""
    await ctx["cmpay"].aclose()


async def pay(ctx: dict[str, Any], order: dict[str, Any], ip_address: str) -> dict[str, Any]:
    """Create the payment, or say what became of it if this job already ran."""
    client: CmpayClient = ctx["cmpay"]
    placed = await client.place_order(Order.from_dict(order), ip_address=ip_address)
    return placed.to_dict()


async def handle_notification(ctx: dict[str, Any], body: str) -> dict[str, Any]:
    """Verify a notification's raw body and return it typed (then record it once)."""
    return ctx["cmpay"].verify_notification(body.encode("utf-8")).to_dict()  # type: ignore[no-any-return]


async def reconcile(ctx: dict[str, Any], order_ids: list[str]) -> list[dict[str, Any]]:
    """Ask the gateway about orders left pending (schedule it with arq's cron)."""
    client: CmpayClient = ctx["cmpay"]
    return [(await client.query_order(order_id)).to_dict() for order_id in order_ids]


class WorkerSettings:
    """``arq recipes.arq_worker.WorkerSettings``."""

    functions: ClassVar[list[Any]] = [pay, handle_notification, reconcile]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    queue_name = QUEUE
    #: A job whose worker died is run again once this has passed.
    job_timeout = int(os.environ.get("CMPAY_JOB_TIMEOUT", "30"))
    keep_result = 3600
