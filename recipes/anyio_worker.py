"""A plain anyio worker: a few tasks taking jobs from a stream, one client shared by all.

No broker: the jobs come from an ``anyio`` memory stream (put your own queue behind it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream

from cmpay_async import CmpayClient, Order

from .settings import client_settings

#: A job: its name and its JSON-safe arguments; its result is a JSON-safe dict or list.
Job = tuple[str, tuple[Any, ...]]


async def pay(client: CmpayClient, order: dict[str, Any], ip_address: str) -> Any:
    """Create the payment, or say what became of it if this job already ran."""
    return (await client.place_order(Order.from_dict(order), ip_address=ip_address)).to_dict()


async def handle_notification(client: CmpayClient, body: str) -> Any:
    """Verify a notification's raw body and return it typed (then record it once)."""
    return client.verify_notification(body.encode("utf-8")).to_dict()


async def reconcile(client: CmpayClient, order_ids: list[str]) -> Any:
    """Ask the gateway about orders left pending."""
    return [(await client.query_order(order_id)).to_dict() for order_id in order_ids]


JOBS: dict[str, Callable[..., Awaitable[Any]]] = {
    "pay": pay,
    "notification": handle_notification,
    "reconcile": reconcile,
}


async def run_worker(
    jobs: ObjectReceiveStream[Job],
    done: Callable[[Job, Any], object],
    *,
    concurrency: int = 10,
) -> None:
    """Run jobs until the stream closes; ``done(job, result)`` gets each result."""
    async with CmpayClient(**client_settings()) as client, jobs:

        async def work() -> None:
            async for job in jobs:
                name, args = job
                done(job, await JOBS[name](client, *args))

        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(work)
