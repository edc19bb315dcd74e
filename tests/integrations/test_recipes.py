"""The task-queue recipes under recipes/, run with real workers and a real Redis.

Celery (prefork), arq and taskiq workers run as processes of their own against the sandbox
served over TCP; 200 payment jobs each must give 200 orders at the gateway, none lost and
none twice. A worker killed with SIGKILL mid-batch (with an order created and its answer held)
loses nothing either: the job runs again, and place_order reports the order it finds.
"""

from __future__ import annotations

import gc
import os
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import pytest

from cmpay_async import Notification, Order, OrderQueryResult, OrderState, Placement
from cmpay_async._serve import serve_in_thread
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, Sandbox, sign_notification
from tests.support.queues import (
    HeldAnswers,
    batch_ids,
    children,
    new_queue,
    orders_at,
    serve_sandbox,
    wait_until,
    worker,
    worker_env,
)

#: Real worker processes or servers: run once by `nox -s integration`, not per Python.
pytestmark = pytest.mark.integration

JOBS = 200
IP = "127.0.0.1"


class HeldGateway(NamedTuple):
    """A sandbox, the wrapper that can hold its answers, and the loopback URL it is served at."""

    sandbox: Sandbox
    held: HeldAnswers
    url: str


@pytest.fixture
def held_gateway() -> Iterator[HeldGateway]:
    """A fresh sandbox over loopback TCP, its answers holdable."""
    sandbox, held = serve_sandbox()
    with serve_in_thread(held) as url:
        yield HeldGateway(sandbox, held, url)


def _orders(ids: list[str]) -> list[dict[str, Any]]:
    return [
        Order(amount=100 + n, order_id=oid, product_name="咖啡").to_dict()
        for n, oid in enumerate(ids)
    ]


def _check_batch(
    sandbox: Sandbox, ids: list[str], results: list[dict[str, Any]]
) -> list[Placement]:
    """0 lost, 0 twice: every job has a result, every order exists once at the gateway."""
    placements = [Placement.from_dict(r) for r in results]
    assert sorted(ids) == sorted(p.order_id for p in placements)
    assert all(p.state is OrderState.PENDING for p in placements)
    at_gateway = orders_at(sandbox, ids[0][:-4])
    assert sorted(ids) == sorted(at_gateway)  # each once: the sandbox keys orders by id
    return placements


def _side_jobs_check(note: dict[str, Any], queried: list[dict[str, Any]], ids: list[str]) -> None:
    assert Notification.from_dict(note).paid
    assert [OrderState.PENDING] * len(ids) == [OrderQueryResult.from_dict(q).state for q in queried]


def _notification_body() -> str:
    return sign_notification(order_id="NOTE1", amount=100).decode()


# -- Celery -------------------------------------------------------------------------------------


@contextmanager
def _celery(redis_url: str) -> Iterator[Any]:
    """A producer app; its Redis connections closed afterwards (they would warn when collected)."""
    from celery import Celery

    app = Celery("producer", broker=redis_url, backend=redis_url)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    try:
        yield app
    finally:
        consumer = app.backend.result_consumer
        pubsub = getattr(consumer, "_pubsub", None)
        if pubsub is not None:
            pubsub.close()
            consumer._pubsub = None  # results collected later would reconnect to unsubscribe
        app.backend.client.connection_pool.disconnect()
        app.close()
        gc.collect()


def _celery_worker(env: dict[str, str], tmp_path: Path) -> Any:
    command = ["celery", "-A", "recipes.celery_app", "worker", "--pool=prefork"]
    command += ["--concurrency=2", "-Q", env["CMPAY_QUEUE"], "--loglevel=WARNING"]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return worker(command, env, tmp_path / "celery.log")


