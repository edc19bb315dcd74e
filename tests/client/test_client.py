"""CmpayClient against the sandbox gateway in-process (ASGI) and httpx MockTransports."""

from __future__ import annotations

import inspect
import logging
import random
from typing import Any

import anyio
import httpx
import pytest

import cmpay_async._client as client_module
from cmpay_async import (
    RETURN_CODES,
    SUCCESS_CODES,
    Channel,
    CharacterSet,
    ClientClosedError,
    CmpayClient,
    CmpayError,
    ConfigurationError,
    ConnectError,
    DecodeError,
    GatewayError,
    HTTPStatusError,
    Md5Signer,
    PayloadTooLargeError,
    RetryPolicy,
    RsaSigner,
    RsaVerifier,
    SignatureError,
    Timeouts,
    TransportError,
    TransportTimeoutError,
    ValidationError,
    decode_payload,
    signing_source,
)
from cmpay_async._observe import _return_code
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, Merchant, Sandbox
from tests.support.helpers import ENDPOINT, _AsyncMock, make_client, rsa_key, valid_order

pytestmark = pytest.mark.anyio


async def test_happy_path_returns_verified_redirect(client: CmpayClient, sandbox: Sandbox) -> None:
    """An order comes back with a payUrl pointing at the sandbox cashier."""
    response = await client.create_payment(valid_order(), ip_address="203.0.113.7")

    order = sandbox.order("201103071740044998")
    assert order.session_id == response.pay_url.session_id
    # In-process, pay links are on a host that never resolves, never the client's endpoint.
    assert "http://cmpay-sandbox.invalid/ips/FormTrans3" == response.pay_url.url
    assert response.pay_url.redirect_url.endswith(f"?sessionId={order.session_id}")
    assert "20261126" == order.fields["orderDate"]
    assert 30 == len(response.request_id)
    assert response.request_id.startswith("20261126093000")


async def test_posted_body_field_order_and_signature(sandbox: Sandbox) -> None:
    """The gateway side sees the registry's field order and a signature it can verify."""
    seen: list[httpx.Request] = []
    inner = httpx.ASGITransport(app=sandbox)

    async def spy(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return await inner.handle_async_request(request)

    async with make_client(_AsyncMock(spy)) as c:
        await c.create_payment(valid_order(), ip_address="203.0.113.7")

    body = seen[0].content
    fields = decode_payload(body, form=True, charset="utf-8")
    names = [pair.split(b"=")[0].decode() for pair in body.split(b"&")]
    assert names[0] == "characterSet"
    assert names[-1] == "hmac"
    assert "application/x-www-form-urlencoded; charset=UTF-8" == seen[0].headers["content-type"]
    Md5Signer(PUBLIC_TEST_KEY).verify(signing_source("DirectPayConfirm", fields), fields["hmac"])


@pytest.mark.parametrize("charset", list(CharacterSet))
async def test_chinese_product_name_in_each_charset(
    sandbox: Sandbox, charset: CharacterSet
) -> None:
    """The gateway decodes the body in the declared charset; the hmac covers the UTF-8 text."""
    async with make_client(httpx.ASGITransport(app=sandbox), character_set=charset) as c:
        await c.create_payment(valid_order(product_name="中文咖啡"), ip_address="1.2.3.4")

    order = sandbox.order("201103071740044998")
    assert "中文咖啡" == order.fields["productName"]
    assert charset.value == order.fields["characterSet"]


@pytest.mark.parametrize("code", sorted(set(RETURN_CODES) - SUCCESS_CODES))
async def test_every_failure_code_raises_gateway_error(
    client: CmpayClient, sandbox: Sandbox, code: str
) -> None:
    """Each appendix failure code becomes a GatewayError carrying the code and explanation."""
    sandbox.fail_next(code)

    with pytest.raises(GatewayError) as info:
        await client.create_payment(valid_order(), ip_address="1.2.3.4")

    assert code == info.value.code
    assert RETURN_CODES[code].english == info.value.explanation
    assert RETURN_CODES[code].chinese in info.value.gateway_message


@pytest.mark.parametrize("code", ["IPS0008", "IPS0001"])
async def test_signature_and_merchant_codes_carry_hints(sandbox: Sandbox, code: str) -> None:
    """A wrong key gives IPS0008, an unknown merchant IPS0001; both with a hint."""
    kw: dict[str, Any] = (
        {"signer": Md5Signer("wrong-key-not-the-merchants-key")}
        if code == "IPS0008"
        else {"merchant_id": "999999999999999"}
    )
    async with make_client(httpx.ASGITransport(app=sandbox), **kw) as c:
        with pytest.raises(GatewayError) as info:
            await c.create_payment(valid_order(), ip_address="1.2.3.4")

    assert code == info.value.code
    assert info.value.hint


async def test_gateway_field_checks_match_appendix_codes(client: CmpayClient) -> None:
    """A locally valid order the gateway refuses for a repeated orderId gives RPM22208."""
    await client.create_payment(valid_order(), ip_address="1.2.3.4")

    with pytest.raises(GatewayError, match="RPM22208"):
        await client.create_payment(valid_order(), ip_address="1.2.3.4")


async def test_tampered_answer_raises_signature_error(
    client: CmpayClient, sandbox: Sandbox
) -> None:
    """An answer whose signature does not verify raises and returns nothing."""
    sandbox.tamper_next()

    with pytest.raises(SignatureError):
        await client.create_payment(valid_order(), ip_address="1.2.3.4")


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, b"<html><body>Service Unavailable</body></html>", DecodeError),
        (200, b"", DecodeError),
        (200, b"   \r\n", DecodeError),
        (500, b"<html>Internal Server Error</html>", HTTPStatusError),
        (404, b"Not Found", HTTPStatusError),
        (200, b"merchantId=1&returnCode=000000&hmac=abc", SignatureError),
    ],
)
async def test_broken_answers_raise_with_status_and_excerpt(
    client: CmpayClient, sandbox: Sandbox, status: int, body: bytes, error: type[Exception]
) -> None:
    """HTML, empty, non-2xx and truncated answers raise errors carrying status and excerpt."""
    sandbox.answer_next(status, body)

    with pytest.raises(error) as info:
        await client.create_payment(valid_order(), ip_address="1.2.3.4")

    exc: Any = info.value
    assert status == exc.status_code
    assert body[:20].decode() in (exc.excerpt or "") or not body.strip()
    assert "hmac=abc" not in str(exc)


