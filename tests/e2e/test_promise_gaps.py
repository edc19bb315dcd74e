"""Promises the docs make that no other test stated (found with tests/semantic_mutants.json).

Each test is written from the promise as tests/PROMISES.md quotes it: the processor's answer
for every outcome, the reconciliation schedule at each tier boundary and its pacing after a
slow batch, the client's deadline against backoff and its in-doubt reports, the pools, the
blocking facade, hooks and spans, redaction, the validation memo and the sandbox's rules.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

import anyio
import attrs
import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from cmpay_async import (
    Ack,
    BlockingCmpayClient,
    ClientClosedError,
    ConnectError,
    GatewayError,
    InDoubt,
    Md5Signer,
    NotificationProcessor,
    PaymentEvent,
    RequestEnd,
    RequestStart,
    RetryPolicy,
    StoreError,
    Timeouts,
    TransportError,
    _values,
    parse_date,
)
from cmpay_async._redact import redact
from cmpay_async._validate import date_problem
from cmpay_async.stores import Claimed, MemoryStore
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, Sandbox, sign_notification
from tests.support.forking import in_child
from tests.support.helpers import _AsyncMock, make_client, query_result, valid_order

pytestmark = pytest.mark.anyio

VERIFIER = Md5Signer(PUBLIC_TEST_KEY)


# -- the processor: its answer for every outcome ----------------------------------------------


class Faulty(MemoryStore):
    """MemoryStore whose calls fail as told: ``fail[op]`` failures of ``op`` before it works."""

    def __init__(self, **fail: int) -> None:
        super().__init__()
        self.fail = dict(fail)
        self.calls: list[str] = []

    def _maybe_fail(self, operation: str) -> None:
        self.calls.append(operation)
        if self.fail.get(operation, 0) > 0:
            self.fail[operation] -= 1
            raise StoreError(
                f"store down during {operation}", backend="Faulty", operation=operation
            )

    async def claim(self, key: str, *, lease: float) -> Claimed:
        self._maybe_fail("claim")
        return await super().claim(key, lease=lease)

    async def complete(self, key: str, token: str) -> bool:
        self._maybe_fail("complete")
        return await super().complete(key, token)

    async def release(self, key: str, token: str) -> None:
        self._maybe_fail("release")
        await super().release(key, token)


def _counting(store: Any, **kw: Any) -> tuple[NotificationProcessor, list[PaymentEvent]]:
    seen: list[PaymentEvent] = []

    async def handler(event: PaymentEvent) -> None:
        seen.append(event)

    processor = NotificationProcessor(
        verifier=VERIFIER, merchant_id=PUBLIC_TEST_MERCHANT, store=store, handler=handler, **kw
    )
    return processor, seen


async def test_a_store_failing_at_the_claim_is_answered_503_fail_without_the_handler() -> None:
    """The claim failed: the handler does not run; HTTP 503 FAIL, so the gateway retries."""
    processor, seen = _counting(Faulty(claim=1))

    answer = await processor.process(sign_notification(order_id="SF1", amount=5))

    assert (503, b"FAIL") == (answer.status_code, answer.body)
    assert [] == seen
    # The retry, with the store back, runs the handler.
    again = await processor.process(sign_notification(order_id="SF1", amount=5))
    assert (200, b"SUCCESS") == (again.status_code, again.body)
    assert 1 == len(seen)


async def test_a_complete_that_fails_once_is_tried_once_more() -> None:
    """The handler ran; complete failed once (a dropped connection): tried again, recorded."""
    store = Faulty(complete=1)
    processor, seen = _counting(store)

    answer = await processor.process(sign_notification(order_id="SF2", amount=5))
    duplicate = await processor.process(sign_notification(order_id="SF2", amount=5))

    assert (200, b"SUCCESS") == (answer.status_code, answer.body)
    assert ["claim", "complete", "complete", "claim"] == store.calls
    assert (200, b"SUCCESS") == (duplicate.status_code, duplicate.body)  # DONE: recorded
    assert 1 == len(seen)


async def test_a_completion_the_store_cannot_record_is_success_and_stays_held(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every complete fails: tried again until the lease ends, then SUCCESS (the work is done)
    with an ERROR; the key is never released, so a duplicate meanwhile is told to retry (FAIL)
    instead of running the handler again."""
    store = Faulty(complete=10**9)
    processor, seen = _counting(store, lease=0.5)
    answers: dict[str, Ack] = {}

    async def first() -> None:
        answers["first"] = await processor.process(sign_notification(order_id="SF3", amount=5))

    with caplog.at_level(logging.ERROR, logger="cmpay_async"), anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first)
            while store.calls.count("complete") < 2:  # the first is retrying its complete
                await anyio.sleep(0.01)
            duplicate = await processor.process(sign_notification(order_id="SF3", amount=5))

    assert (200, b"SUCCESS") == (answers["first"].status_code, answers["first"].body)
    assert "release" not in store.calls
    assert b"FAIL" == duplicate.body
    assert 1 == len(seen)
    assert store.calls.count("complete") > 2
    assert any("may run the handler again" in r.getMessage() for r in caplog.records)


