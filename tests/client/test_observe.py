"""Hooks and OpenTelemetry spans: what an operator sees of each call."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import anyio
import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from cmpay_async import (
    CmpayClient,
    ConfigurationError,
    ConnectError,
    GatewayError,
    Md5Signer,
    Order,
    PendingOrder,
    RequestEnd,
    RequestStart,
    Timeouts,
    TransportTimeoutError,
)
from cmpay_async._serve import serve_in_thread
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, Sandbox, sign_notification
from tests.support.helpers import _AsyncMock, make_client

pytestmark = pytest.mark.anyio

ORDER = Order(
    amount=1250,
    order_id="OBS1001",
    product_name="咖啡",
    callback_url="https://shop.example/return",
    notify_url="https://shop.example/notify",
)


class FailFirst(httpx.AsyncBaseTransport):
    """The first request fails to connect; later ones reach the sandbox."""

    def __init__(self, sandbox: Sandbox, error: Exception | None = None) -> None:
        self.inner = httpx.ASGITransport(app=sandbox)
        self.error = error or httpx.ConnectError("All connection attempts failed")
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Fail once (by default: refuse the connection), then pass through."""
        self.calls += 1
        if self.calls == 1:
            raise self.error
        return await self.inner.handle_async_request(request)


def _by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_successful_call_is_one_span_with_one_attempt(
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """cmpay.create_payment holds cmpay.attempt; attributes say what happened, nothing more."""
    provider, spans = exporter
    transport = httpx.ASGITransport(app=Sandbox())
    async with make_client(transport, tracer_provider=provider) as client:
        await client.create_payment(ORDER, ip_address="203.0.113.7")

    finished = spans.get_finished_spans()
    (operation,) = _by_name(finished, "cmpay.create_payment")
    (attempt,) = _by_name(finished, "cmpay.attempt")
    assert attempt.parent is not None
    assert operation.context is not None
    assert operation.context.span_id == attempt.parent.span_id
    assert {
        "cmpay.interface": "DirectPayConfirm",
        "server.address": "sandbox.test",
        "cmpay.outcome": "success",
        "cmpay.return_code": "000000",
        "cmpay.attempts": 1,
    } == _attrs(operation)
    assert {"cmpay.attempt": 1, "cmpay.outcome": "success", "http.response.status_code": 200} == (
        _attrs(attempt)
    )
    assert StatusCode.UNSET is operation.status.status_code


async def test_a_retried_call_has_a_span_per_attempt(
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A refused connection, then success: two attempt spans, the first marked ConnectError."""
    provider, spans = exporter
    async with make_client(FailFirst(Sandbox()), tracer_provider=provider) as client:
        result = await client.query_order("NOPE")
    assert "RPM22201" == result.return_code

    finished = spans.get_finished_spans()
    attempts = sorted(_by_name(finished, "cmpay.attempt"), key=lambda s: s.start_time or 0)
    assert [1, 2] == [_attrs(s)["cmpay.attempt"] for s in attempts]
    assert "ConnectError" == _attrs(attempts[0])["error.type"]
    assert False is _attrs(attempts[0])["cmpay.maybe_sent"]
    assert StatusCode.ERROR is attempts[0].status.status_code
    assert "error.type" not in _attrs(attempts[1])
    (operation,) = _by_name(finished, "cmpay.query_order")
    assert 2 == _attrs(operation)["cmpay.attempts"]
    assert "OrderQuery" == _attrs(operation)["cmpay.interface"]


@pytest.mark.parametrize("operation", ["query_order", "create_payment"])
async def test_traced_calls_keep_their_retry_rules(
    exporter: tuple[TracerProvider, InMemorySpanExporter], operation: str
) -> None:
    """With tracing on, a query is still retried after a read timeout (it may have been sent,
    but asking twice changes nothing) and a payment still is not (it may have been placed)."""
    provider, spans = exporter
    transport = FailFirst(Sandbox(), httpx.ReadTimeout("no answer"))
    async with make_client(transport, tracer_provider=provider) as client:
        if operation == "query_order":
            assert "RPM22201" == (await client.query_order("NOPE")).return_code
        else:
            with pytest.raises(TransportTimeoutError) as caught:
                await client.create_payment(ORDER, ip_address="203.0.113.7")
            assert caught.value.maybe_sent
            # Traced or not, the error names its call.
            assert ("create_payment", ORDER.order_id) == (
                caught.value.operation,
                caught.value.order_id,
            )

    expected_attempts = 2 if operation == "query_order" else 1
    assert expected_attempts == transport.calls
    (span,) = _by_name(spans.get_finished_spans(), f"cmpay.{operation}")
    assert expected_attempts == _attrs(span)["cmpay.attempts"]


async def test_a_failed_call_sets_the_error_status_and_code(
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A refusal: status ERROR, outcome gateway_error, the return code, maybe_sent False."""
    provider, spans = exporter
    sandbox = Sandbox()
    sandbox.fail_next("RPM22208")
    async with make_client(httpx.ASGITransport(app=sandbox), tracer_provider=provider) as client:
        with pytest.raises(GatewayError):
            await client.create_payment(ORDER, ip_address="203.0.113.7")

    (operation,) = _by_name(spans.get_finished_spans(), "cmpay.create_payment")
    attributes = _attrs(operation)
    assert StatusCode.ERROR is operation.status.status_code
    assert ("gateway_error", "RPM22208", "GatewayError", False) == (
        attributes["cmpay.outcome"],
        attributes["cmpay.return_code"],
        attributes["error.type"],
        attributes["cmpay.maybe_sent"],
    )


async def test_spans_hold_no_ids_amounts_or_secrets(
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """Low cardinality, no personal data: no order id, amount, key or hmac in any attribute."""
    provider, spans = exporter
    async with make_client(httpx.ASGITransport(app=Sandbox()), tracer_provider=provider) as client:
        await client.create_payment(ORDER, ip_address="203.0.113.7")
        await client.query_order("OBS1001")

    values = [str(v) for s in spans.get_finished_spans() for v in _attrs(s).values()]
    assert values
    for forbidden in ("OBS1001", "1250", PUBLIC_TEST_KEY, "hmac", "203.0.113.7"):
        assert not [v for v in values if forbidden in v], forbidden


async def test_httpx_spans_nest_inside_the_attempt(
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """With httpx's instrumentation on, its HTTP span is a child of cmpay.attempt."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    provider, spans = exporter
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with serve_in_thread(Sandbox()) as url:
            client = CmpayClient(
                merchant_id=PUBLIC_TEST_MERCHANT,
                signer=Md5Signer(PUBLIC_TEST_KEY),
                endpoint=f"{url}/ips/cmpayService",
                tracer_provider=provider,
            )
            async with client:
                await client.create_payment(ORDER, ip_address="203.0.113.7")
    finally:
        instrumentor.uninstrument()

    finished = spans.get_finished_spans()
    (attempt,) = _by_name(finished, "cmpay.attempt")
    http = [s for s in finished if s.name == "POST"]
    assert 1 == len(http)
    assert http[0].parent is not None
    assert attempt.context is not None
    assert attempt.context.span_id == http[0].parent.span_id


async def test_reconcile_is_the_parent_of_its_queries(
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """cmpay.reconcile spans the iteration; each query's span is its child."""
    provider, spans = exporter
    now = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)
    pending = [
        PendingOrder(order_id=f"REC{n}", created_at=now - dt.timedelta(minutes=5)) for n in range(3)
    ]
    async with make_client(httpx.ASGITransport(app=Sandbox()), tracer_provider=provider) as client:
        results = [r async for r in client.reconcile(pending, now=now, per_second=1000)]
    assert 3 == len(results)

    finished = spans.get_finished_spans()
    (parent,) = _by_name(finished, "cmpay.reconcile")
    queries = _by_name(finished, "cmpay.query_order")
    assert 3 == len(queries)
    assert parent.context is not None
    assert {parent.context.span_id} == {q.parent.span_id for q in queries if q.parent}
    assert 3 == _attrs(parent)["cmpay.results"]


@pytest.mark.parametrize("traced", [False, True], ids=["untraced", "traced"])
async def test_reconcile_passes_now_and_concurrency_through(
    exporter: tuple[TracerProvider, InMemorySpanExporter], traced: bool
) -> None:
    """Traced or not, reconcile honours `now` (an order 30 s old is not due) and concurrency."""
    provider, spans = exporter
    now = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)
    pending = [
        PendingOrder(order_id=f"DUE{n}", created_at=now - dt.timedelta(minutes=5)) for n in range(6)
    ] + [PendingOrder(order_id="FRESH", created_at=now - dt.timedelta(seconds=30))]
    inner = httpx.ASGITransport(app=Sandbox())
    inside = peak = 0

    async def counting(request: httpx.Request) -> httpx.Response:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        try:
            await anyio.sleep(0.01)  # long enough for every allowed query to be inside at once
            return await inner.handle_async_request(request)
        finally:
            inside -= 1

    extra = {"tracer_provider": provider} if traced else {}
    async with make_client(_AsyncMock(counting), **extra) as client:
        found = [
            r.order_id
            async for r in client.reconcile(pending, now=now, concurrency=2, per_second=1000)
        ]

    assert sorted(found) == [f"DUE{n}" for n in range(6)]
    assert 2 == peak
    if traced:
        (span,) = _by_name(spans.get_finished_spans(), "cmpay.reconcile")
        assert 2 == _attrs(span)["cmpay.concurrency"]
        assert "sandbox.test" == _attrs(span)["server.address"]
        assert 6 == _attrs(span)["cmpay.results"]
        assert "success" == _attrs(span)["cmpay.outcome"]
        assert "error.type" not in _attrs(span)


async def test_a_failed_reconcile_marks_its_span(
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """An error that ends the iteration is the span's error."""
    provider, spans = exporter
    now = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)
    pending = [PendingOrder(order_id="NEVER", created_at=now - dt.timedelta(minutes=5))]

    async with make_client(httpx.ASGITransport(app=Sandbox()), tracer_provider=provider) as client:
        with pytest.raises(ConfigurationError):
            async for _ in client.reconcile(pending, now=now, per_second=0):
                pass

    (span,) = _by_name(spans.get_finished_spans(), "cmpay.reconcile")
    assert StatusCode.ERROR is span.status.status_code
    assert "ConfigurationError" == _attrs(span)["error.type"]
    assert 0 == _attrs(span)["cmpay.results"]


async def test_verify_notification_span(
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """client.verify_notification: a span with the notification type, or the error's class."""
    provider, spans = exporter
    client = make_client(httpx.ASGITransport(app=Sandbox()), tracer_provider=provider)
    client.verify_notification(sign_notification(order_id="V1", amount=100))
    forged = sign_notification(
        order_id="V2", amount=100, signer=Md5Signer("another-key-123-not-the-merchants-key")
    )
    with pytest.raises(Exception, match="signature"):
        client.verify_notification(forged)

    good, bad = sorted(
        _by_name(spans.get_finished_spans(), "cmpay.verify_notification"),
        key=lambda s: s.start_time or 0,
    )
    assert ("OfflineNotify", "success") == (
        _attrs(good)["cmpay.interface"],
        _attrs(good)["cmpay.outcome"],
    )
    assert "SignatureError" == _attrs(bad)["error.type"]


def test_tracing_off_needs_no_opentelemetry() -> None:
    """Without tracing the client never builds a tracer (OpenTelemetry stays unimported)."""
    client = make_client(httpx.ASGITransport(app=Sandbox()))
    assert client._tracing is None


async def test_hooks_get_each_attempt_with_the_documented_fields() -> None:
    """A refused connection then success: 2 starts, 2 ends with outcome, code and duration."""
    starts: list[RequestStart] = []
    ends: list[RequestEnd] = []
    before = time.perf_counter()
    async with make_client(
        FailFirst(Sandbox()), on_request_start=starts.append, on_request_end=ends.append
    ) as client:
        await client.create_payment(ORDER, ip_address="203.0.113.7", request_id="HOOK1")
    elapsed = time.perf_counter() - before

    assert [
        RequestStart(
            operation="create_payment",
            order_id="OBS1001",
            request_id="HOOK1",
            attempt=n,
            endpoint_host="sandbox.test",
        )
        for n in (1, 2)
    ] == starts
    first, second = ends
    assert ("error", "ConnectError", True, False, None) == (
        first.outcome,
        first.error,
        first.retrying,
        first.maybe_sent,
        first.status_code,
    )
    assert ("success", "000000", 200, False, None, 2, True) == (
        second.outcome,
        second.return_code,
        second.status_code,
        second.retrying,
        second.error,
        second.attempt,
        second.maybe_sent,  # an answer came back: the request certainly went out
    )
    # Seconds of each attempt: within the call's own time, not a clock's reading.
    assert all(0 <= e.duration <= elapsed for e in ends)
    assert {("create_payment", "OBS1001", "HOOK1", "sandbox.test")} == {
        (e.operation, e.order_id, e.request_id, e.endpoint_host) for e in ends
    }


async def test_hook_sees_a_gateway_refusal_as_gateway_error() -> None:
    """A verified failure code ends the attempt as gateway_error with that code."""
    ends: list[RequestEnd] = []
    sandbox = Sandbox()
    sandbox.fail_next("RPM22208")
    async with make_client(httpx.ASGITransport(app=sandbox), on_request_end=ends.append) as client:
        with pytest.raises(GatewayError):
            await client.create_payment(ORDER, ip_address="203.0.113.7")

    (end,) = ends
    assert ("create_payment", "gateway_error", "RPM22208", "GatewayError", False, False) == (
        end.operation,
        end.outcome,
        end.return_code,
        end.error,
        end.retrying,
        end.maybe_sent,  # the error's word (a definite refusal), not "a request went out"
    )


async def test_a_raising_hook_never_breaks_the_payment(caplog: pytest.LogCaptureFixture) -> None:
    """Hooks that raise are logged; the payment is placed and returned all the same."""

    def broken(event: object) -> None:
        raise ValueError("hook bug")

    sandbox = Sandbox()
    async with make_client(
        httpx.ASGITransport(app=sandbox), on_request_start=broken, on_request_end=broken
    ) as client:
        with caplog.at_level(logging.ERROR, logger="cmpay_async"):
            payment = await client.create_payment(ORDER, ip_address="203.0.113.7")

    assert payment.pay_url.session_id
    assert "paid" != sandbox.order("OBS1001").state  # placed, not yet paid
    assert [
        "the on_request_start hook raised; the call's outcome is unchanged",
        "the on_request_end hook raised; the call's outcome is unchanged",
    ] == [r.getMessage() for r in caplog.records]


async def test_hooks_get_no_secrets() -> None:
    """No key, hmac, amount or buyer data in any hook event."""
    events: list[object] = []
    async with make_client(
        httpx.ASGITransport(app=Sandbox()),
        on_request_start=events.append,
        on_request_end=events.append,
    ) as client:
        await client.create_payment(ORDER, ip_address="203.0.113.7")

    text = " ".join(repr(e) for e in events)
    # The request id is random hex: it may hold "1250" by chance (it did, once in CI).
    for request_id in {e.request_id for e in events}:  # type: ignore[attr-defined]
        text = text.replace(request_id, "<request id>")
    for forbidden in (PUBLIC_TEST_KEY, "hmac", "1250", "203.0.113.7"):
        assert forbidden not in text


async def test_a_connect_error_hook_event_on_the_final_attempt() -> None:
    """Every attempt refused: the last end says retrying=False, the error reaches the caller."""
    ends: list[RequestEnd] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async with make_client(httpx.MockTransport(refuse), on_request_end=ends.append) as client:
        with pytest.raises(ConnectError):
            await client.create_payment(ORDER, ip_address="203.0.113.7")

    assert [(1, True), (2, True), (3, False)] == [(e.attempt, e.retrying) for e in ends]


async def test_a_placed_payment_ends_once_with_its_status_and_code() -> None:
    """A successful call's one end: success, HTTP 200, the success code, sent."""
    ends: list[RequestEnd] = []
    async with make_client(httpx.ASGITransport(app=Sandbox()), on_request_end=ends.append) as c:
        await c.create_payment(ORDER, ip_address="203.0.113.7")

    assert [("success", 200, "000000", True)] == [
        (e.outcome, e.status_code, e.return_code, e.maybe_sent) for e in ends
    ]


async def test_a_call_that_never_got_a_slot_ends_unsent_with_its_ids() -> None:
    """The only request slot is held past the pool timeout: the call's one end says never
    sent, no HTTP status, and carries the call's order and request ids."""
    ends: list[RequestEnd] = []
    async with make_client(
        httpx.ASGITransport(app=Sandbox()),
        on_request_end=ends.append,
        max_connections=1,
        timeouts=Timeouts(pool=0.05),
    ) as client:
        slots = (await client._pools.current()).slots
        async with slots:
            with pytest.raises(TransportTimeoutError):
                await client.create_payment(ORDER, ip_address="203.0.113.7", request_id="Q" * 30)

    assert [("TransportTimeoutError", False, None, ORDER.order_id, "Q" * 30)] == [
        (e.error, e.maybe_sent, e.status_code, e.order_id, e.request_id) for e in ends
    ]


def test_a_call_refused_before_any_attempt_reports_no_attempt() -> None:
    """A caller's http_client used from a second event loop is refused before any attempt:
    no start, no end, for that call (the first loop's call reported its one attempt)."""
    starts: list[RequestStart] = []
    ends: list[RequestEnd] = []
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=Sandbox()))
    client = CmpayClient(
        merchant_id=PUBLIC_TEST_MERCHANT,
        signer=Md5Signer(PUBLIC_TEST_KEY),
        http_client=http,
        on_request_start=starts.append,
        on_request_end=ends.append,
    )

    async def pay(order_id: str) -> None:
        order = Order(
            amount=1,
            order_id=order_id,
            product_name="p",
            callback_url="https://shop.example/r",
            notify_url="https://shop.example/n",
        )
        await client.create_payment(order, ip_address="203.0.113.7")

    anyio.run(pay, "LOOP1")
    with pytest.raises(ConfigurationError, match="belongs to the event loop that first used it"):
        anyio.run(pay, "LOOP2")

    assert ["LOOP1"] == [s.order_id for s in starts]
    assert [("LOOP1", 1)] == [(e.order_id, e.attempt) for e in ends]