async def test_5xx_is_maybe_sent_and_4xx_is_not(client: CmpayClient, sandbox: Sandbox) -> None:
    """A 500 may have been processed; a 404 was refused unread."""
    sandbox.answer_next(500, b"oops")
    with pytest.raises(HTTPStatusError) as info:
        await client.create_payment(valid_order(order_id="A"), ip_address="1.2.3.4")
    assert info.value.maybe_sent

    sandbox.answer_next(404, b"oops")
    with pytest.raises(HTTPStatusError) as info:
        await client.create_payment(valid_order(order_id="B"), ip_address="1.2.3.4")
    assert not info.value.maybe_sent


async def test_oversize_answer_is_refused() -> None:
    """An answer over 64 KiB raises without being read whole."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"a=" + b"x" * 70_000)

    async with make_client(httpx.MockTransport(handler)) as c:
        with pytest.raises(PayloadTooLargeError):
            await c.create_payment(valid_order(), ip_address="1.2.3.4")


def flaky(sandbox: Sandbox, failures: list[Exception]) -> _AsyncMock:
    """A transport that raises the given errors first, then reaches the sandbox."""
    inner = httpx.ASGITransport(app=sandbox)

    async def handler(request: httpx.Request) -> httpx.Response:
        if failures:
            raise failures.pop(0)
        return await inner.handle_async_request(request)

    return _AsyncMock(handler)


async def test_connect_failures_are_retried_then_succeed(sandbox: Sandbox) -> None:
    """Refused connections, DNS failures and pool timeouts are retried; then the order goes."""
    failures: list[Exception] = [
        httpx.ConnectError("connection refused"),
        httpx.PoolTimeout("pool"),
    ]
    async with make_client(flaky(sandbox, failures)) as c:
        response = await c.create_payment(valid_order(), ip_address="1.2.3.4")

    assert [] == failures
    assert 1 == sandbox.requests_seen
    assert response.pay_url.session_id


async def test_connect_failures_give_up_after_the_policy(sandbox: Sandbox) -> None:
    """After the last attempt the ConnectError says the request never left."""
    failures: list[Exception] = [httpx.ConnectError("refused")] * 3
    async with make_client(flaky(sandbox, failures)) as c:
        with pytest.raises(ConnectError) as info:
            await c.create_payment(valid_order(), ip_address="1.2.3.4")

    assert not info.value.maybe_sent
    assert 0 == sandbox.requests_seen


async def test_no_retry_starts_whose_backoff_would_outlast_the_deadline(
    sandbox: Sandbox,
) -> None:
    """A refused connection with 1 s of the call's deadline left and a backoff of 5 to 10 s:
    the call gives up at once with the ConnectError (never sent), one attempt made, rather
    than pausing past its deadline."""
    failures: list[Exception] = [httpx.ConnectError("refused")] * 3
    slow = RetryPolicy(attempts=3, initial_backoff=10.0, max_backoff=10.0)
    async with make_client(flaky(sandbox, failures), retry=slow, timeouts=Timeouts(total=1.0)) as c:
        # A guard only: the call must end long before a 5 s pause could.
        with anyio.fail_after(3), pytest.raises(ConnectError) as info:
            await c.create_payment(valid_order(), ip_address="1.2.3.4")

    assert 2 == len(failures)  # one attempt
    assert not info.value.maybe_sent
    assert 0 == sandbox.requests_seen


@pytest.mark.parametrize(
    "exc",
    [httpx.ReadTimeout("read"), httpx.WriteTimeout("write"), httpx.RemoteProtocolError("drop")],
)
async def test_ambiguous_failures_are_not_resent(sandbox: Sandbox, exc: Exception) -> None:
    """After a read timeout or a dropped connection nothing is resent; maybe_sent says so."""
    calls = 0
    inner = httpx.ASGITransport(app=sandbox)

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        await inner.handle_async_request(request)  # the gateway did process it
        raise exc

    async with make_client(_AsyncMock(handler)) as c:
        with pytest.raises(TransportError) as info:
            await c.create_payment(valid_order(), ip_address="1.2.3.4")

    assert 1 == calls
    assert info.value.maybe_sent
    assert "query the order" in str(info.value)
    assert "201103071740044998" == info.value.order_id
    assert 1 == len(sandbox.orders)


async def test_read_timeout_is_a_builtin_timeout_error(sandbox: Sandbox) -> None:
    """Timeouts are TimeoutError too, so generic handlers catch them."""
    async with make_client(flaky(sandbox, [httpx.ReadTimeout("slow")])) as c:
        with pytest.raises(TimeoutError) as info:
            await c.create_payment(valid_order(), ip_address="1.2.3.4")

    assert isinstance(info.value, TransportTimeoutError)


def _httpx_error_classes() -> list[type[Exception]]:
    classes = [
        obj
        for obj in vars(httpx).values()
        if inspect.isclass(obj)
        and issubclass(obj, Exception)
        and obj.__module__.startswith("httpx")
        and (issubclass(obj, httpx.HTTPError) or obj is httpx.InvalidURL)
        and obj is not httpx.HTTPStatusError  # only raised by raise_for_status, never called
    ]
    return sorted(classes, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", _httpx_error_classes(), ids=lambda c: c.__name__)
async def test_no_httpx_exception_escapes_unmapped(sandbox: Sandbox, cls: type[Exception]) -> None:
    """Every httpx error raised by the transport comes out as a cmpay TransportError."""

    async def handler(request: httpx.Request) -> httpx.Response:
        raise cls("boom")

    async with make_client(_AsyncMock(handler), retry=RetryPolicy(attempts=1)) as c:
        with pytest.raises(CmpayError) as info:
            await c.create_payment(valid_order(), ip_address="1.2.3.4")

    assert isinstance(info.value, TransportError)
    assert not isinstance(info.value, httpx.HTTPError)


async def test_validation_happens_before_any_io(sandbox: Sandbox) -> None:
    """An invalid order raises ValidationError without a request being made."""
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise AssertionError("must not be called")

    async with make_client(_AsyncMock(handler)) as c:
        with pytest.raises(ValidationError, match="productName: required"):
            await c.create_payment(valid_order(product_name=""), ip_address="1.2.3.4")
    assert 0 == calls


async def test_closed_client_refuses_to_send(sandbox: Sandbox) -> None:
    """After aclose() every call raises ClientClosedError; aclose is idempotent."""
    c = make_client(httpx.ASGITransport(app=sandbox))
    await c.aclose()
    await c.aclose()

    with pytest.raises(ClientClosedError):
        await c.create_payment(valid_order(), ip_address="1.2.3.4")
    with pytest.raises(ClientClosedError):
        async with c:
            pass


async def test_callers_http_client_is_not_closed(sandbox: Sandbox) -> None:
    """A caller's httpx.AsyncClient stays open after the CmpayClient closes."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox)) as http:
        async with CmpayClient(
            merchant_id=PUBLIC_TEST_MERCHANT,
            signer=Md5Signer(PUBLIC_TEST_KEY),
            endpoint=ENDPOINT,
            http_client=http,
        ) as c:
            await c.create_payment(valid_order(), ip_address="1.2.3.4")
        assert not http.is_closed


