"""The blocking facade and the task-queue recipes, against the sandbox over TCP.

10. ``BlockingCmpayClient.create_payment`` against ``CmpayClient.create_payment``: the same
    sequential calls, rounds alternating, median microseconds per call.
11. Payment jobs per second through Celery (prefork, 2 processes) and arq (one worker), from
    enqueue to the last result, next to a plain loop of the async client with 2 tasks.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread

from cmpay_async import BlockingCmpayClient, CmpayClient, Md5Signer, Order
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT

IP = "203.0.113.7"


def _orders(prefix: str, n: int) -> list[Order]:
    tag = f"{prefix}{time.monotonic_ns() % 10**9:09d}"
    return [Order(amount=1250, order_id=f"{tag}{i:05d}", product_name="咖啡") for i in range(n)]


def _loop_settings(gateway: str) -> dict[str, Any]:
    return {
        "merchant_id": PUBLIC_TEST_MERCHANT,
        "signer": Md5Signer(PUBLIC_TEST_KEY),
        "callback_url": "https://shop.example/cmpay/return",
        "notify_url": "https://shop.example/cmpay/notify",
        "endpoint": f"{gateway}/ips/cmpayService",
    }


def facade_against_client(gateway: str, calls: int, rounds: int) -> tuple[float, float]:
    """Median µs per call: (BlockingCmpayClient, CmpayClient), alternating rounds."""
    client = CmpayClient(**_loop_settings(gateway))
    blocking = BlockingCmpayClient(client)
    samples: dict[str, list[float]] = {"blocking": [], "async": []}

    async def async_round(orders: list[Order]) -> None:
        for order in orders:
            await client.create_payment(order, ip_address=IP)

    with anyio.from_thread.start_blocking_portal() as portal, blocking:
        for order in _orders("WARMB", 20):
            blocking.create_payment(order, ip_address=IP)
        portal.call(async_round, _orders("WARMA", 20))
        for _ in range(rounds):
            orders = _orders("FACADE", calls)
            start = time.perf_counter()
            for order in orders:
                blocking.create_payment(order, ip_address=IP)
            samples["blocking"].append((time.perf_counter() - start) / calls * 1e6)
            orders = _orders("ASYNC", calls)
            start = time.perf_counter()
            portal.call(async_round, orders)
            samples["async"].append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples["blocking"]), statistics.median(samples["async"])


def jobs_per_second(gateway: str, redis_url: str, jobs: int) -> dict[str, float]:
    """Jobs per second through Celery and arq, and the async client's own loop."""
    from tests.integrations.test_recipes import _arq_batch, _celery, _celery_worker
    from tests.support.queues import new_queue, wait_until, worker, worker_env

    rates: dict[str, float] = {}

    async def loop(orders: list[Order]) -> None:
        async with CmpayClient(**_loop_settings(gateway)) as c:

            async def one_task(part: list[Order]) -> None:
                for order in part:
                    await c.place_order(order, ip_address=IP)

            async with anyio.create_task_group() as tg:
                tg.start_soon(one_task, orders[::2])
                tg.start_soon(one_task, orders[1::2])

    orders = _orders("LOOP", jobs)
    start = time.perf_counter()
    anyio.run(loop, orders)
    rates["async client loop, 2 tasks"] = jobs / (time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as tmp:
        queue = new_queue()
        env = worker_env(redis_url, gateway, queue)
        payloads = [o.to_dict() for o in _orders("CELB", jobs)]
        with _celery(redis_url) as app, _celery_worker(env, Path(tmp)):
            warm = app.send_task("cmpay.reconcile", args=[[]], queue=queue)
            wait_until(warm.ready, 60, "the Celery worker")
            start = time.perf_counter()
            sent = [app.send_task("cmpay.pay", args=[p, IP], queue=queue) for p in payloads]
            wait_until(lambda: all(r.ready() for r in sent), 300, "every Celery result")
            rates["Celery prefork, 2 processes"] = jobs / (time.perf_counter() - start)

        queue = new_queue()
        env = worker_env(redis_url, gateway, queue)
        ids = [o.order_id for o in _orders("ARQB", jobs)]
        with worker(["arq", "recipes.arq_worker.WorkerSettings"], env, Path(tmp) / "arq.log"):
            anyio.run(_arq_batch, redis_url, queue, ids[:1])  # the worker is up
            start = time.perf_counter()
            anyio.run(_arq_batch, redis_url, queue, ids[1:])
            rates["arq, 1 worker"] = (jobs - 1) / (time.perf_counter() - start)
    return rates
