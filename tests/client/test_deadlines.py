"""The total deadline against gateways that misbehave over real TCP.

A fake gateway drips its answer, drips its headers or never answers; callers queue behind a
full client. Each call must end within ``Timeouts.total`` (plus a wide margin: these tests
use real time but never assert speed) with a typed error and the right ``maybe_sent``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from cmpay_async import (
    CmpayClient,
    HTTPStatusError,
    Md5Signer,
    Order,
    Timeouts,
    TransportError,
    TransportTimeoutError,
)
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT
from tests.support.raw_http import read_request

pytestmark = pytest.mark.anyio

TOTAL = 1.0
#: Generous: a loaded 2-core CI machine may be slow to schedule; a regression takes minutes.
MARGIN = 2.0
#: Each misbehaviour would last this long if nothing stopped it.
FOREVER = 120.0


class FakeGateway:
    """A TCP server whose every connection misbehaves in one chosen way, a thread each."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests = 0
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/ips/cmpayService"
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def hang_up(self) -> None:
        """End every misbehaviour now: connections close."""
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout=10)
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _drip(self, conn: socket.socket, data: bytes) -> None:
        for i in range(len(data)):
            if self._stop.wait(FOREVER / len(data)):
                return
            conn.sendall(data[i : i + 1])

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(FOREVER)
            try:
                read_request(conn)
                self.requests += 1
                if self.mode == "redirect":
                    conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\n")
                    conn.sendall(b"Content-Length: 0\r\n\r\n")
                elif self.mode == "drip-body":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 400\r\n\r\n")
                    self._drip(conn, b"x" * 400)
                elif self.mode == "drip-headers":
                    self._drip(conn, b"HTTP/1.1 200 OK\r\n" + b"X-Slow: y\r\n" * 40)
                else:  # silent
                    self._stop.wait(FOREVER)
            except OSError:
                pass  # the client hung up: that is the point


@pytest.fixture
def fake_gateway(request: pytest.FixtureRequest) -> Iterator[FakeGateway]:
    """A fake gateway in the mode the test is parametrised with."""
    gateway = FakeGateway(request.param)
    yield gateway
    gateway.close()


