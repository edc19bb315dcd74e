"""Every failure after the request may have reached the gateway says so, and is reported.

maybe_sent on each kind of post-send failure, the on_in_doubt hook, compressed and unexpected
answers, and no foreign exception escaping a call.
"""

from __future__ import annotations

import gzip
import logging
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest

from cmpay_async import (
    CmpayClient,
    CmpayError,
    DecodeError,
    GatewayError,
    InDoubt,
    PayloadTooLargeError,
    SignatureError,
    TransportError,
    ValidationError,
)
from cmpay_async._transport import inflate as _inflate
from cmpay_async.testing import Sandbox
from tests.support.helpers import _AsyncMock, make_client, valid_order

pytestmark = pytest.mark.anyio


class _Streamed(httpx.AsyncByteStream, AsyncIterator[bytes]):
    """A body that arrives over the wire in chunks, as a real socket's would."""

    def __init__(self, data: bytes) -> None:
        self.chunks = iter([data[i : i + 4096] for i in range(0, len(data), 4096)])

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self  # not an async generator: one left unfinished would warn when collected

    async def __anext__(self) -> bytes:
        try:
            return next(self.chunks)
        except StopIteration:
            raise StopAsyncIteration from None


def _streamed(status: int, data: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, stream=_Streamed(data), headers=headers)


def _answer_with(
    sandbox: Sandbox, change: Callable[[httpx.Response], httpx.Response]
) -> _AsyncMock:
    """A transport whose sandbox answer (the order processed) is altered on the way back."""
    inner = httpx.ASGITransport(app=sandbox)

    async def handler(request: httpx.Request) -> httpx.Response:
        response = await inner.handle_async_request(request)
        await response.aread()
        return change(response)

    return _AsyncMock(handler)


def _compressed(encoding: str, data: bytes | None = None) -> Callable[[httpx.Response], Any]:
    def change(response: httpx.Response) -> httpx.Response:
        body = response.content if data is None else data
        packed = gzip.compress(body, 9) if encoding == "gzip" else zlib.compress(body, 9)
        return _streamed(response.status_code, packed, {"Content-Encoding": encoding})

    return change


async def _one_call(client: CmpayClient) -> CmpayError:
    with pytest.raises(CmpayError) as info:
        await client.create_payment(valid_order(), ip_address="1.2.3.4")
    return info.value


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("tamper", SignatureError),
        ("html", DecodeError),
        ("empty", DecodeError),
        ("too-large", PayloadTooLargeError),
        ("5xx", TransportError),
        ("drop", TransportError),
    ],
)
async def test_every_failure_after_processing_says_maybe_sent(
    fault: str, error: type[Exception]
) -> None:
    """The sandbox created the order each time: the error says maybe_sent and is reported."""
    sandbox = Sandbox()
    doubts: list[InDoubt] = []
    if fault == "tamper":
        sandbox.tamper_next()
        transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=sandbox)
    elif fault == "drop":
        sandbox.drop_next()
        transport = httpx.ASGITransport(app=sandbox)
    else:
        bodies = {"html": b"<html>busy</html>", "empty": b"", "too-large": b"x" * 70_000}
        status = 502 if fault == "5xx" else 200
        transport = _answer_with(sandbox, lambda r: _streamed(status, bodies.get(fault, b"oops")))

    async with make_client(transport, on_in_doubt=doubts.append) as client:
        exc = await _one_call(client)

    assert isinstance(exc, error)
    assert exc.maybe_sent is True
    assert "201103071740044998" == exc.order_id
    assert 1 == len(sandbox.orders)
    assert [("create_payment", "201103071740044998", exc.request_id, "error", exc)] == [
        (d.operation, d.order_id, d.request_id, d.reason, d.error) for d in doubts
    ]
    assert exc.request_id


