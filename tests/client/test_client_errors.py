"""The client's error translation, word for word: every httpx failure's class, maybe_sent and
message, the unexpected-failure path, plain `with`, and the retry backoff's exact numbers."""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

import anyio
import attrs
import httpx
import pytest

from cmpay_async import (
    CharacterSet,
    ClientClosedError,
    CmpayClient,
    ConfigurationError,
    ConnectError,
    DecodeError,
    HTTPStatusError,
    Md5Signer,
    RetryPolicy,
    RsaSigner,
    SignatureError,
    Timeouts,
    TransportError,
    TransportTimeoutError,
    UnexpectedMessageError,
    ValidationError,
    _engine,
    signing_source,
)
from cmpay_async._codec import encode_answer
from cmpay_async._schema import REGISTRY
from cmpay_async._transport import check_answer, translate
from cmpay_async._transport import excerpt as _excerpt
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, Sandbox, sign_notification
from tests.support.helpers import _AsyncMock, make_client, rsa_key, valid_order

NEVER = "the request never reached the gateway"
MAYBE = (
    "the request may have reached the gateway and created order 'ORD1': query the order "
    "before trying again, and use a new orderId for a new attempt"
)


@pytest.mark.parametrize(
    ("exc", "cls", "maybe_sent", "message"),
    [
        (
            httpx.ConnectTimeout("slow"),
            TransportTimeoutError,
            False,
            f"ConnectTimeout: slow; {NEVER}",
        ),
        (httpx.PoolTimeout("full"), TransportTimeoutError, False, f"PoolTimeout: full; {NEVER}"),
        (httpx.ReadTimeout("quiet"), TransportTimeoutError, True, f"ReadTimeout: quiet; {MAYBE}"),
        (httpx.WriteTimeout("w"), TransportTimeoutError, True, f"WriteTimeout: w; {MAYBE}"),
        (httpx.ConnectError("refused"), ConnectError, False, f"refused; {NEVER}"),
        (
            httpx.ProxyError("proxy said no"),
            ConnectError,
            False,
            f"ProxyError: proxy said no; {NEVER}",
        ),
        (
            httpx.UnsupportedProtocol("ftp"),
            TransportError,
            False,
            f"UnsupportedProtocol: ftp; {NEVER} (check the endpoint setting)",
        ),
        (
            httpx.LocalProtocolError("bad header"),
            TransportError,
            False,
            f"LocalProtocolError: bad header; {NEVER} (check the endpoint setting)",
        ),
        (
            httpx.InvalidURL("no host"),
            TransportError,
            False,
            f"InvalidURL: no host; {NEVER} (check the endpoint setting)",
        ),
        (httpx.ReadError(""), TransportError, True, f"ReadError; {MAYBE}"),
        (
            httpx.RemoteProtocolError("eof"),
            TransportError,
            True,
            f"RemoteProtocolError: eof; {MAYBE}",
        ),
        (httpx.DecodingError("gz"), TransportError, True, f"DecodingError: gz; {MAYBE}"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)
def test_every_httpx_failure_is_translated_exactly(
    exc: Exception, cls: type[TransportError], maybe_sent: bool, message: str
) -> None:
    """The class, maybe_sent, the order and request, and the message: each as documented."""
    error = translate(exc, order_id="ORD1", request_id="REQ1")

    assert cls is type(error)
    assert (maybe_sent, "ORD1", "REQ1") == (error.maybe_sent, error.order_id, error.request_id)
    assert message == str(error)


@pytest.mark.parametrize(
    ("maybe_sent", "tail"),
    [
        (True, "the request may have reached the gateway: query the order before trying again"),
        (False, NEVER),
    ],
)
def test_an_unexpected_failure_says_how_far_it_got(maybe_sent: bool, tail: str) -> None:
    """Any other exception becomes a TransportError with the order, the request and the cause."""
    prepared = make_client(httpx.MockTransport(lambda r: httpx.Response(500))).prepare_payment(
        valid_order(), ip_address="1.2.3.4", request_id="REQ9"
    )
    cause = RuntimeError("boom")

    error = translate(
        cause, order_id=prepared.order_id, request_id=prepared.request_id, sent=maybe_sent
    )

    assert f"unexpected RuntimeError during the exchange: boom; {tail}" == str(error)
    assert (maybe_sent, prepared.order_id, "REQ9") == (
        error.maybe_sent,
        error.order_id,
        error.request_id,
    )
    assert cause is error.__cause__


@pytest.mark.anyio
async def test_a_transport_that_raises_anything_gives_a_typed_error() -> None:
    """A RuntimeError inside a custom transport leaves as TransportError, maybe_sent."""

    async def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("transport bug")

    async with make_client(_AsyncMock(broken)) as client:
        with pytest.raises(TransportError) as caught:
            await client.create_payment(valid_order(), ip_address="1.2.3.4", request_id="REQ7")

    error = caught.value
    assert TransportError is type(error)
    assert (True, "REQ7") == (error.maybe_sent, error.request_id)
    assert str(error).startswith("unexpected RuntimeError during the exchange: transport bug; ")
    assert isinstance(error.__cause__, RuntimeError)


def test_plain_with_is_refused_with_the_way_out() -> None:
    """`with CmpayClient(...)` is a TypeError that names `async with` and the blocking client."""
    client = CmpayClient(merchant_id="M", signer=Md5Signer(PUBLIC_TEST_KEY))

    with pytest.raises(TypeError) as caught, client:  # type: ignore[attr-defined]
        pass

    assert (
        "CmpayClient is async: use `async with CmpayClient(...)`, or BlockingCmpayClient "
        "in code that cannot await"
    ) == str(caught.value)


class Fixed:
    """An rng whose random() is the value given."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("retry", "draw", "seconds"),
    [
        (1, 0.0, 0.1),  # half of the 0.2 s cap
        (1, 1.0, 0.2),  # all of it
        (2, 0.5, 0.3),  # 0.4 s cap, three quarters
        (3, 1.0, 0.8),
        (4, 1.0, 1.6),
        (5, 1.0, 2.0),  # capped at max_backoff
        (9, 0.0, 1.0),
    ],
)
def test_backoff_is_half_to_all_of_a_doubling_capped_delay(
    retry: int, draw: float, seconds: float
) -> None:
    """cap = min(2.0, 0.2 x 2^(retry-1)); the wait is cap x (0.5 + draw / 2)."""
    assert seconds == pytest.approx(RetryPolicy().backoff(retry, Fixed(draw)))  # type: ignore[arg-type]


def test_the_default_policy_is_three_attempts() -> None:
    """Three attempts, from 0.2 s up to 2 s apart, unless configured."""
    assert (3, 0.2, 2.0) == (
        RetryPolicy().attempts,
        RetryPolicy().initial_backoff,
        RetryPolicy().max_backoff,
    )


# -- what refund and verify_notification pass on ------------------------------------------------


def _refund_answer(order_id: str, merchant_id: str = PUBLIC_TEST_MERCHANT) -> bytes:
    fields = {
        "merchantId": merchant_id,
        "payNo": "PN1",
        "returnCode": "000000",
        "message": "成功",
        "signType": "MD5",
        "type": "OrderRefund",
        "version": "2.0.0",
        "amount": "1",
        "orderId": order_id,
        "status": "SUCCESS",
    }
    fields["hmac"] = Md5Signer(PUBLIC_TEST_KEY).sign(signing_source("OrderRefundResponse", fields))
    return encode_answer(REGISTRY["OrderRefundResponse"], fields)


def _answering(answer: bytes) -> tuple[_AsyncMock, list[httpx.Request]]:
    """A gateway that answers every request with ``answer``, and the requests it saw."""
    seen: list[httpx.Request] = []

    async def gateway(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=answer)

    return _AsyncMock(gateway), seen


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "field"),
    [
        (_refund_answer("OTHER"), "orderId"),
        (_refund_answer("ASKED", merchant_id="888000000000009"), "merchantId"),
    ],
    ids=["another-order", "another-merchant"],
)
async def test_a_refund_answer_must_be_for_this_order_and_merchant(
    answer: bytes, field: str
) -> None:
    """A verified refund answer about another order or merchant is refused, maybe_sent."""
    gateway, seen = _answering(answer)
    async with make_client(gateway, character_set=CharacterSet.GBK) as client:
        with pytest.raises(UnexpectedMessageError) as caught:
            await client.refund("ASKED", 1, request_id="RF2")

    assert (field, True, "RF2") == (
        caught.value.field,
        caught.value.maybe_sent,
        caught.value.request_id,
    )
    assert "application/x-www-form-urlencoded; charset=GBK" == seen[0].headers["content-type"]


@pytest.mark.anyio
async def test_a_refund_refused_before_sending_names_its_request() -> None:
    """A zero refund fails before any I/O, with the operation, order and request id."""
    async with make_client(httpx.MockTransport(lambda r: httpx.Response(500))) as client:
        with pytest.raises(ValidationError) as caught:
            await client.refund("ORD5", 0, request_id="RF5")

    error = caught.value
    assert ("refund", "ORD5", "RF5", False) == (
        error.operation,
        error.order_id,
        error.request_id,
        error.maybe_sent,
    )


@pytest.mark.parametrize("traced", [False, True], ids=["untraced", "traced"])
def test_the_clients_verify_notification_checks_merchant_and_charset(traced: bool) -> None:
    """Its own merchant id is required, and the charset given is the one read."""
    from opentelemetry.sdk.trace import TracerProvider

    extra = {"tracer_provider": TracerProvider()} if traced else {}
    client = make_client(httpx.MockTransport(lambda r: httpx.Response(500)), **extra)
    body = sign_notification(order_id="V1", amount=5, message="支付成功")

    assert "支付成功" == client.verify_notification(body).message
    with pytest.raises((DecodeError, SignatureError)):  # UTF-8 read as GBK is not what was signed
        client.verify_notification(body, charset="gbk")
    other = sign_notification(order_id="V2", amount=5, merchant_id="888000000000009")
    with pytest.raises(UnexpectedMessageError) as caught:
        client.verify_notification(other)
    assert "merchantId" == caught.value.field


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (b"a" * 700, "a" * 200),
        (b"<html>" + b"\xff\xfe" + b"</html>", "<html>\ufffd\ufffd</html>"),
        (b"hmac=" + b"0" * 594 + b"&b" + b"c" * 100, "hmac=[redacted]&"),
        (b"x=1&hmac=" + b"0" * 32 + b"&y=2", "x=1&hmac=[redacted]&y=2"),
    ],
    ids=["long", "not-utf8", "cut-at-600-bytes", "secret"],
)
def test_an_answers_excerpt_is_600_bytes_redacted_then_200_characters(
    body: bytes, shown: str
) -> None:
    """The first 600 bytes, decoded forgivingly, secrets blanked, then cut to 200 characters."""
    assert shown == _excerpt(body)


def _query_answer(order_id: str, merchant_id: str = PUBLIC_TEST_MERCHANT) -> bytes:
    from tests.core.test_protocol import query_answer

    return query_answer(orderId=order_id, merchantId=merchant_id)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "field"),
    [
        (_query_answer("OTHER"), "orderId"),
        (_query_answer("ASKED", merchant_id="888000000000009"), "merchantId"),
    ],
    ids=["another-order", "another-merchant"],
)
async def test_a_query_answer_must_be_for_this_order_and_merchant(
    answer: bytes, field: str
) -> None:
    """A verified query answer about another order or merchant is refused."""
    gateway, seen = _answering(answer)
    async with make_client(gateway, character_set=CharacterSet.GB2312) as client:
        with pytest.raises(UnexpectedMessageError) as caught:
            await client.query_order("ASKED", request_id="QY2")

    assert (field, "query_order", "ASKED", "QY2") == (
        caught.value.field,
        caught.value.operation,
        caught.value.order_id,
        caught.value.request_id,
    )
    assert "application/x-www-form-urlencoded; charset=GB2312" == seen[0].headers["content-type"]


@pytest.mark.anyio
async def test_a_query_refused_before_sending_names_its_request() -> None:
    """An orderId the rules refuse fails before any I/O, with operation, order and request."""
    async with make_client(httpx.MockTransport(lambda r: httpx.Response(500))) as client:
        with pytest.raises(ValidationError) as caught:
            await client.query_order("x" * 80, request_id="QY5")

    error = caught.value
    assert ("query_order", "x" * 80, "QY5", False) == (
        error.operation,
        error.order_id,
        error.request_id,
        error.maybe_sent,
    )


# -- the answer's first checks, and its debug line ------------------------------------------------


def _prepared() -> Any:
    client = make_client(httpx.MockTransport(lambda r: httpx.Response(500)))
    return client.prepare_payment(valid_order(), ip_address="1.2.3.4", request_id="CHK1")


@pytest.mark.parametrize(
    ("status", "maybe_sent"),
    [(199, False), (300, False), (404, False), (499, False), (500, True), (503, True)],
)
def test_a_status_outside_2xx_is_an_http_status_error(status: int, maybe_sent: bool) -> None:
    """Anything but 2xx: a 5xx may come after processing, a 3xx or 4xx never."""
    with pytest.raises(HTTPStatusError) as caught:
        check_answer(status, b"<h1>no</h1>", _prepared())

    error = caught.value
    assert (status, maybe_sent, "201103071740044998", "CHK1") == (
        error.status_code,
        error.maybe_sent,
        error.order_id,
        error.request_id,
    )
    assert str(error).startswith(f"gateway answered HTTP {status}: '<h1>no</h1>'")


@pytest.mark.parametrize("status", [200, 201, 299])
@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "the gateway's answer is empty"),
        (b" \r\n\t", "the gateway's answer is empty"),
        (b"<html>busy</html>", "the answer is an HTML page, not a gateway answer"),
        (b"\r\n  <!DOCTYPE html>", "the answer is an HTML page, not a gateway answer"),
    ],
)
def test_an_empty_or_html_2xx_answer_is_a_decode_error(status: int, body: bytes, why: str) -> None:
    """Empty or a page (even after leading whitespace): DecodeError, maybe_sent, with status."""
    with pytest.raises(DecodeError) as caught:
        check_answer(status, body, _prepared())

    assert why == str(caught.value).split(" (HTTP")[0]
    assert (status, True) == (caught.value.status_code, caught.value.maybe_sent)


@pytest.mark.parametrize("status", [200, 299])
def test_a_form_answer_passes_the_first_checks(status: int) -> None:
    """A key=value body with a 2xx status goes on to verification."""
    assert check_answer(status, b"  merchantId=1&returnCode=0", _prepared()) is None


class ScriptedTime:
    """The client's view of time.perf_counter: 1000 s, then a quarter second more each call."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        self.now += 0.25
        return self.now

    def __getattr__(self, name: str) -> Any:
        import time

        return getattr(time, name)


@pytest.mark.anyio
async def test_the_answer_is_logged_at_debug_with_its_elapsed_time(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One line per answer: message, order, request, status, returnCode, milliseconds."""

    monkeypatch.setattr(_engine, "time", ScriptedTime())
    caplog.set_level(logging.DEBUG, logger="cmpay_async")
    async with make_client(httpx.ASGITransport(app=Sandbox())) as client:
        await client.create_payment(valid_order(), ip_address="1.2.3.4", request_id="LOG2")

    assert ["-> DirectPayConfirm orderId=201103071740044998 requestId=LOG2 attempt=1"] == [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("-> ")
    ]
    _assert_one_answer_line(
        caplog,
        "<- DirectPayConfirm orderId=201103071740044998 requestId=LOG2 status=200 "
        "returnCode=000000",
    )


def _assert_one_answer_line(caplog: pytest.LogCaptureFixture, head: str) -> None:
    """Exactly one '<- ' line: ``head``, then the elapsed time in ScriptedTime's steps."""

    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("<- ")]
    found = re.fullmatch(re.escape(head) + r" elapsed=(\d+\.\d)ms", line)
    assert found is not None, line
    elapsed = float(found.group(1))
    assert 0 < elapsed < 100_000  # quarter seconds of the scripted clock, not its reading
    assert 0 == elapsed % 250


@pytest.mark.anyio
async def test_a_client_without_a_total_deadline_still_pays() -> None:
    """Timeouts(total=None) leaves the call unbounded as a whole (each phase keeps its own)."""

    sandbox = Sandbox()
    async with make_client(
        httpx.ASGITransport(app=sandbox), timeouts=Timeouts(total=None)
    ) as client:
        payment = await client.create_payment(valid_order(), ip_address="1.2.3.4")

    assert "000000" == payment.return_code
    assert "pending" == sandbox.order(valid_order().order_id).state  # placed, not yet paid


def _payment_answer(**change: str) -> bytes:
    fields = {
        "merchantId": PUBLIC_TEST_MERCHANT,
        "requestId": "PAY2",
        "signType": "MD5",
        "type": "DirectPayConfirm",
        "version": "2.0.0",
        "returnCode": "000000",
        "message": "SUCCESS",
        "payUrl": "url<hi:=>https://pay.example/c<hi:$$>method<hi:=>post<hi:$$>sessionId<hi:=>S1",
        **change,
    }
    fields["hmac"] = Md5Signer(PUBLIC_TEST_KEY).sign(
        signing_source("DirectPayConfirmResponse", fields)
    )
    return encode_answer(REGISTRY["DirectPayConfirmResponse"], fields)


@pytest.mark.anyio
@pytest.mark.parametrize("field", ["merchantId", "requestId"])
async def test_a_payment_answer_must_be_for_this_merchant_and_request(field: str) -> None:
    """A verified payment answer for another merchant or request is refused, maybe_sent."""
    gateway, _ = _answering(_payment_answer(**{field: "SOMEONE-ELSE"}))
    async with make_client(gateway) as client:
        with pytest.raises(UnexpectedMessageError) as caught:
            await client.create_payment(valid_order(), ip_address="1.2.3.4", request_id="PAY2")

    assert (field, True) == (caught.value.field, caught.value.maybe_sent)


@pytest.mark.anyio
async def test_order_dates_default_to_today_in_china() -> None:
    """At 17:30 UTC it is already the next day in China: orderDate and merAcDate say so."""
    late = dt.datetime(2026, 11, 26, 17, 30, tzinfo=dt.timezone.utc)
    client = make_client(httpx.MockTransport(lambda r: httpx.Response(500)), clock=lambda: late)
    order = attrs.evolve(valid_order(), order_date=None, mer_ac_date=None)

    request = client.prepare_payment(order, ip_address="1.2.3.4")

    assert ("20261127", "20261127") == (request.fields["orderDate"], request.fields["merAcDate"])


@pytest.mark.anyio
async def test_a_failed_attempt_is_logged_at_debug_with_its_verdict(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One line per failed attempt: message, order, request, error class, maybe_sent, ms."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    monkeypatch.setattr(_engine, "time", ScriptedTime())
    caplog.set_level(logging.DEBUG, logger="cmpay_async")
    async with make_client(httpx.MockTransport(refuse), retry=RetryPolicy(attempts=1)) as client:
        with pytest.raises(ConnectError):
            await client.create_payment(valid_order(), ip_address="1.2.3.4", request_id="LOG3")

    _assert_one_answer_line(
        caplog,
        "<- DirectPayConfirm orderId=201103071740044998 requestId=LOG3 failed: ConnectError "
        "maybe_sent=False",
    )


@pytest.mark.anyio
async def test_a_query_that_may_have_been_sent_once_stays_maybe_sent() -> None:
    """Read timeout (maybe sent), then two refused connections (never sent): the last error
    is ConnectError, yet maybe_sent, because the first attempt may have reached the gateway."""
    failures: list[Exception] = [
        httpx.ReadTimeout("no answer"),
        httpx.ConnectError("refused"),
        httpx.ConnectError("refused"),
    ]

    def gateway(request: httpx.Request) -> httpx.Response:
        raise failures.pop(0)

    async with make_client(httpx.MockTransport(gateway)) as client:
        with pytest.raises(ConnectError) as caught:
            await client.query_order("Q1")

    assert ([], True) == (failures, caught.value.maybe_sent)


@pytest.mark.anyio
async def test_a_closed_client_says_so_and_what_to_do() -> None:
    """Every call on a closed client raises ClientClosedError with the way out."""
    client = make_client(httpx.MockTransport(lambda r: httpx.Response(500)))
    await client.aclose()

    with pytest.raises(ClientClosedError) as caught:
        await client.query_order("Q1")

    assert str(caught.value).startswith("this CmpayClient is closed; create a new one")
    assert caught.value.maybe_sent is False


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"merchant_id": ""}, "merchant_id is empty"),
        ({"signer": "rsa"}, "an RSA signer needs verifier=RsaVerifier(<gateway public key>)"),
        ({"http_client": "own"}, "pass either http_client or transport, not both"),
        ({"endpoint": "ftp://gateway.example/ips"}, "endpoint must be an http(s) URL"),
        ({"endpoint": "https:///ips/cmpayService"}, "endpoint must be an http(s) URL"),
        ({"max_connections": 0}, "max_connections must be at least 1"),
    ],
)
def test_each_configuration_mistake_is_named(change: dict[str, Any], message: str) -> None:
    """A client configured wrongly is refused at once, saying what is wrong."""

    if change.get("signer") == "rsa":
        change["signer"] = RsaSigner(rsa_key())
    if change.get("http_client") == "own":
        change["http_client"] = httpx.AsyncClient()
    with pytest.raises(ConfigurationError) as caught:
        make_client(httpx.MockTransport(lambda r: httpx.Response(500)), **change)

    assert message == str(caught.value)
    assert caught.value.maybe_sent is False


