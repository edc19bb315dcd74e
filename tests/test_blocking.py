"""BlockingCmpayClient over TCP against the sandbox: every method, threads, fork, misuse."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from cmpay_async import (
    BlockingCmpayClient,
    ClientClosedError,
    CmpayClient,
    ConfigurationError,
    Md5Signer,
    Order,
    OrderState,
    PendingOrder,
)
from cmpay_async._serve import serve_in_thread
from cmpay_async.testing import PUBLIC_TEST_KEY, Sandbox, sign_notification

from .helpers import sandbox_client
from .test_lifecycle import _in_child, gateway_process  # noqa: F401 - a fixture

SHOP = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[Sandbox, str]]:
    """A sandbox served over loopback TCP in a thread."""
    sandbox = Sandbox()
    with serve_in_thread(sandbox) as url:
        yield sandbox, url


def blocking(url: str, **kw: object) -> BlockingCmpayClient:
    """A blocking client of the public test merchant."""
    return BlockingCmpayClient(sandbox_client(url, SHOP, **kw))


def _minutes_ago(minutes: int) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=minutes)


def order(prefix: str, amount: int = 1000) -> Order:
    """An order with a unique id."""
    return Order(amount=amount, order_id=f"{prefix}-{uuid.uuid4().hex[:10]}", product_name="茶")


def test_the_facade_offers_every_public_call_with_the_same_signature() -> None:
    """Each public method of CmpayClient has a blocking twin taking the same arguments."""
    public = {
        name: fn
        for name, fn in inspect.getmembers(CmpayClient, inspect.isfunction)
        # "ǁ": the variants mutation testing (mutmut) adds to a class are not its API.
        if not name.startswith("_") and name not in ("aclose",) and "ǁ" not in name
    }
    for name, fn in public.items():
        twin = getattr(BlockingCmpayClient, name)
        assert inspect.signature(fn).parameters == inspect.signature(twin).parameters, name
        assert not inspect.iscoroutinefunction(twin), name
        if name != "reconcile":  # an async iterator there, a list here
            assert inspect.signature(fn) == inspect.signature(twin), name


def test_every_method_works_over_tcp(gateway: tuple[Sandbox, str]) -> None:
    """create, place, query, refund, prepare and verify, each against the real sandbox."""
    sandbox, url = gateway
    first, second = order("BLK"), order("BLK")
    with blocking(url) as client:
        payment = client.create_payment(first, ip_address="127.0.0.1")
        assert sandbox.order(first.order_id).session_id == payment.pay_url.session_id
        sandbox.settle(sandbox.order(first.order_id), paid=True)

        assert OrderState.PAID is client.query_order(first.order_id).state
        assert 400 == client.refund(first.order_id, 400).amount
        assert 400 == sandbox.order(first.order_id).refunded

        assert client.place_order(second, ip_address="127.0.0.1").created
        again = client.place_order(second, ip_address="127.0.0.1")
        assert (False, OrderState.PENDING) == (again.created, again.state)

        prepared = client.prepare_payment(order("PREP"), ip_address="127.0.0.1")
        assert b"hmac=" in prepared.body
        assert 30 == len(client.new_request_id())

        pending = [PendingOrder(order_id=first.order_id, created_at=_minutes_ago(5))]
        assert [OrderState.PAID] == [r.state for r in client.reconcile(pending)]

        note = client.verify_notification(sign_notification(order_id="N1", amount=5))
        assert note.paid
        assert 5 == note.amount


def test_many_threads_share_one_facade(gateway: tuple[Sandbox, str]) -> None:
    """Eight threads place 10 orders each at once through one blocking client."""
    sandbox, url = gateway
    per_thread = [[order(f"T{n}") for _ in range(10)] for n in range(8)]
    errors: list[BaseException] = []
    with blocking(url) as client:

        def run(orders: list[Order]) -> None:
            try:
                for o in orders:
                    client.create_payment(o, ip_address="127.0.0.1")
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(orders,)) for orders in per_thread]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    assert [] == errors
    ids = {o.order_id for orders in per_thread for o in orders}
    assert ids <= {oid for _, oid in sandbox.orders}


def test_a_forked_child_gets_its_own_loop(gateway_process: str) -> None:  # noqa: F811
    """After fork the child makes its own loop; the parent keeps working."""
    client = blocking(gateway_process)
    client.create_payment(order("PARENT"), ip_address="127.0.0.1")

    def child() -> None:
        placed = client.place_order(order("CHILD"), ip_address="127.0.0.1")
        assert placed.created
        client.close()

    assert 0 == _in_child(child)
    client.create_payment(order("PARENT"), ip_address="127.0.0.1")
    client.close()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_calling_it_inside_an_event_loop_is_refused(
    gateway: tuple[Sandbox, str], backend: str
) -> None:
    """Inside a running loop a blocking call would freeze it: a ConfigurationError says why."""
    _, url = gateway
    client = blocking(url)

    async def misuse() -> None:
        client.query_order("X")

    with pytest.raises(ConfigurationError, match="await the same method of CmpayClient"):
        anyio.run(misuse, backend=backend)
    client.close()


def test_a_loop_running_outside_any_task_is_refused_too(gateway: tuple[Sandbox, str]) -> None:
    """Playwright's sync API marks a loop running in the thread with no task: a typed error,
    not asyncio's bare RuntimeError (found driving the cashier in a browser)."""
    _, url = gateway
    client = blocking(url)
    loop = asyncio.new_event_loop()
    asyncio.events._set_running_loop(loop)  # what a greenlet-driven loop leaves in the thread
    try:
        with pytest.raises(ConfigurationError, match="await the same method of CmpayClient"):
            client.query_order("X")
    finally:
        asyncio.events._set_running_loop(None)
        loop.close()
    client.close()


def test_close_is_idempotent_and_final(gateway: tuple[Sandbox, str]) -> None:
    """After close() every call raises ClientClosedError; closing twice is fine."""
    _, url = gateway
    client = blocking(url)
    client.create_payment(order("CLOSE"), ip_address="127.0.0.1")
    client.close()
    client.close()

    assert client.closed
    with pytest.raises(ClientClosedError):
        client.query_order("X")


def test_settings_or_a_client_not_both() -> None:
    """Wrapping a client and passing settings at once is ambiguous."""
    inner = CmpayClient(merchant_id="M", signer=Md5Signer(PUBLIC_TEST_KEY))

    assert inner is BlockingCmpayClient(inner).client
    with pytest.raises(ConfigurationError, match="not both"):
        BlockingCmpayClient(inner, merchant_id="M")


def test_loops_of_ended_threads_are_closed(gateway: tuple[Sandbox, str]) -> None:
    """A thread's private loop is closed once the thread has ended and another one calls."""
    _, url = gateway
    client = blocking(url)
    loops: list[Any] = []

    def call_once() -> None:
        client.create_payment(order("SHORT"), ip_address="127.0.0.1")
        loops.append(client._local.loop.loop)

    first = threading.Thread(target=call_once)
    first.start()
    first.join(timeout=30)
    assert not loops[0].is_closed()  # the thread ended, nobody has called since

    second = threading.Thread(target=call_once)
    second.start()
    second.join(timeout=30)
    client.close()

    assert loops[0].is_closed()
    assert loops[1].is_closed()  # close() closes the rest