async def test_definite_failures_are_not_in_doubt() -> None:
    """A verified refusal and a local validation error say maybe_sent=False; no report."""
    sandbox = Sandbox()
    doubts: list[InDoubt] = []
    sandbox.fail_next("RPM22208")
    async with make_client(httpx.ASGITransport(app=sandbox), on_in_doubt=doubts.append) as c:
        refused = await _one_call(c)
        with pytest.raises(ValidationError) as invalid:
            await c.create_payment(valid_order(amount=0), ip_address="1.2.3.4")

    assert isinstance(refused, GatewayError)
    assert refused.maybe_sent is False
    assert refused.request_id is not None
    assert invalid.value.maybe_sent is False
    assert [] == doubts


async def test_queries_are_never_reported_in_doubt() -> None:
    """A query changes nothing: even a dropped one is not an order in doubt."""
    sandbox = Sandbox()
    doubts: list[InDoubt] = []
    async with make_client(httpx.ASGITransport(app=sandbox), on_in_doubt=doubts.append) as c:
        for _ in range(3):  # every attempt of the query is answered with garbage
            sandbox.answer_next(200, b"<html>")
        with pytest.raises(DecodeError):
            await c.query_order("A1")

    assert [] == doubts


async def test_a_raising_hook_is_logged_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The hook's own failure never replaces the call's outcome."""
    sandbox = Sandbox()
    sandbox.tamper_next()

    def broken_hook(doubt: InDoubt) -> None:
        raise RuntimeError("hook is down")

    with caplog.at_level(logging.WARNING, logger="cmpay_async"):
        async with make_client(httpx.ASGITransport(app=sandbox), on_in_doubt=broken_hook) as c:
            exc = await _one_call(c)

    assert isinstance(exc, SignatureError)
    assert [
        f"in doubt: create_payment orderId=201103071740044998 requestId={exc.request_id} "
        "(SignatureError): query the order before acting on it",
        "the on_in_doubt hook raised; the call's outcome is unchanged",
    ] == [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("declared", [False, True])
async def test_an_oversize_answer_is_not_read_past_the_cap(declared: bool) -> None:
    """20 MB streamed in 4 KiB chunks: reading stops at the first chunk past 64 KiB (the
    seventeenth), or before any chunk when Content-Length already says too much."""
    stream = _Streamed(b"a" * 20_000_000)
    pulled = 0
    chunks = stream.chunks

    def counting() -> Iterator[bytes]:
        nonlocal pulled
        for chunk in chunks:
            pulled += 1
            yield chunk

    stream.chunks = counting()
    headers = {"Content-Length": "20000000"} if declared else None
    oversize = _answer_with(
        Sandbox(), lambda r: httpx.Response(200, stream=stream, headers=headers)
    )
    async with make_client(oversize) as client:
        exc = await _one_call(client)

    assert isinstance(exc, PayloadTooLargeError)
    assert (0 if declared else CAP // 4096 + 1) == pulled


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_answer_is_still_read(encoding: str) -> None:
    """A proxy that compresses anyway does not break the call."""
    sandbox = Sandbox()
    async with make_client(_answer_with(sandbox, _compressed(encoding))) as client:
        response = await client.create_payment(valid_order(), ip_address="1.2.3.4")

    assert response.pay_url.session_id == sandbox.order("201103071740044998").session_id


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_decompression_bomb_is_refused_without_inflating_it(encoding: str) -> None:
    """50 MB of zeros packed under the 64 KiB cap: refused with little memory used."""
    sandbox = Sandbox()
    bomb = _compressed(encoding, b"\0" * 50_000_000)
    async with make_client(_answer_with(sandbox, bomb)) as client:
        tracemalloc.start()
        try:
            exc = await _one_call(client)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

    assert isinstance(exc, PayloadTooLargeError)
    assert exc.maybe_sent is True
    assert peak < 5_000_000


async def test_an_unknown_content_encoding_is_refused() -> None:
    """br or zstd would need a decoder we do not bound: a typed error, maybe_sent."""
    sandbox = Sandbox()
    weird = _answer_with(sandbox, lambda r: _streamed(200, b"..", {"Content-Encoding": "br"}))
    async with make_client(weird) as client:
        exc = await _one_call(client)

    assert isinstance(exc, DecodeError)
    assert "Content-Encoding 'br'" in str(exc)
    assert (True, 200) == (exc.maybe_sent, exc.status_code)


@pytest.mark.parametrize("label", ["identity", " Identity ", "GZIP"])
async def test_a_content_encoding_label_is_read_whatever_its_case(label: str) -> None:
    """'identity' in any case and spacing is the answer as sent; 'GZIP' is gzip."""
    sandbox = Sandbox()

    def relabel(response: httpx.Response) -> httpx.Response:
        body = response.content
        if label == "GZIP":
            body = gzip.compress(body)
        return _streamed(response.status_code, body, {"Content-Encoding": label})

    async with make_client(_answer_with(sandbox, relabel)) as client:
        payment = await client.create_payment(valid_order(), ip_address="1.2.3.4")

    assert "000000" == payment.return_code


async def test_requests_ask_for_an_uncompressed_answer() -> None:
    """Accept-Encoding: identity, so a well-behaved gateway never compresses."""
    sandbox = Sandbox()
    seen: list[httpx.Request] = []
    inner = httpx.ASGITransport(app=sandbox)

    async def spy(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return await inner.handle_async_request(request)

    async with make_client(_AsyncMock(spy)) as client:
        await client.create_payment(valid_order(), ip_address="1.2.3.4")

    assert "identity" == seen[0].headers["accept-encoding"]


@pytest.mark.parametrize(
    "raised", [RuntimeError("Event loop is closed"), KeyError("x"), ValueError("bad")]
)
async def test_an_unexpected_error_becomes_a_transport_error(raised: Exception) -> None:
    """Nothing foreign escapes: a transport's own bug is a TransportError with maybe_sent."""
    sandbox = Sandbox()
    inner = httpx.ASGITransport(app=sandbox)

    async def handler(request: httpx.Request) -> httpx.Response:
        await inner.handle_async_request(request)  # the gateway did process it
        raise raised

    async with make_client(_AsyncMock(handler)) as client:
        exc = await _one_call(client)

    assert type(exc) is TransportError
    assert exc.maybe_sent is True
    assert exc.__cause__ is raised
    assert f"unexpected {type(raised).__name__}" in str(exc)