def test_an_order_without_return_addresses_needs_the_clients() -> None:
    """Neither the order nor the client gives callback and notify URLs: both are required."""
    client = make_client(httpx.MockTransport(lambda r: httpx.Response(500)))
    bare = attrs.evolve(valid_order(), callback_url="", notify_url="")

    with pytest.raises(ValidationError) as caught:
        client.prepare_payment(bare, ip_address="1.2.3.4")

    assert "2 problems: callbackUrl: required; notifyUrl: required" == str(caught.value)


def test_extra_bank_codes_admit_a_bank_the_appendix_lacks() -> None:
    """A bank code outside appendix 9.1 is refused unless the client lists it."""
    order = attrs.evolve(valid_order(), bank_abbr="NEWBANK")
    refusing = make_client(httpx.MockTransport(lambda r: httpx.Response(500)))
    admitting = make_client(
        httpx.MockTransport(lambda r: httpx.Response(500)), extra_bank_codes={"NEWBANK"}
    )

    with pytest.raises(ValidationError, match="unknown bank code 'NEWBANK'"):
        refusing.prepare_payment(order, ip_address="1.2.3.4")
    assert "NEWBANK" == admitting.prepare_payment(order, ip_address="1.2.3.4").fields["bankAbbr"]


@pytest.mark.parametrize("phase", ["connect", "read", "write", "pool", "total"])
@pytest.mark.parametrize("seconds", [0, -1.5])
def test_a_timeout_must_be_a_positive_number_of_seconds(phase: str, seconds: float) -> None:
    """Zero or a negative number for any phase is refused, naming the phase."""

    with pytest.raises(ConfigurationError) as caught:
        Timeouts(**{phase: seconds})

    assert f"Timeouts.{phase} must be a positive number of seconds" == str(caught.value)