async def test_a_callers_http_client_gets_our_timeouts_per_request(sandbox: Sandbox) -> None:
    """The configured Timeouts go with every request, over a caller's client's own defaults."""
    seen: list[dict[str, float | None]] = []
    inner = httpx.ASGITransport(app=sandbox)

    async def spy(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return await inner.handle_async_request(request)

    async with (
        httpx.AsyncClient(transport=_AsyncMock(spy), timeout=99.0) as http,
        CmpayClient(
            merchant_id=PUBLIC_TEST_MERCHANT,
            signer=Md5Signer(PUBLIC_TEST_KEY),
            endpoint=ENDPOINT,
            http_client=http,
            timeouts=Timeouts(connect=1.5, read=2.5, write=3.5, pool=4.5),
        ) as c,
    ):
        await c.create_payment(valid_order(), ip_address="1.2.3.4")

    assert [{"connect": 1.5, "read": 2.5, "write": 3.5, "pool": 4.5}] == seen


async def test_rsa_client_round_trip() -> None:
    """RSA both ways: the merchant signs with its key, the gateway answers with its own."""
    merchant_key, gateway_key = RsaSigner(rsa_key()), RsaSigner(rsa_key(2048))
    sandbox = Sandbox(
        merchants=[
            Merchant.rsa(
                "RSA001",
                merchant_public=RsaVerifier(merchant_key.public_key),
                gateway=gateway_key,
            )
        ]
    )
    async with make_client(
        httpx.ASGITransport(app=sandbox),
        merchant_id="RSA001",
        signer=merchant_key,
        verifier=RsaVerifier(gateway_key.public_key),
    ) as c:
        response = await c.create_payment(valid_order(), ip_address="1.2.3.4")

    assert "RSA" == response.sign_type.value


def test_configuration_errors() -> None:
    """RSA without a verifier, mismatched kinds and bad endpoints are refused early."""
    rsa_signer = RsaSigner(rsa_key())
    with pytest.raises(ConfigurationError, match="verifier"):
        CmpayClient(merchant_id="M", signer=rsa_signer)
    with pytest.raises(ConfigurationError, match="signs RSA but verifier checks MD5"):
        CmpayClient(
            merchant_id="M", signer=rsa_signer, verifier=Md5Signer("k-not-the-merchants-key")
        )
    with pytest.raises(ConfigurationError, match="endpoint"):
        CmpayClient(
            merchant_id="M", signer=Md5Signer("k-not-the-merchants-key"), endpoint="ftp://x"
        )


async def test_thousand_concurrent_payments_no_cross_talk(sandbox: Sandbox) -> None:
    """1,000 concurrent orders on one client: each answer is its own, request ids unique."""
    results: dict[str, Any] = {}
    async with make_client(httpx.ASGITransport(app=sandbox), clock=client_module._china_now) as c:

        async def one(i: int) -> None:
            order_id = f"ORDER{i:05d}"
            response = await c.create_payment(valid_order(order_id=order_id), ip_address="10.0.0.1")
            results[order_id] = response

        async with anyio.create_task_group() as tg:
            for i in range(1000):
                tg.start_soon(one, i)

    assert 1000 == len(results)
    assert 1000 == len({r.request_id for r in results.values()})
    for order_id, response in results.items():
        assert sandbox.order(order_id).session_id == response.pay_url.session_id
        assert sandbox.order(order_id).request_id == response.request_id


async def test_logs_hold_no_key_hmac_or_phone(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """One debug line per request and answer; no key, hmac or full phone number."""
    caplog.set_level(logging.DEBUG, logger="cmpay_async")
    async with make_client(httpx.ASGITransport(app=sandbox)) as c:
        prepared = c.prepare_payment(
            valid_order(user_token="13800138000"), ip_address="1.2.3.4", request_id="LOGREQ"
        )
        await c.create_payment(
            valid_order(user_token="13800138000"), ip_address="1.2.3.4", request_id="LOGREQ"
        )

    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("cmpay_async"))
    assert "LOGREQ" in text
    assert "returnCode=000000" in text
    assert PUBLIC_TEST_KEY not in text
    assert prepared.fields["hmac"] not in text
    assert "13800138000" not in text
    assert 2 == sum(1 for r in caplog.records if r.name == "cmpay_async")


@pytest.mark.parametrize(
    ("body", "logged"),
    [
        (b"merchantId=1&returnCode=000000&message=OK", "000000"),
        (b"returnCode=IPS0008&merchantId=1", "IPS0008"),
        (b"merchantId=1&returnCode=MCG00000", "MCG00000"),
        (b"returnCode=A&message=returnCode=B", "A"),
        (b"returnCode=" + b"9" * 40, "9" * 20),
        (b"returnCode=\xff1&x=2", "\ufffd1"),
        (b"merchantId=1&message=no code", "-"),
        (b"", "-"),
    ],
)
def test_the_debug_line_names_the_answers_first_return_code(body: bytes, logged: str) -> None:
    """The log's returnCode: the first one, up to `&`, at most 20 characters, never raising."""
    assert logged == _return_code(body)


def test_backoff_is_capped_and_jittered() -> None:
    """Backoff doubles up to the cap and stays within half to full of it."""
    policy = RetryPolicy(initial_backoff=1, max_backoff=4)
    rng = random.Random(1)

    delays = [policy.backoff(n, rng) for n in (1, 2, 3, 4, 5)]

    for delay, cap in zip(delays, [1, 2, 4, 4, 4], strict=True):
        assert cap / 2 <= delay <= cap


def test_client_verifies_notifications_with_its_own_key_and_merchant() -> None:
    """client.verify_notification checks the signature and the merchant id it was made with."""
    from cmpay_async.testing import sign_notification

    client = CmpayClient(merchant_id=PUBLIC_TEST_MERCHANT, signer=Md5Signer(PUBLIC_TEST_KEY))
    other = CmpayClient(merchant_id="OTHER", signer=Md5Signer(PUBLIC_TEST_KEY))
    body = sign_notification(order_id="N1")

    assert "N1" == client.verify_notification(body).order_id
    with pytest.raises(CmpayError, match="merchantId"):
        other.verify_notification(body)


def test_channel_may_be_given_as_its_interface_name() -> None:
    """``channel`` takes a ``Channel`` or the interface name it stands for (section 5's
    ``type``); any other value is refused before anything is signed."""
    c = make_client(httpx.MockTransport(lambda request: httpx.Response(500)))
    for given, wire in (
        (Channel.WAP, b"type=WAPDirectPayConfirm&"),
        ("WAPDirectPayConfirm", b"type=WAPDirectPayConfirm&"),
        (Channel.WEB, b"type=DirectPayConfirm&"),
        ("DirectPayConfirm", b"type=DirectPayConfirm&"),
    ):
        prepared = c.prepare_payment(
            valid_order(),
            ip_address="1.2.3.4",
            request_id="CHANNEL1",
            channel=given,  # type: ignore[arg-type]
        )
        assert wire in prepared.body
    with pytest.raises(ValueError, match="'WAP' is not a valid Channel"):
        c.prepare_payment(
            valid_order(),
            ip_address="1.2.3.4",
            request_id="CHANNEL1",
            channel="WAP",  # type: ignore[arg-type]
        )