# -- decompression, byte-exact (64 KiB is the documented cap on an answer) -----------------------

CAP = 64 * 1024


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),  # zlib-wrapped, as RFC 9110 means it
        ("deflate", _raw_deflate),  # raw, as some servers send it
    ],
    ids=["gzip", "x-gzip", "deflate-zlib", "deflate-raw"],
)
def test_every_compression_a_proxy_uses_is_undone(encoding: str, pack: Any) -> None:
    """gzip, x-gzip and both forms of deflate give back the bytes packed."""
    body = b"merchantId=888009941120001&returnCode=000000&" * 40

    assert body == _inflate(pack(body), encoding, 200)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_the_cap_holds_to_the_byte_after_decompression(encoding: str) -> None:
    """Exactly 64 KiB inflated is read; one byte more is PayloadTooLargeError."""
    pack = gzip.compress if encoding == "gzip" else zlib.compress

    assert CAP == len(_inflate(pack(b"a" * CAP), encoding, 200))
    with pytest.raises(PayloadTooLargeError) as caught:
        _inflate(pack(b"a" * (CAP + 1)), encoding, 502)
    assert (502, "") == (caught.value.status_code, caught.value.excerpt)
    assert f"the answer is larger than {CAP} bytes" == str(caught.value).split(" (HTTP")[0]


