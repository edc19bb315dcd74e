"""BlockingCmpayClient over TCP against the sandbox: every method, threads, fork, misuse."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import threading
import uuid
from typing import Any

import anyio
import pytest

from cmpay_async import (
    BlockingCmpayClient,
    Channel,
    ClientClosedError,
    CmpayClient,
    ConfigurationError,
    DecodeError,
    Md5Signer,
    Order,
    OrderState,
    PendingOrder,
    SignatureError,
)
from cmpay_async.testing import PUBLIC_TEST_KEY, Sandbox, sign_notification
from tests.support.forking import in_child
from tests.support.helpers import sandbox_client

SHOP = "http://127.0.0.1:9"
INSIDE_A_LOOP = (
    "BlockingCmpayClient was called from inside a running event loop, where waiting would "
    "block that loop: await the same method of CmpayClient instead "
    "(BlockingCmpayClient.client is one, configured alike)"
)
CLOSED = "this BlockingCmpayClient is closed; create a new one"


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


def test_every_keyword_reaches_the_client(gateway: tuple[Sandbox, str]) -> None:
    """request_id, channel, charset, now, concurrency and per_second are passed on as given."""
    sandbox, url = gateway
    started: list[tuple[str, str]] = []
    first, second = order("KW"), order("KW")
    with blocking(url, on_request_start=lambda s: started.append((s.operation, s.request_id))) as c:
        prepared = c.prepare_payment(
            order("KW"), ip_address="127.0.0.1", request_id="KWPREP1", channel=Channel.WAP
        )
        assert ("KWPREP1", "WAPDirectPayConfirm") == (
            prepared.fields["requestId"],
            prepared.fields["type"],
        )
        created = c.create_payment(
            first, ip_address="127.0.0.1", request_id="KWPAY1", channel=Channel.WAP
        )
        assert ("KWPAY1", "WAPDirectPayConfirm") == (created.request_id, created.type)
        placed = c.place_order(second, ip_address="127.0.0.1", channel=Channel.WAP)
        assert placed.payment is not None
        assert "WAPDirectPayConfirm" == placed.payment.type
        sandbox.settle(sandbox.order(first.order_id), paid=True)
        c.query_order(first.order_id, request_id="KWQUERY1")
        c.refund(first.order_id, 1, request_id="KWREFUND1")

        now = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)
        pending = [
            PendingOrder(order_id=first.order_id, created_at=now - dt.timedelta(minutes=5)),
            PendingOrder(order_id=second.order_id, created_at=now - dt.timedelta(seconds=30)),
        ]
        found = c.reconcile(pending, now=now, concurrency=1, per_second=1000)
        assert [first.order_id] == [r.order_id for r in found]  # the other is not due at `now`

        utf8 = sign_notification(order_id="KWN1", amount=5, message="支付成功")
        assert "支付成功" == c.verify_notification(utf8).message
        with pytest.raises((DecodeError, SignatureError)):  # read as GBK: not what was signed
            c.verify_notification(utf8, charset="gbk")

    assert ("query_order", "KWQUERY1") in started
    assert ("refund", "KWREFUND1") in started
    for bad in ({"concurrency": 0}, {"per_second": 0}):
        with blocking(url) as c, pytest.raises(ConfigurationError):
            c.reconcile(pending, now=now, **bad)  # type: ignore[arg-type]


def test_one_thread_keeps_one_loop(gateway: tuple[Sandbox, str]) -> None:
    """Calls from one thread share its loop (and so its connections)."""
    _, url = gateway
    with blocking(url) as client:
        client.create_payment(order("LOOP"), ip_address="127.0.0.1")
        first = client._local.loop
        client.create_payment(order("LOOP"), ip_address="127.0.0.1")

        assert first is client._local.loop
        assert [first] == client._loops


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


def test_a_forked_child_gets_its_own_loop(gateway_process: str) -> None:
    """After fork the child makes its own loop; the parent keeps working."""
    client = blocking(gateway_process)
    client.create_payment(order("PARENT"), ip_address="127.0.0.1")

    def child() -> None:
        placed = client.place_order(order("CHILD"), ip_address="127.0.0.1")
        assert placed.created
        client.close()

    assert 0 == in_child(child)
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

    with pytest.raises(ConfigurationError) as caught:
        anyio.run(misuse, backend=backend)
    assert INSIDE_A_LOOP == str(caught.value)
    client.close()


def test_a_loop_running_outside_any_task_is_refused_too(gateway: tuple[Sandbox, str]) -> None:
    """Playwright's sync API marks a loop running in the thread with no task: a typed error,
    not asyncio's bare RuntimeError (found driving the cashier in a browser)."""
    _, url = gateway
    client = blocking(url)
    loop = asyncio.new_event_loop()
    asyncio.events._set_running_loop(loop)  # what a greenlet-driven loop leaves in the thread
    try:
        with pytest.raises(ConfigurationError) as caught:
            client.query_order("X")
        assert INSIDE_A_LOOP == str(caught.value)
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

    assert client.closed is True
    assert client.client.closed is True  # the async client underneath says so too
    with pytest.raises(ClientClosedError) as caught:
        client.query_order("X")
    assert CLOSED == str(caught.value)