@pytest.mark.anyio
async def test_closing_twice_closes_the_transport_once() -> None:
    """The transport a client was given is closed with the client, and only once."""
    closed: list[str] = []

    class Recording(httpx.MockTransport):
        async def aclose(self) -> None:
            closed.append("closed")

    client = make_client(Recording(lambda r: httpx.Response(500)))
    await client.aclose()
    await client.aclose()

    assert ["closed"] == closed


@pytest.mark.anyio
async def test_by_default_twenty_requests_are_in_flight_at_once() -> None:
    """With max_connections left at its default, the 21st concurrent call waits for one of
    20 slots (and here gives up after the pool timeout, never sent)."""

    arrived = 0
    release = anyio.Event()

    async def gateway(request: httpx.Request) -> httpx.Response:
        nonlocal arrived
        arrived += 1
        await release.wait()
        return httpx.Response(500)

    refused: list[TransportTimeoutError] = []

    async def pay(client: CmpayClient, n: int) -> None:
        try:
            await client.create_payment(
                attrs.evolve(valid_order(), order_id=f"LIMIT{n}"), ip_address="1.2.3.4"
            )
        except TransportTimeoutError as exc:
            refused.append(exc)
        except HTTPStatusError:
            pass

    client = make_client(_AsyncMock(gateway), timeouts=Timeouts(pool=0.2, total=5))
    async with client, anyio.create_task_group() as tg:
        for n in range(21):
            tg.start_soon(pay, client, n)
        with anyio.fail_after(3):  # a client admitting all 21 fails here, not at its deadline
            while not refused:
                await anyio.sleep(0.01)  # waiting for a condition, not for time
        release.set()

    assert 20 == arrived
    (error,) = refused
    assert str(error).startswith("waited 0.2 s for one of the client's 20 request slots")