def test_an_encoding_we_do_not_bound_is_named_and_refused() -> None:
    """The encoding is named (at most 20 characters); status kept, no excerpt of the bytes."""
    with pytest.raises(DecodeError) as caught:
        _inflate(b"..", "br-" + "x" * 40, 200)

    assert (
        "the answer uses Content-Encoding 'br-xxxxxxxxxxxxxxxxx', not accepted"
        == str(caught.value).split(" (HTTP")[0]
    )
    assert (200, "") == (caught.value.status_code, caught.value.excerpt)


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate"])
def test_a_body_that_does_not_decompress_is_a_decode_error(encoding: str) -> None:
    """Damaged compressed bytes: a DecodeError naming the encoding, never zlib.error."""
    with pytest.raises(DecodeError) as caught:
        _inflate(b"\x1f\x8b\x08\x00garbage-not-compressed", encoding, 200)

    assert f"the {encoding} answer does not decompress" == str(caught.value).split(" (HTTP")[0]
    assert (200, "") == (caught.value.status_code, caught.value.excerpt)
    assert caught.value.maybe_sent is True  # something answered: the request got there


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip"])
def test_zlib_bytes_labelled_gzip_do_not_decompress(encoding: str) -> None:
    """gzip means gzip's own framing: a zlib stream under that label is refused, not guessed
    at (the inflater is gzip's alone, never zlib's header auto-detection)."""
    with pytest.raises(DecodeError) as caught:
        _inflate(zlib.compress(b"returnCode=000000"), encoding, 200)

    assert f"the {encoding} answer does not decompress" == str(caught.value).split(" (HTTP")[0]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_payment_cancelled_in_flight_is_logged_as_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A native asyncio cancellation of a sent request: the log line says (cancelled)."""
    import asyncio

    sent = anyio.Event()
    doubts: list[InDoubt] = []

    async def hanging(request: httpx.Request) -> httpx.Response:
        sent.set()
        await anyio.sleep_forever()
        raise AssertionError("never answered")

    with caplog.at_level(logging.WARNING, logger="cmpay_async"):
        async with make_client(_AsyncMock(hanging), on_in_doubt=doubts.append) as client:
            task = asyncio.ensure_future(
                client.create_payment(valid_order(), ip_address="1.2.3.4", request_id="CXL1")
            )
            await sent.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    assert [("cancelled", None, "CXL1")] == [(d.reason, d.error, d.request_id) for d in doubts]
    assert [
        "in doubt: create_payment orderId=201103071740044998 requestId=CXL1 (cancelled): "
        "query the order before acting on it"
    ] == [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("how", ["in-memory", "streamed", "declared"])
async def test_the_answer_cap_holds_to_the_byte_however_it_arrives(how: str) -> None:
    """64 KiB of answer is read (and then refused as what it is); one byte more is too large,
    whether the body is in memory, streamed in 4 KiB chunks, or declared by Content-Length."""

    def answer(size: int) -> Callable[[httpx.Response], httpx.Response]:
        data = b"a" * size
        if how == "in-memory":
            return lambda r: httpx.Response(200, content=data)
        if how == "streamed":
            return lambda r: _streamed(200, data)
        return lambda r: _streamed(200, data, {"Content-Length": str(size)})

    results = []
    for size in (CAP, CAP + 1):
        async with make_client(_answer_with(Sandbox(), answer(size))) as client:
            results.append(await _one_call(client))

    at_cap, over = results
    assert not isinstance(at_cap, PayloadTooLargeError)
    assert isinstance(at_cap, DecodeError)
    assert isinstance(over, PayloadTooLargeError)
    assert (200, True) == (over.status_code, over.maybe_sent)


async def test_a_cancel_scope_does_not_cut_a_written_request_in_half() -> None:
    """Cancelling the caller's scope while the gateway holds the request: the exchange
    finishes and the payment is returned as if nothing had happened (docs/lifecycle.md)."""
    sandbox = Sandbox()
    inner = httpx.ASGITransport(app=sandbox)
    arrived, release = anyio.Event(), anyio.Event()

    async def slow_gateway(request: httpx.Request) -> httpx.Response:
        response = await inner.handle_async_request(request)  # the order exists from here
        arrived.set()
        await release.wait()
        return response

    doubts: list[InDoubt] = []
    returned: list[str] = []
    scopes: list[anyio.CancelScope] = []

    async def pay(client: CmpayClient) -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            payment = await client.create_payment(valid_order(), ip_address="1.2.3.4")
            returned.append(payment.pay_url.session_id)

    client = make_client(_AsyncMock(slow_gateway), on_in_doubt=doubts.append)
    async with client, anyio.create_task_group() as tg:
        tg.start_soon(pay, client)
        await arrived.wait()
        scopes[0].cancel()
        release.set()

    assert [sandbox.order("201103071740044998").session_id] == returned
    assert [] == doubts