def test_celery_prefork_places_200_payments(
    redis_url: str, held_gateway: HeldGateway, tmp_path: Path
) -> None:
    """200 jobs through a prefork worker: 200 orders, each once; the side jobs work too."""
    sandbox, _, url = held_gateway
    queue = new_queue()
    env = worker_env(redis_url, url, queue)
    ids = batch_ids("CEL", JOBS)
    with _celery(redis_url) as app, _celery_worker(env, tmp_path):
        sent = [app.send_task("cmpay.pay", args=[o, IP], queue=queue) for o in _orders(ids)]
        results = [r.get(timeout=120) for r in sent]
        # Notifications go through the inbox (test_inbox_workers.py), not a raw body.
        queried = app.send_task("cmpay.reconcile", args=[ids[:5]], queue=queue).get(timeout=60)
        assert [OrderState.PENDING] * 5 == [OrderQueryResult.from_dict(q).state for q in queried]

    assert all(p.created for p in _check_batch(sandbox, ids, results))


def test_celery_loses_nothing_when_a_pool_process_is_killed(
    redis_url: str, held_gateway: HeldGateway, tmp_path: Path
) -> None:
    """SIGKILL of the pool processes mid-batch: the jobs run again; 0 lost, 0 twice."""
    sandbox, held, url = held_gateway
    queue = new_queue()
    env = worker_env(redis_url, url, queue, CMPAY_VISIBILITY_TIMEOUT="5")
    ids = batch_ids("CELK", JOBS)
    held.hold = 0.05
    with _celery(redis_url) as app, _celery_worker(env, tmp_path) as main:
        sent = [app.send_task("cmpay.pay", args=[o, IP], queue=queue) for o in _orders(ids)]
        wait_until(lambda: sum(r.ready() for r in sent) >= 40, 120, "40 results")
        wait_until(lambda: held.held > 0, 60, "an answer held at the gateway")
        killed = children(main.pid)
        for pid in killed:
            os.kill(pid, signal.SIGKILL)  # their orders exist, their answers never arrive
        held.hold = 0.0
        # Polled, not get(): after the lost worker, get() waited about 160 s for results
        # that ready() (which reads the stored result) saw within a second or two.
        wait_until(lambda: all(r.ready() for r in sent), 120, "every result")
        results = [r.get(timeout=30) for r in sent]

    placements = _check_batch(sandbox, ids, results)
    assert killed
    assert any(not p.created for p in placements)  # a re-run found its order at the gateway


# -- arq ---------------------------------------------------------------------------------------


@asynccontextmanager
async def _arq_pool(redis_url: str, queue: str) -> AsyncIterator[Any]:
    """An arq producer for ``queue``, closed afterwards."""
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=queue)
    try:
        yield pool
    finally:
        await pool.aclose()


async def _arq_batch(redis_url: str, queue: str, ids: list[str]) -> list[dict[str, Any]]:
    async with _arq_pool(redis_url, queue) as pool:
        jobs = [await pool.enqueue_job("pay", o, IP, _job_id=o["order_id"]) for o in _orders(ids)]
        return [await job.result(timeout=120) for job in jobs if job is not None]


async def _arq_side_jobs(redis_url: str, queue: str, ids: list[str]) -> None:
    async with _arq_pool(redis_url, queue) as pool:
        note = await pool.enqueue_job("handle_notification", _notification_body())
        queried = await pool.enqueue_job("reconcile", ids)
        assert note is not None
        assert queried is not None
        _side_jobs_check(await note.result(timeout=60), await queried.result(timeout=60), ids)


def _arq_worker(env: dict[str, str], tmp_path: Path, name: str) -> Any:
    return worker(["arq", "recipes.arq_worker.WorkerSettings"], env, tmp_path / f"{name}.log")


def test_arq_places_200_payments(redis_url: str, held_gateway: HeldGateway, tmp_path: Path) -> None:
    """200 jobs through an arq worker: 200 orders, each once; the side jobs work too."""
    sandbox, _, url = held_gateway
    queue = new_queue()
    env = worker_env(redis_url, url, queue)
    ids = batch_ids("ARQ", JOBS)
    with _arq_worker(env, tmp_path, "arq"):
        results = anyio.run(_arq_batch, redis_url, queue, ids)
        anyio.run(_arq_side_jobs, redis_url, queue, ids[:5])

    assert all(p.created for p in _check_batch(sandbox, ids, results))


