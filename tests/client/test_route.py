"""Our own pool hands each request straight to its transport (issue 25), and loses nothing by it.

The same bytes reach the wire as through ``httpx.AsyncClient``; the proxy the environment
names still carries the request; a caller's own client keeps its hooks and cookies; a closed
pool still refuses to send; and the route is taken at all, so an httpx that changes how it
picks transports fails here rather than quietly costing a quarter of every call's CPU.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from cmpay_async import (
    CmpayClient,
    HTTPStatusError,
    Md5Signer,
    PayloadTooLargeError,
    PaymentResponse,
    RetryPolicy,
    Timeouts,
    TransportError,
)
from cmpay_async._pools import direct_route
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, Sandbox
from tests.support.helpers import make_client, valid_order
from tests.support.raw_http import read_request

pytestmark = pytest.mark.anyio

UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Recorder:
    """A loopback server that keeps each request's bytes and answers 503 to every one."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.requests: list[tuple[bytes, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                self.requests.append(read_request(conn))
                conn.sendall(UNAVAILABLE)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sock.close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """A recording server for one test."""
    server = Recorder()
    try:
        yield server
    finally:
        server.close()


def _client(endpoint: str, **kw: Any) -> CmpayClient:
    return CmpayClient(
        merchant_id=PUBLIC_TEST_MERCHANT,
        signer=Md5Signer(PUBLIC_TEST_KEY),
        endpoint=endpoint,
        retry=RetryPolicy(attempts=1),
        **kw,
    )


#: The three ways a request leaves: our pool's route, our pool through send (an httpx the
#: route cannot read), and a caller's own client through send.
WAYS = ["route", "no route", "callers client"]


def _way(
    way: str, request: pytest.FixtureRequest, transport: httpx.AsyncBaseTransport | None = None
) -> dict[str, Any]:
    """Arguments for a client whose requests leave the given way, over ``transport`` if given
    (an in-process one) or over TCP."""
    if way == "no route":
        request.getfixturevalue("without_route")
    if way == "callers client":
        return {"http_client": httpx.AsyncClient(transport=transport)}
    return {} if transport is None else {"transport": transport}


@pytest.mark.parametrize("way", WAYS)
async def test_each_way_writes_the_bytes_httpx_would(
    recorder: Recorder, way: str, request: pytest.FixtureRequest
) -> None:
    """Request line, headers in order, and body: as httpx.AsyncClient writes them."""
    endpoint = f"{recorder.url}/ips/cmpayService"
    async with _client(endpoint, **_way(way, request)) as client:
        with pytest.raises(HTTPStatusError):
            await client.create_payment(valid_order(), ip_address="203.0.113.7")
    ours_head, body = recorder.requests[0]
    content_type = next(
        line.split(b": ", 1)[1]
        for line in ours_head.split(b"\r\n")
        if line.lower().startswith(b"content-type:")
    )

    async with httpx.AsyncClient() as http:
        headers = {"Content-Type": content_type.decode(), "Accept-Encoding": "identity"}
        await http.post(endpoint, content=body, headers=headers)

    assert [recorder.requests[1]] == [(ours_head, body)]


