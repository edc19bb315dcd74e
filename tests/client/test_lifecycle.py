"""One module-level client used the way real deployments use it, over TCP against the sandbox.

Successive ``asyncio.run()`` calls (a Celery task per call), threads with their own loops,
trio then asyncio, and a forked child: every call succeeds, and no bare RuntimeError appears.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
import uuid
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.from_thread
import httpx
import pytest
import trio

from cmpay_async import (
    ClientClosedError,
    CmpayClient,
    ConfigurationError,
    Order,
    PaymentResponse,
)
from cmpay_async.testing import Sandbox
from tests.support import forking
from tests.support.helpers import make_client, sandbox_client, valid_order

SHOP = "http://127.0.0.1:9"  # never called: these orders are not paid


def _ids(prefix: str, n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"{prefix}-{tag}-{i}" for i in range(n)]


async def _pay(client: CmpayClient, order_id: str) -> PaymentResponse:
    order = Order(amount=100, order_id=order_id, product_name="咖啡")
    return await client.create_payment(order, ip_address="127.0.0.1")


def _known(sandbox: Sandbox, order_ids: list[str]) -> list[str]:
    return [i for i in order_ids if (sandbox.merchant_id, i) in sandbox.orders]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_fifty_successive_runs_share_one_client(gateway: tuple[Sandbox, str], backend: str) -> None:
    """A module-level client survives 50 event loops that each start and end around a call."""
    sandbox, url = gateway
    client = sandbox_client(url, SHOP)
    order_ids = _ids(f"RUN-{backend}", 50)

    answers = [anyio.run(_pay, client, order_id, backend=backend) for order_id in order_ids]
    gc.collect()  # a pool left open by a dead loop would warn here (warnings are errors)

    assert order_ids == _known(sandbox, order_ids)
    assert [a.request_id for a in answers] == [
        sandbox.order(i).fields["requestId"] for i in order_ids
    ]


def test_trio_then_asyncio_alternating(gateway: tuple[Sandbox, str]) -> None:
    """Switching backends between calls works (it failed inside the shared semaphore)."""
    sandbox, url = gateway
    client = sandbox_client(url, SHOP)
    order_ids = _ids("SWITCH", 10)

    for n, order_id in enumerate(order_ids):
        anyio.run(_pay, client, order_id, backend="trio" if n % 2 == 0 else "asyncio")

    assert order_ids == _known(sandbox, order_ids)


def test_four_threads_with_their_own_loops_at_once(gateway: tuple[Sandbox, str]) -> None:
    """Two asyncio and two trio loops in four threads use one client concurrently."""
    sandbox, url = gateway
    client = sandbox_client(url, SHOP, max_connections=4)
    per_thread = {n: _ids(f"THREAD{n}", 25) for n in range(4)}
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    async def batch(order_ids: list[str]) -> None:
        async with anyio.create_task_group() as tg:
            for order_id in order_ids:
                tg.start_soon(_pay, client, order_id)

    def run(n: int) -> None:
        try:
            start.wait(timeout=30)
            anyio.run(batch, per_thread[n], backend="asyncio" if n % 2 else "trio")
        except BaseException as exc:  # reported below, with the thread's number
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert [] == errors
    for order_ids in per_thread.values():
        assert order_ids == _known(sandbox, order_ids)


def test_closing_in_one_loop_refuses_calls_in_the_others(
    gateway: tuple[Sandbox, str], caplog: pytest.LogCaptureFixture
) -> None:
    """aclose() closes its own loop's pool and says how many it left to other loops."""
    _, url = gateway
    client = sandbox_client(url, SHOP)
    other_loop_ready, closed = threading.Event(), threading.Event()
    outcome: list[BaseException | None] = []

    async def other_loop() -> None:
        await _pay(client, _ids("OTHER", 1)[0])
        other_loop_ready.set()
        await anyio.to_thread.run_sync(closed.wait)
        try:
            await _pay(client, _ids("OTHER", 1)[0])
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=anyio.run, args=(other_loop,))
    thread.start()
    assert other_loop_ready.wait(timeout=30)

    async def close_here() -> None:
        await _pay(client, _ids("HERE", 1)[0])
        await client.aclose()

    anyio.run(close_here)
    closed.set()
    thread.join(timeout=30)

    assert isinstance(outcome[0], ClientClosedError)
    assert "CmpayClient closed with 1 connection pool(s) still open in other event loops" in (
        caplog.text
    )


def test_a_callers_http_client_stays_in_its_first_loop(gateway: tuple[Sandbox, str]) -> None:
    """A caller's own httpx client cannot follow the CmpayClient into another loop."""
    sandbox, url = gateway

    async def use(client: CmpayClient) -> None:
        await _pay(client, _ids("OWN", 1)[0])

    async def first() -> CmpayClient:
        # In-process, so that the caller's client, which nobody closes here, holds no socket.
        own = httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox))
        client = sandbox_client(url, SHOP, http_client=own)
        await use(client)
        return client

    client = anyio.run(first)
    with pytest.raises(ConfigurationError, match="belongs to the event loop that first used it"):
        anyio.run(use, client)


# -- fork -------------------------------------------------------------------------------------


def _orders_at(url: str) -> set[str]:
    return {o["order_id"] for o in json.loads(httpx.get(f"{url}/_sandbox/orders").text)}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_and_its_parent_both_keep_working(gateway_process: str) -> None:
    """A client used before fork works in the child, and the parent's live pool is untouched.

    The parent keeps an event loop running in a thread, with a keep-alive connection open,
    while it forks; the child uses the same client from asyncio and trio; then the parent
    uses its live pool again.
    """
    url = gateway_process
    client = sandbox_client(url, SHOP)
    before, in_child, after = _ids("PARENT", 3), _ids("CHILD", 4), _ids("AFTER", 3)

    def child() -> None:
        for n, order_id in enumerate(in_child):
            anyio.run(_pay, client, order_id, backend="trio" if n % 2 else "asyncio")

    with anyio.from_thread.start_blocking_portal() as portal:
        for order_id in before:
            portal.call(_pay, client, order_id)
        assert 0 == forking.in_child(child)
        for order_id in after:
            portal.call(_pay, client, order_id)
        portal.call(client.aclose)

    assert set(before + in_child + after) <= _orders_at(url)


def _run_in(backend: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    if backend == "trio":
        return trio.run(fn, *args)
    return asyncio.run(fn(*args))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_native_runners_close_the_pool_when_the_loop_ends(
    gateway: tuple[Sandbox, str], backend: str
) -> None:
    """asyncio.run and trio.run (no anyio in between) end with the loop's pool closed."""
    _, url = gateway
    client = sandbox_client(url, SHOP)
    seen: list[Any] = []

    async def call() -> None:
        await _pay(client, _ids("NATIVE", 1)[0])
        seen.append(await client._pools.current())

    _run_in(backend, call)

    assert seen[0].http.is_closed


@pytest.mark.anyio
async def test_a_closed_client_dropped_mid_run_leaves_nothing_to_finalise() -> None:
    """Closing a client also ends its loop guard: dropping the client later, while the loop
    still runs, makes trio warn about no unfinished async generator."""
    import gc

    from cmpay_async.testing import Sandbox

    client = make_client(httpx.ASGITransport(app=Sandbox()))
    async with client:
        await client.create_payment(valid_order(), ip_address="1.2.3.4")

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        del client
        gc.collect()
        await anyio.sleep(0)  # let the loop run what the collection scheduled

    assert [] == [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]