@pytest.mark.anyio
async def test_a_retry_queued_for_a_slot_after_a_sent_attempt_says_maybe_sent() -> None:
    """A query whose first attempt may have been sent, then whose retry finds the only slot
    taken until the pool timeout: the error says maybe_sent, in its flag and its words."""

    release = anyio.Event()

    async def holder() -> None:
        with pytest.raises(HTTPStatusError):
            await client.create_payment(valid_order(), ip_address="1.2.3.4")

    async def gateway(request: httpx.Request) -> httpx.Response:
        if b"OrderQuery" not in request.content:
            await release.wait()  # the payment holds the only slot until released
            return httpx.Response(500)
        tg.start_soon(holder)
        slots = (await client._pools.current()).slots
        with anyio.fail_after(5):
            while slots.statistics().tasks_waiting < 1:
                await anyio.sleep(0.01)  # waiting for the payment to queue, not for time
        raise httpx.ReadTimeout("no answer")  # the query may have been read

    client = make_client(
        _AsyncMock(gateway), timeouts=Timeouts(pool=0.2, total=5), max_connections=1
    )
    async with client, anyio.create_task_group() as tg:
        with pytest.raises(TransportTimeoutError) as caught:
            await client.query_order("Q-SLOT")
        release.set()

    assert caught.value.maybe_sent is True
    assert str(caught.value).startswith(
        "waited 0.2 s for one of the client's 1 request slots (max_connections); "
        "the request may have reached the gateway"
    )
