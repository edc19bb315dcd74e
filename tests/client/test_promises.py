"""The client's promises from the README, each with its own behaviour test.

- A query changes nothing, so it is retried after any transport failure.
- A refund (like a payment) is never resent after a failure that may have reached the gateway.
- At most ``max_connections`` requests are in flight; the rest wait for a slot.
- A request that could not be sent at all (a bad URL, an unsupported protocol) says
  ``maybe_sent=False`` and is not retried.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from cmpay_async import Order, TransportError
from cmpay_async.testing import Sandbox
from tests.support.helpers import _AsyncMock, make_client

pytestmark = pytest.mark.anyio


class FailFirst(httpx.AsyncBaseTransport):
    """Raise ``exc`` for the first request of ``kind``; pass everything else to the sandbox."""

    def __init__(self, sandbox: Sandbox, kind: bytes, exc: Exception) -> None:
        self.inner = httpx.ASGITransport(app=sandbox)
        self.kind, self.exc = kind, exc
        self.seen: list[bytes] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Count requests of ``kind``; fail the first."""
        body = request.content
        if b"type=" + self.kind + b"&" in body:
            self.seen.append(body)
            if len(self.seen) == 1:
                raise self.exc
        return await self.inner.handle_async_request(request)


def _order(order_id: str) -> Order:
    return Order(
        amount=1250,
        order_id=order_id,
        product_name="T",
        callback_url="https://shop.example/r",
        notify_url="https://shop.example/n",
    )


@pytest.mark.parametrize(
    "exc",
    [httpx.ReadError("reset"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("cut")],
    ids=["read-error", "read-timeout", "protocol"],
)
async def test_a_query_is_retried_after_any_transport_failure(exc: Exception) -> None:
    """Failures that may have reached the gateway still retry a query: it changes nothing."""
    transport = FailFirst(Sandbox(), b"OrderQuery", exc)
    async with make_client(transport) as client:
        result = await client.query_order("NOPE")

    assert "RPM22201" == result.return_code
    assert 2 == len(transport.seen)


async def test_a_refund_is_never_resent_after_a_maybe_sent_failure() -> None:
    """A read error on a refund: one request, an error with maybe_sent, no second refund."""
    sandbox = Sandbox()
    transport = FailFirst(sandbox, b"OrderRefund", httpx.ReadError("reset"))
    async with make_client(transport) as client:
        await client.create_payment(_order("RF1"), ip_address="203.0.113.7")
        sandbox.settle(sandbox.order("RF1"), paid=True)
        with pytest.raises(TransportError) as caught:
            await client.refund("RF1", 500)

    assert caught.value.maybe_sent is True
    assert 1 == len(transport.seen)


async def test_a_refund_is_retried_when_it_certainly_never_left() -> None:
    """A refused connection is safe to retry, for a refund too."""
    sandbox = Sandbox()
    transport = FailFirst(sandbox, b"OrderRefund", httpx.ConnectError("refused"))
    async with make_client(transport) as client:
        await client.create_payment(_order("RF2"), ip_address="203.0.113.7")
        sandbox.settle(sandbox.order("RF2"), paid=True)
        refund = await client.refund("RF2", 500)

    assert 500 == refund.amount
    assert 2 == len(transport.seen)
    assert 500 == sandbox.order("RF2").refunded


async def test_no_more_than_max_connections_requests_are_in_flight() -> None:
    """Nine concurrent queries through max_connections=3: at most 3 reach the transport."""
    sandbox = httpx.ASGITransport(app=Sandbox())
    inside = peak = 0
    gate = anyio.Event()

    async def counting(request: httpx.Request) -> Any:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        if peak == 3:
            gate.set()
        with anyio.fail_after(5):
            await gate.wait()  # hold the first three until all three are in
        try:
            return await sandbox.handle_async_request(request)
        finally:
            inside -= 1

    client = make_client(_AsyncMock(counting), max_connections=3)
    async with client, anyio.create_task_group() as tg:
        for n in range(9):
            tg.start_soon(client.query_order, f"Q{n}")

    assert 3 == peak


@pytest.mark.parametrize(
    "exc",
    [httpx.UnsupportedProtocol("ftp"), httpx.InvalidURL("bad host"), httpx.LocalProtocolError("x")],
    ids=["unsupported-protocol", "invalid-url", "local-protocol"],
)
async def test_a_request_that_could_not_be_sent_is_not_maybe_sent(exc: Exception) -> None:
    """Configuration problems end at once with maybe_sent=False, never retried."""
    calls: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise exc

    async with make_client(httpx.MockTransport(refuse)) as client:
        with pytest.raises(TransportError) as caught:
            await client.create_payment(_order("CFG1"), ip_address="203.0.113.7")

    assert TransportError is type(caught.value)
    assert caught.value.maybe_sent is False
    assert 1 == len(calls)
    assert "check the endpoint setting" in str(caught.value)