def client_for(gateway: FakeGateway, **kw: object) -> CmpayClient:
    """A client with a 1 s total deadline; the read timeout alone would never fire."""
    timeouts = kw.pop("timeouts", None) or Timeouts(total=TOTAL, read=TOTAL * 0.9)
    return CmpayClient(
        merchant_id=PUBLIC_TEST_MERCHANT,
        signer=Md5Signer(PUBLIC_TEST_KEY),
        endpoint=gateway.url,
        callback_url="https://shop.example/return",
        notify_url="https://shop.example/notify",
        timeouts=timeouts,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def order(n: int = 0) -> Order:
    """A valid order."""
    return Order(amount=100, order_id=f"DEADLINE{n}", product_name="T")


@pytest.mark.parametrize("fake_gateway", ["drip-body", "drip-headers"], indirect=True)
async def test_dripping_answer_ends_at_the_deadline(fake_gateway: FakeGateway) -> None:
    """One byte per 0.3 s resets the read timeout forever; the total deadline still ends it."""
    started = time.monotonic()
    with anyio.fail_after(TOTAL + MARGIN * 5):  # a regression fails here instead of hanging
        async with client_for(fake_gateway) as client:
            with pytest.raises(TransportTimeoutError) as info:
                await client.create_payment(order(), ip_address="127.0.0.1")
    elapsed = time.monotonic() - started

    assert elapsed < TOTAL + MARGIN
    assert info.value.maybe_sent is True
    assert str(info.value).startswith(
        "no complete answer within the total deadline of 1.0 s (attempt 1); the request may "
        "have reached the gateway"
    ), str(info.value)
    assert "DEADLINE0" == info.value.order_id
    assert 1 == fake_gateway.requests


@pytest.mark.parametrize("fake_gateway", ["silent"], indirect=True)
@pytest.mark.parametrize("route", ["route", "no route"])
async def test_no_answer_at_all_ends_at_the_deadline(
    fake_gateway: FakeGateway, route: str, request: pytest.FixtureRequest
) -> None:
    """A gateway that reads the order and never answers: maybe_sent (httpcore's trace saw
    the request go out, straight to the transport or through send), within the deadline."""
    if route == "no route":
        request.getfixturevalue("without_route")
    timeouts = Timeouts(total=TOTAL, read=FOREVER)  # only the deadline can end it
    started = time.monotonic()
    with anyio.fail_after(TOTAL + MARGIN * 5):
        async with client_for(fake_gateway, timeouts=timeouts) as client:
            with pytest.raises(TransportTimeoutError) as info:
                await client.create_payment(order(), ip_address="127.0.0.1")

    assert time.monotonic() - started < TOTAL + MARGIN
    assert info.value.maybe_sent is True


@pytest.mark.parametrize("fake_gateway", ["silent"], indirect=True)
@pytest.mark.parametrize("transport", ["default", "explicit"])
async def test_the_read_timeout_ends_a_silent_answer_before_the_deadline(
    fake_gateway: FakeGateway, transport: str
) -> None:
    """Timeouts.read bounds the wait for the answer, for the client's own pools and for an
    explicit httpx.AsyncHTTPTransport alike: the call ends at the read timeout, long before
    a total deadline that would otherwise end it."""
    read = TOTAL / 4
    timeouts = Timeouts(total=TOTAL + MARGIN * 2, read=read)
    kw: dict[str, Any] = {} if transport == "default" else {"transport": httpx.AsyncHTTPTransport()}
    started = time.monotonic()
    with anyio.fail_after(TOTAL + MARGIN * 5):
        async with client_for(fake_gateway, timeouts=timeouts, **kw) as client:
            with pytest.raises(TransportTimeoutError) as info:
                await client.create_payment(order(), ip_address="127.0.0.1")

    assert time.monotonic() - started < read + MARGIN
    assert info.value.maybe_sent is True


@pytest.mark.parametrize("fake_gateway", ["silent"], indirect=True)
async def test_queued_callers_give_up_after_the_pool_timeout(fake_gateway: FakeGateway) -> None:
    """With every slot taken, a waiting caller fails at the pool timeout, never sent."""
    timeouts = Timeouts(total=FOREVER, read=FOREVER, pool=0.5)
    errors: list[TransportTimeoutError] = []
    started = time.monotonic()

    async def queued(client: CmpayClient, n: int) -> None:
        with pytest.raises(TransportTimeoutError) as info:
            await client.create_payment(order(n), ip_address="127.0.0.1")
        errors.append(info.value)

    async def holder(client: CmpayClient) -> None:
        with pytest.raises(TransportError) as info:  # ends when the gateway hangs up
            await client.create_payment(order(0), ip_address="127.0.0.1")
        assert info.value.maybe_sent

    with anyio.fail_after(MARGIN * 5):
        async with (
            client_for(fake_gateway, timeouts=timeouts, max_connections=1) as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(holder, client)  # holds the only slot
            while fake_gateway.requests == 0:
                await anyio.sleep(0.01)  # waiting for a condition, not for time
            for n in range(1, 4):
                tg.start_soon(queued, client, n)
            while len(errors) < 3:
                await anyio.sleep(0.01)
            fake_gateway.hang_up()

    assert time.monotonic() - started < 0.5 + MARGIN
    assert [False] * 3 == [e.maybe_sent for e in errors]
    assert all(
        str(e).startswith(
            "waited 0.5 s for one of the client's 1 request slots (max_connections); "
            "the request never reached the gateway"
        )
        for e in errors
    ), [str(e) for e in errors]
    assert 1 == fake_gateway.requests


@pytest.mark.parametrize("fake_gateway", ["silent"], indirect=True)
async def test_queued_callers_are_bounded_by_the_total_deadline(fake_gateway: FakeGateway) -> None:
    """A total deadline shorter than the pool timeout ends the wait for a slot too."""
    timeouts = Timeouts(total=TOTAL, read=FOREVER, pool=FOREVER)
    started = time.monotonic()
    with anyio.fail_after(TOTAL + MARGIN * 5):
        async with client_for(fake_gateway, timeouts=timeouts, max_connections=1) as client:
            # Hold the only slot for longer than the call's deadline (a call holding it would
            # release it at its own deadline, just before the waiter's).
            slots = (await client._pools.current()).slots
            async with slots:
                with pytest.raises(TransportTimeoutError) as info:
                    await client.create_payment(order(1), ip_address="127.0.0.1")

    assert time.monotonic() - started < TOTAL + MARGIN
    assert info.value.maybe_sent is False
    assert 0 == fake_gateway.requests


@pytest.fixture
def unreachable() -> Iterator[str]:
    """A gateway URL whose TCP handshake never completes: the listener's accept queue is full
    (Linux then drops further SYNs), so a connection attempt just waits."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield f"http://127.0.0.1:{port}/ips/cmpayService"
    for s in (*fillers, listener):
        s.close()


@pytest.mark.parametrize("transport", ["default", "explicit"])
async def test_a_deadline_met_while_connecting_was_never_sent(
    unreachable: str, transport: str
) -> None:
    """The deadline ends a connection that never completes: maybe_sent is False, because the
    client sees (through httpcore's trace) that no byte of the request went out. This holds
    for its own pools and for an explicit httpx.AsyncHTTPTransport alike."""
    timeouts = Timeouts(total=TOTAL / 2, connect=FOREVER)
    kw: dict[str, Any] = {} if transport == "default" else {"transport": httpx.AsyncHTTPTransport()}
    client = CmpayClient(
        merchant_id=PUBLIC_TEST_MERCHANT,
        signer=Md5Signer(PUBLIC_TEST_KEY),
        endpoint=unreachable,
        callback_url="https://shop.example/return",
        notify_url="https://shop.example/notify",
        timeouts=timeouts,
        **kw,
    )
    with anyio.fail_after(TOTAL + MARGIN * 5):
        async with client:
            with pytest.raises(TransportTimeoutError) as info:
                await client.create_payment(order(), ip_address="127.0.0.1")

    assert info.value.maybe_sent is False
    assert "the request never reached the gateway" in str(info.value)


@pytest.mark.parametrize("fake_gateway", ["redirect"], indirect=True)
@pytest.mark.parametrize("transport", ["default", "explicit"])
@pytest.mark.parametrize("route", ["route", "no route"])
async def test_a_redirect_is_not_followed(
    fake_gateway: FakeGateway, transport: str, route: str, request: pytest.FixtureRequest
) -> None:
    """A 302 from the gateway's address is an HTTP status error, not a second request
    somewhere else (a payment must go to the configured endpoint only), over the client's
    own pools or an explicit transport, straight to it or through httpx's send."""
    if route == "no route":
        request.getfixturevalue("without_route")
    kw: dict[str, Any] = {} if transport == "default" else {"transport": httpx.AsyncHTTPTransport()}
    with anyio.fail_after(TOTAL + MARGIN * 5):
        async with client_for(fake_gateway, **kw) as client:
            with pytest.raises(HTTPStatusError) as info:
                await client.create_payment(order(), ip_address="127.0.0.1")

    assert (302, False) == (info.value.status_code, info.value.maybe_sent)
    assert 1 == fake_gateway.requests