async def test_a_store_back_within_the_lease_records_the_completion(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """complete fails four times (a store restarting), then works: recorded within the lease,
    so a later duplicate is DONE (SUCCESS without the handler) and no ERROR is logged."""
    store = Faulty(complete=4)
    processor, seen = _counting(store, lease=30)

    with caplog.at_level(logging.WARNING, logger="cmpay_async"), anyio.fail_after(10):
        answer = await processor.process(sign_notification(order_id="SF4", amount=5))
        duplicate = await processor.process(sign_notification(order_id="SF4", amount=5))

    assert (200, b"SUCCESS") == (answer.status_code, answer.body)
    assert (200, b"SUCCESS") == (duplicate.status_code, duplicate.body)
    assert ["claim", *["complete"] * 5, "claim"] == store.calls
    assert 1 == len(seen)
    assert [] == [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_release_the_store_fails_is_a_warning_naming_the_key_and_the_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The handler raised and the store failed to release the key: the answer is still FAIL
    (the gateway retries after the lease) and one WARNING names the event and the release."""
    store = Faulty(release=1)

    async def handler(event: PaymentEvent) -> None:
        raise RuntimeError("the shop's database is down")

    processor = NotificationProcessor(
        verifier=VERIFIER, merchant_id=PUBLIC_TEST_MERCHANT, store=store, handler=handler
    )
    with caplog.at_level(logging.WARNING, logger="cmpay_async"):
        answer = await processor.process(sign_notification(order_id="SF5", amount=5))

    assert b"FAIL" == answer.body
    assert ["claim", "release"] == store.calls
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    key = f"cmpay:{PUBLIC_TEST_MERCHANT}:SF5:SUCCESS"
    assert warning.getMessage() == (
        f"could not release {key}; the next delivery waits for its lease to end: "
        "store down during release [release]"
    )


async def test_a_failed_payment_found_by_reconciliation_is_one_event_too() -> None:
    """A FAILED query result is an event (paid False), handled once; PENDING is not one."""
    processor, seen = _counting(MemoryStore())

    assert await processor.process_result(query_result("FR1", "FAILED")) is True
    assert await processor.process_result(query_result("FR1", "FAILED")) is True
    assert await processor.process_result(query_result("FR2", "PENDING")) is False

    assert [("FR1", False)] == [(e.order_id, e.paid) for e in seen]


async def test_success_and_failure_of_one_order_are_two_events() -> None:
    """The key holds the outcome: a FAILED and a SUCCESS of one order each run the handler."""
    processor, seen = _counting(MemoryStore())

    await processor.process_result(query_result("FR3", "FAILED"))
    await processor.process_result(query_result("FR3", "SUCCESS"))

    assert [False, True] == [e.paid for e in seen]


async def test_two_merchants_sharing_one_store_never_share_an_event() -> None:
    """One store, two merchants, the same order id: each merchant's handler runs."""
    store = MemoryStore()
    first, first_seen = _counting(store)
    second, second_seen = _counting(store)
    second.merchant_id = "888009990000002"  # results are verified upstream; only the key matters
    other = attrs.evolve(query_result("SAME", "SUCCESS"), merchant_id="888009990000002")

    assert await first.process_result(query_result("SAME", "SUCCESS"))
    assert await second.process_result(other)

    assert (1, 1) == (len(first_seen), len(second_seen))


async def test_a_cancelled_process_releases_its_claim() -> None:
    """Cancelled mid-handler: the next delivery claims at once (no wait for the lease)."""
    store = MemoryStore()
    entered = anyio.Event()
    runs: list[str] = []

    async def handler(event: PaymentEvent) -> None:
        runs.append(event.order_id)
        if len(runs) == 1:
            entered.set()
            await anyio.sleep_forever()

    processor = NotificationProcessor(
        verifier=VERIFIER, merchant_id=PUBLIC_TEST_MERCHANT, store=store, handler=handler
    )
    body = sign_notification(order_id="CX1", amount=5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(processor.process, body)
        await entered.wait()
        tg.cancel_scope.cancel()

    answer = await processor.process(body)

    assert b"SUCCESS" == answer.body
    assert ["CX1", "CX1"] == runs


class Hanging(MemoryStore):
    """A store whose claim never answers (a driver ignoring its own timeout)."""

    async def claim(self, key: str, *, lease: float) -> Claimed:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_store_call_is_bounded_by_store_timeout() -> None:
    """A claim that never answers ends after store_timeout: 503 FAIL, the handler not run."""
    processor, seen = _counting(Hanging(), store_timeout=0.2)

    with anyio.fail_after(20):  # only ends a hung run; nothing about timing is asserted
        answer = await processor.process(sign_notification(order_id="HG1", amount=5))

    assert (503, b"FAIL") == (answer.status_code, answer.body)
    assert [] == seen


# -- the client: deadline against backoff, in-doubt reports -----------------------------------


async def test_no_retry_is_started_whose_backoff_would_outlast_the_deadline() -> None:
    """The connection was refused (safe to retry) but the backoff (5 s) ends after the total
    deadline (1 s): the call ends now with the refusal, not a second attempt out of time."""
    starts: list[RequestStart] = []
    ends: list[RequestEnd] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    client = make_client(
        httpx.MockTransport(refuse),
        retry=RetryPolicy(attempts=3, initial_backoff=5.0, max_backoff=5.0),
        timeouts=Timeouts(total=1.0),
        on_request_start=starts.append,
        on_request_end=ends.append,
    )
    async with client:
        with anyio.fail_after(30), pytest.raises(ConnectError) as caught:
            await client.query_order("BK1")

    assert caught.value.maybe_sent is False
    assert [1] == [s.attempt for s in starts]
    assert [(1, "error", False)] == [(e.attempt, e.outcome, e.retrying) for e in ends]


async def test_a_call_cancelled_while_queueing_for_a_slot_is_not_in_doubt() -> None:
    """max_connections=1 and the slot taken: a payment cancelled while it waits for the slot
    was never written, so nothing is reported to on_in_doubt."""
    doubts: list[InDoubt] = []
    entered, release = anyio.Event(), anyio.Event()
    inner = httpx.ASGITransport(app=Sandbox())

    async def held(request: httpx.Request) -> httpx.Response:
        entered.set()
        await release.wait()
        return await inner.handle_async_request(request)

    client = make_client(_AsyncMock(held), max_connections=1, on_in_doubt=doubts.append)
    async with client, anyio.create_task_group() as tg:
        tg.start_soon(client.query_order, "SLOT1")
        await entered.wait()
        with anyio.move_on_after(0.2) as waiting:
            await client.create_payment(valid_order(order_id="SLOT2"), ip_address="203.0.113.7")
        release.set()

    assert waiting.cancelled_caught
    assert [] == doubts


# -- spans and hook events on failure ----------------------------------------------------------


async def test_a_span_records_a_failure_and_a_cancellation(
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A dropped answer: outcome error, maybe_sent True, status ERROR. A call cancelled while
    it queued for a slot: outcome cancelled. An unsigned refusal is an error, not a
    verified gateway_error."""
    provider, spans = exporter
    sandbox = Sandbox()
    sandbox.drop_next()
    async with make_client(httpx.ASGITransport(app=sandbox), tracer_provider=provider) as client:
        with pytest.raises(TransportError):
            await client.create_payment(valid_order(order_id="SPAN1"), ip_address="203.0.113.7")
        sandbox.answer_next(200, b"merchantId=X&returnCode=IPS0001&message=no")
        with pytest.raises(GatewayError) as unsigned:
            await client.query_order("SPAN2")

    dropped, refused = [
        s for s in spans.get_finished_spans() if s.name.startswith("cmpay.") and s.parent is None
    ]
    assert unsigned.value.verified is False
    assert StatusCode.ERROR is dropped.status.status_code
    assert ("error", True, "TransportError") == (
        dropped.attributes["cmpay.outcome"],
        dropped.attributes["cmpay.maybe_sent"],
        dropped.attributes["error.type"],
    )
    assert "error" == refused.attributes["cmpay.outcome"]


async def test_a_span_of_a_cancelled_call_says_cancelled(
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """max_connections=1, the slot held: the second call, cancelled while it waits, ends its
    span with outcome cancelled."""
    provider, spans = exporter
    entered, release = anyio.Event(), anyio.Event()
    inner = httpx.ASGITransport(app=Sandbox())

    async def held(request: httpx.Request) -> httpx.Response:
        entered.set()
        await release.wait()
        return await inner.handle_async_request(request)

    client = make_client(_AsyncMock(held), max_connections=1, tracer_provider=provider)
    async with client, anyio.create_task_group() as tg:
        tg.start_soon(client.query_order, "HELD")
        await entered.wait()
        with anyio.move_on_after(0.2):
            await client.query_order("CANCELLED")
        release.set()

    outcomes = sorted(
        str(s.attributes["cmpay.outcome"])
        for s in spans.get_finished_spans()
        if s.name == "cmpay.query_order"
    )
    assert ["cancelled", "success"] == outcomes


async def test_an_unsigned_refusal_is_an_error_to_the_hooks() -> None:
    """gateway_error is for a verified failure code; an unsigned one is an error."""
    ends: list[RequestEnd] = []
    sandbox = Sandbox()
    sandbox.answer_next(200, b"merchantId=X&returnCode=IPS0001&message=no")
    async with make_client(httpx.ASGITransport(app=sandbox), on_request_end=ends.append) as c:
        with pytest.raises(GatewayError):
            await c.query_order("HOOK1")
        sandbox.fail_next("RPM22208")
        with pytest.raises(GatewayError):
            await c.create_payment(valid_order(order_id="HOOK2"), ip_address="203.0.113.7")

    assert [("error", "IPS0001"), ("gateway_error", "RPM22208")] == [
        (e.outcome, e.return_code) for e in ends
    ]


# -- redaction of every value shape -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("orderId=A1&hmac=0123abcd&amount=5", "0123abcd", "amount=5"),
        ("next=https%3A%2F%2Fx%2F%3Fhmac%3D0123abcd%26amount%3D5", "0123abcd", "amount%3D5"),
        ('{"hmac": "01\\"23abcd", "amount": 5}', "23abcd", '"amount": 5'),
        (
            '<input name="hmac" value="0123abcd"><input name="amount" value="5">',
            "0123abcd",
            'name="amount" value="5"',
        ),
        ("sign_key=SECRETKEY0123456&x=1", "SECRETKEY0123456", "x=1"),
        ('{"signKey": "SECRETKEY0123456"}', "SECRETKEY0123456", '"signKey"'),
        ("privateKey=-----BEGIN&x=1", "-----BEGIN", "x=1"),
        ("mobile=13800138000&x=1", "13800138000", "x=1"),
    ],
    ids=[
        "form",
        "percent-encoded",
        "json-escaped-quote",
        "html",
        "sign_key",
        "signKey-json",
        "privateKey",
        "mobile",
    ],
)
def test_redaction_of_every_value_shape(text: str, secret: str, kept: str) -> None:
    """The value is gone whatever shape carries it; the fields around it stay readable."""
    redacted = redact(text)

    assert secret not in redacted
    assert kept in redacted
    assert "[redacted]" in redacted


# -- memos are bounded --------------------------------------------------------------------------


def test_the_date_memo_is_bounded() -> None:
    """Hostile input of ever new dates cannot grow the date memos without limit."""
    dates = [
        f"{year:04d}{month:02d}{day:02d}"
        for year in range(1800, 2100)
        for month in (1, 6)
        for day in range(1, 11)
    ]
    assert len(dates) == 6000
    for text in dates:
        assert date_problem(text) is None
        parse_date(text)

    assert date_problem.cache_info().currsize < len(dates)
    assert _values._date.cache_info().currsize < len(dates)


# -- the sandbox's rules ------------------------------------------------------------------------


async def test_sandbox_refunds_follow_the_documents_rules() -> None:
    """Only a paid order is refunded, in total at most its amount (RPM22407 beyond what is
    left), and a refund's requestId is used once (RPM22208)."""
    sandbox = Sandbox()
    async with make_client(httpx.ASGITransport(app=sandbox)) as client:
        await client.create_payment(
            valid_order(order_id="RF1", amount=1000), ip_address="203.0.113.7"
        )
        with pytest.raises(GatewayError) as unpaid:
            await client.refund("RF1", 100)
        sandbox.settle(sandbox.order("RF1"), paid=True)
        await client.refund("RF1", 600, request_id="REFUND0000000001")
        with pytest.raises(GatewayError) as reused:
            await client.refund("RF1", 100, request_id="REFUND0000000001")
        with pytest.raises(GatewayError) as beyond:
            await client.refund("RF1", 500)
        await client.refund("RF1", 400)

    assert "RPM22208" == unpaid.value.code
    assert ("RPM22208", "RPM22407") == (reused.value.code, beyond.value.code)
    assert 1000 == sandbox.order("RF1").refunded


async def test_sandbox_faults_are_one_shot_and_checked_before_arming() -> None:
    """A fault acts on the next request only; an arm() with one bad key arms nothing."""
    sandbox = Sandbox()
    async with make_client(httpx.ASGITransport(app=sandbox)) as client:
        with pytest.raises(ValueError, match="no_such_fault"):
            sandbox.arm({"fail_next": "IPS0008", "no_such_fault": True})
        await client.create_payment(valid_order(order_id="FT1"), ip_address="203.0.113.7")
        sandbox.arm({"fail_next": "MCG01033"})
        with pytest.raises(GatewayError) as failed:
            await client.create_payment(valid_order(order_id="FT2"), ip_address="203.0.113.7")
        await client.create_payment(valid_order(order_id="FT3"), ip_address="203.0.113.7")

    assert "MCG01033" == failed.value.code
    assert {"FT1", "FT3"} <= {oid for _, oid in sandbox.orders}


# -- the blocking facade ------------------------------------------------------------------------


def _blocking(**kw: Any) -> BlockingCmpayClient:
    return BlockingCmpayClient(
        merchant_id=PUBLIC_TEST_MERCHANT,
        signer=Md5Signer(PUBLIC_TEST_KEY),
        endpoint="https://sandbox.example/ips/cmpayService",
        transport=httpx.ASGITransport(app=Sandbox()),
        **kw,
    )


def test_a_blocking_call_from_a_new_thread_after_close_is_refused() -> None:
    """close() is final for every thread, including one that never called before: it gets
    this facade's ClientClosedError, and no new loop is made for it."""
    client = _blocking()
    client.query_order("BEFORE")
    client.close()
    errors: list[BaseException] = []

    def late() -> None:
        try:
            client.query_order("AFTER")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=late)
    thread.start()
    thread.join(timeout=30)

    (error,) = errors
    assert isinstance(error, ClientClosedError)
    assert "this BlockingCmpayClient is closed; create a new one" == str(error)
    assert [] == client._loops


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_its_calls_on_a_loop_of_its_own() -> None:
    """After fork the child makes a new loop (the parent's shares its epoll and sockets):
    the loop a hook sees in the child is not the parent's."""
    loops: list[int] = []
    client = _blocking(on_request_start=lambda event: loops.append(id(asyncio.get_running_loop())))
    client.query_order("PARENT")
    parent_loop = loops[-1]

    def child() -> None:
        client.query_order("CHILD")
        if loops[-1] == parent_loop:
            raise AssertionError("the child ran on its parent's loop")

    assert 0 == in_child(child)
    client.query_order("PARENT")
    assert parent_loop == loops[-1]
    client.close()


def test_a_native_cancellation_in_flight_frees_its_slot() -> None:
    """asyncio only: a task.cancel() is the one cancellation that pierces the shield of a
    written request. max_connections=1: after the first call is cancelled so, in flight, the
    second still gets the slot (it would wait out the pool timeout if the slot leaked)."""
    inner = httpx.ASGITransport(app=Sandbox())

    async def main() -> str:
        entered = asyncio.Event()
        calls = 0

        async def held(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            if calls == 1:
                entered.set()
                await asyncio.sleep(3600)
            return await inner.handle_async_request(request)

        client = make_client(
            _AsyncMock(held), max_connections=1, timeouts=Timeouts(pool=5.0, total=30.0)
        )
        async with client:
            first = asyncio.create_task(client.query_order("FIRST"))
            await entered.wait()
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            second = await client.query_order("SECOND")
        return second.return_code

    assert "RPM22201" == asyncio.run(main())
