"""taskiq: the client is made at worker start-up and injected into each task.

Run: ``taskiq worker recipes.taskiq_app:broker``. Results are stored in Redis as JSON.
"""

from __future__ import annotations

from typing import Annotated, Any

from taskiq import Context, TaskiqDepends, TaskiqEvents, TaskiqState
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

from cmpay_async import CmpayClient, Order

from .settings import QUEUE, REDIS_URL, client_settings

broker = ListQueueBroker(REDIS_URL, queue_name=QUEUE).with_result_backend(
    RedisAsyncResultBackend(REDIS_URL, result_ex_time=3600)
)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def startup(state: TaskiqState) -> None:
    """One client per worker process."""
    state.cmpay = CmpayClient(**client_settings())


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def shutdown(state: TaskiqState) -> None:
    """Close the client's connections."""
    await state.cmpay.aclose()


def cmpay(context: Annotated[Context, TaskiqDepends()]) -> CmpayClient:
    """The worker's client, as a dependency."""
    return context.state.cmpay  # type: ignore[no-any-return]


@broker.task(task_name="cmpay.pay")
async def pay(
    order: dict[str, Any],
    ip_address: str,
    client: Annotated[CmpayClient, TaskiqDepends(cmpay)],
) -> dict[str, Any]:
    """Create the payment, or say what became of it if this job already ran."""
    placed = await client.place_order(Order.from_dict(order), ip_address=ip_address)
    return placed.to_dict()


@broker.task(task_name="cmpay.notification")
async def handle_notification(
    body: str, client: Annotated[CmpayClient, TaskiqDepends(cmpay)]
) -> dict[str, Any]:
    """Verify a notification's raw body and return it typed (then record it once)."""
    return client.verify_notification(body.encode("utf-8")).to_dict()


@broker.task(task_name="cmpay.reconcile")
async def reconcile(
    order_ids: list[str], client: Annotated[CmpayClient, TaskiqDepends(cmpay)]
) -> list[dict[str, Any]]:
    """Ask the gateway about orders left pending (schedule it with taskiq's scheduler)."""
    return [(await client.query_order(order_id)).to_dict() for order_id in order_ids]