class _Endless(httpx.AsyncByteStream):
    """An answer that never ends (an iterator, not a generator: nothing left to finalise)."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        await anyio.lowlevel.checkpoint()
        return b"x" * 16384


@pytest.mark.parametrize("way", WAYS)
async def test_each_way_stops_reading_at_the_cap(way: str, request: pytest.FixtureRequest) -> None:
    """An endless answer is refused once past MAX_ANSWER, not read until the deadline."""
    mock = httpx.MockTransport(lambda r: httpx.Response(200, stream=_Endless()))
    kw = _way(way, request, mock)
    client = _client("https://gateway.test/ips/cmpayService", timeouts=Timeouts(total=5), **kw)
    with anyio.fail_after(15):
        async with client:
            with pytest.raises(PayloadTooLargeError) as caught:
                await client.create_payment(valid_order(), ip_address="203.0.113.7")
    assert str(caught.value).startswith(f"the answer is larger than {64 * 1024} bytes (HTTP 200")


@pytest.mark.parametrize("way", WAYS)
async def test_each_way_names_the_order_a_lost_answer_may_have_created(
    way: str, request: pytest.FixtureRequest
) -> None:
    """A read error after sending: maybe_sent, and the message names the call's order."""

    def fail(r: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset")

    kw = _way(way, request, httpx.MockTransport(fail))
    async with _client("https://gateway.test/ips/cmpayService", **kw) as client:
        with pytest.raises(TransportError) as caught:
            await client.create_payment(valid_order(order_id="LOST-7"), ip_address="203.0.113.7")
    assert (True, "LOST-7") == (caught.value.maybe_sent, caught.value.order_id)
    assert "may have reached the gateway and created order 'LOST-7'" in str(caught.value)


async def test_the_environments_proxy_still_carries_the_request(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY picks the transport, as it does for httpx.AsyncClient."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", recorder.url)
    endpoint = "http://gateway.invalid/ips/cmpayService"
    async with _client(endpoint, allow_insecure_http=True) as client:
        with pytest.raises(HTTPStatusError):
            await client.create_payment(valid_order(), ip_address="203.0.113.7")

    ((head, _),) = recorder.requests
    assert b"POST http://gateway.invalid/ips/cmpayService HTTP/1.1" == head.split(b"\r\n")[0]


async def test_our_pool_does_not_go_through_the_clients_send(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The route is taken: with httpx.AsyncClient.send unusable, the call still succeeds."""

    async def refuse(*args: object, **kwargs: object) -> httpx.Response:
        raise AssertionError("AsyncClient.send was called")

    monkeypatch.setattr(httpx.AsyncClient, "send", refuse)
    async with make_client(httpx.ASGITransport(app=Sandbox())) as client:
        result = await client.create_payment(valid_order(), ip_address="203.0.113.7")
    assert isinstance(result, PaymentResponse)


async def test_a_callers_client_keeps_its_hooks_and_cookies() -> None:
    """A caller's http_client is used through send: its event hooks run, its cookies go."""
    seen: list[httpx.Request] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(request)

    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=Sandbox()),
        event_hooks={"request": [hook]},
        cookies={"session": "kept"},
    )
    client = _client("https://sandbox.test/ips/cmpayService", http_client=http)
    async with http, client:
        await client.create_payment(valid_order(), ip_address="203.0.113.7")
    assert ["session=kept"] == [r.headers.get("cookie") for r in seen]


async def test_a_callers_plain_client_still_gets_our_timeouts() -> None:
    """Even with no layer of its own, a caller's client goes through send, with our timeouts."""
    seen: list[dict[str, Any]] = []
    sandbox = httpx.ASGITransport(app=Sandbox())

    async def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return await sandbox.handle_async_request(request)

    timeouts = Timeouts(connect=1.25, read=2.5, write=3.75, pool=4.5)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        endpoint = "https://sandbox.test/ips/cmpayService"
        async with _client(endpoint, http_client=http, timeouts=timeouts) as client:
            await client.create_payment(valid_order(), ip_address="203.0.113.7")
    assert [{"connect": 1.25, "read": 2.5, "write": 3.75, "pool": 4.5}] == seen


async def test_a_closed_pool_refuses_rather_than_opening_a_connection(
    recorder: Recorder,
) -> None:
    """Once our pool's client is closed, no request goes out by the route either."""
    async with _client(f"{recorder.url}/ips/cmpayService") as client:
        state = await client._pools.current()
        await state.http.aclose()
        with pytest.raises(TransportError) as caught:
            await client.create_payment(valid_order(), ip_address="203.0.113.7")
    assert (False, []) == (caught.value.maybe_sent, recorder.requests)


def test_the_route_adds_what_the_client_would() -> None:
    """Default headers in the client's order (less the request's own), timeout, transport."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    http = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(3.0, connect=1.5))
    route = direct_route(http, httpx.URL("https://gateway.test/ips/cmpayService"))

    built = http.build_request("POST", "https://gateway.test/", content=b"")
    own = {b"host", b"content-length", b"accept-encoding", b"content-type"}
    assert route is not None
    expected = (
        [(k, v) for k, v in built.headers.raw if k.lower() not in own],
        {"connect": 1.5, "read": 3.0, "write": 3.0, "pool": 3.0},
        transport,
    )
    assert expected == (list(route.headers), route.timeout, route.transport)


@pytest.mark.parametrize(
    "setting",
    [
        {"auth": ("user", "secret")},
        {"event_hooks": {"request": [print]}},
        {"event_hooks": {"response": [print]}},
        {"cookies": {"session": "s"}},
        {"params": {"a": "1"}},
        {"base_url": "https://gateway.test/"},
    ],
    ids=["auth", "request hook", "response hook", "cookies", "params", "base_url"],
)
def test_no_route_past_a_layer_that_does_work(setting: dict[str, Any]) -> None:
    """A client with any per-request layer of its own is used through send."""
    http = httpx.AsyncClient(**setting)
    assert direct_route(http, httpx.URL("https://gateway.test/ips/cmpayService")) is None


def test_no_route_when_httpx_no_longer_picks_transports_this_way() -> None:
    """An httpx without _transport_for_url: every request goes through send."""

    class Changed(httpx.AsyncClient):
        _transport_for_url = None  # type: ignore[assignment]

    assert direct_route(Changed(), httpx.URL("https://gateway.test/ips/cmpayService")) is None