def test_arq_loses_nothing_when_its_worker_is_killed(
    redis_url: str, held_gateway: HeldGateway, tmp_path: Path
) -> None:
    """SIGKILL of the arq worker mid-batch; a second worker re-runs its jobs after the timeout."""
    sandbox, held, url = held_gateway
    queue = new_queue()
    env = worker_env(redis_url, url, queue, CMPAY_JOB_TIMEOUT="3")
    ids = batch_ids("ARQK", JOBS)
    held.hold = 0.05
    results: list[dict[str, Any]] = []

    async def produce() -> None:
        results.extend(await _arq_batch(redis_url, queue, ids))

    import threading

    producer = threading.Thread(target=anyio.run, args=(produce,))
    with _arq_worker(env, tmp_path, "arq-first") as first:
        producer.start()
        wait_until(lambda: len(orders_at(sandbox, ids[0][:-4])) >= 40, 120, "40 orders")
        wait_until(lambda: held.held > 0, 60, "an answer held at the gateway")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    held.hold = 0.0
    with _arq_worker(env, tmp_path, "arq-second"):
        producer.join(timeout=180)

    placements = _check_batch(sandbox, ids, results)
    assert any(not p.created for p in placements)  # a re-run found its order at the gateway


# -- taskiq ------------------------------------------------------------------------------------


async def _taskiq_jobs(redis_url: str, queue: str, ids: list[str]) -> list[dict[str, Any]]:
    from taskiq.kicker import AsyncKicker
    from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

    broker = ListQueueBroker(redis_url, queue_name=queue).with_result_backend(
        RedisAsyncResultBackend(redis_url)
    )
    await broker.startup()
    try:

        def kicker(name: str) -> Any:
            return AsyncKicker(task_name=name, broker=broker, labels={})

        tasks = [await kicker("cmpay.pay").kiq(o, IP) for o in _orders(ids)]
        results = [(await t.wait_result(timeout=120)).return_value for t in tasks]
        note = await kicker("cmpay.notification").kiq(_notification_body())
        queried = await kicker("cmpay.reconcile").kiq(ids[:5])
        _side_jobs_check(
            (await note.wait_result(timeout=60)).return_value,
            (await queried.wait_result(timeout=60)).return_value,
            ids[:5],
        )
        return results
    finally:
        await broker.shutdown()


def test_taskiq_places_200_payments(
    redis_url: str, held_gateway: HeldGateway, tmp_path: Path
) -> None:
    """200 jobs through a taskiq worker: 200 orders, each once; the side jobs work too."""
    sandbox, _, url = held_gateway
    queue = new_queue()
    env = worker_env(redis_url, url, queue)
    ids = batch_ids("TIQ", JOBS)
    command = ["taskiq", "worker", "recipes.taskiq_app:broker", "--workers", "1"]
    with worker(command, env, tmp_path / "taskiq.log"):
        results = anyio.run(_taskiq_jobs, redis_url, queue, ids)

    assert all(p.created for p in _check_batch(sandbox, ids, results))


# -- a plain anyio worker ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_anyio_worker_places_200_payments(
    held_gateway: HeldGateway, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """The broker-less recipe: ten tasks, one client, a memory stream of jobs."""
    from recipes.anyio_worker import Job, run_worker

    sandbox, _, url = held_gateway
    for key, value in worker_env("redis://unused", url, "unused").items():
        if key.startswith(("CMPAY_", "SHOP_")):
            monkeypatch.setenv(key, value)
    ids = batch_ids("ANY", JOBS)
    results: list[tuple[Job, Any]] = []

    async def main() -> None:
        send, receive = anyio.create_memory_object_stream[Job](JOBS)
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_worker, receive, lambda job, result: results.append((job, result)))
            async with send:
                for order in _orders(ids):
                    await send.send(("pay", (order, IP)))
                await send.send(("notification", (_notification_body(),)))
                await send.send(("reconcile", (ids[:5],)))

    anyio.run(main, backend=backend)

    by_job = {job[0]: result for job, result in results}
    pays = [result for job, result in results if job[0] == "pay"]
    assert all(p.created for p in _check_batch(sandbox, ids, pays))
    _side_jobs_check(by_job["notification"], by_job["reconcile"], ids[:5])
    assert PUBLIC_TEST_MERCHANT == Notification.from_dict(by_job["notification"]).merchant_id
    assert PUBLIC_TEST_KEY not in repr(results)