def test_a_loop_closed_under_a_call_is_a_closed_client(gateway: tuple[Sandbox, str]) -> None:
    """A thread whose loop another thread's close() has just shut gets ClientClosedError."""
    _, url = gateway
    client = blocking(url)
    client.create_payment(order("RACE"), ip_address="127.0.0.1")
    client._close_loop(client._local.loop.loop)  # what close() in another thread does

    with pytest.raises(ClientClosedError) as caught:
        client.query_order("X")
    assert CLOSED == str(caught.value)
    client.close()


def test_settings_or_a_client_not_both() -> None:
    """Wrapping a client and passing settings at once is ambiguous."""
    inner = CmpayClient(merchant_id="M", signer=Md5Signer(PUBLIC_TEST_KEY))

    assert inner is BlockingCmpayClient(inner).client
    with pytest.raises(ConfigurationError) as caught:
        BlockingCmpayClient(inner, merchant_id="M")
    assert "pass either a CmpayClient or its settings, not both" == str(caught.value)
    assert BlockingCmpayClient(inner).closed is False


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
    assert loops[0].is_closed()  # the second thread's first call found it ended
    assert not loops[1].is_closed()
    client.close()

    assert loops[1].is_closed()  # close() closes the rest


def _record_closing_threads(client: BlockingCmpayClient) -> list[str]:
    """The names of the threads that close the client's loops, in order."""
    closers: list[str] = []
    close_loop = client._close_loop

    def recording(loop: asyncio.AbstractEventLoop) -> None:
        closers.append(threading.current_thread().name)
        close_loop(loop)

    client._close_loop = recording  # type: ignore[method-assign]
    aclose = client._client.aclose

    async def recording_aclose() -> None:
        # The last step of close(): the async client marked closed, on a loop of its own.
        closers.append("aclose on " + threading.current_thread().name)
        await aclose()

    client._client.aclose = recording_aclose  # type: ignore[method-assign]
    return closers


def test_close_from_a_thread_where_a_loop_runs_closes_on_a_helper_thread(
    gateway: tuple[Sandbox, str],
) -> None:
    """close() where asyncio sees a running loop (Playwright's sync API) cannot run ours there:
    each loop is closed on a helper thread named cmpay-close, and closed for real."""
    _, url = gateway
    client = blocking(url)
    client.create_payment(order("HELPER"), ip_address="127.0.0.1")
    ours = client._local.loop.loop
    closers = _record_closing_threads(client)
    running = asyncio.new_event_loop()
    asyncio.events._set_running_loop(running)
    try:
        client.close()
    finally:
        asyncio.events._set_running_loop(None)
        running.close()

    assert ["cmpay-close", "aclose on cmpay-close"] == closers
    assert ours.is_closed()
    assert client.client.closed is True


def test_close_in_a_plain_thread_closes_right_there(gateway: tuple[Sandbox, str]) -> None:
    """Without a running loop, close() closes each loop in the calling thread."""
    _, url = gateway
    client = blocking(url)
    client.create_payment(order("PLAIN"), ip_address="127.0.0.1")
    closers = _record_closing_threads(client)
    client.close()

    here = threading.current_thread().name
    assert [here, f"aclose on {here}"] == closers
