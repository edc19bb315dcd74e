"""Endpoints and secrets: plain HTTP only to loopback unless opted in, no URL password shown,
and text nobody vouches for (an error page, an unverified refusal) redacted by value."""

from __future__ import annotations

import logging
import pickle
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from cmpay_async import (
    BlockingCmpayClient,
    CmpayClient,
    ConfigurationError,
    ConnectError,
    GatewayError,
    HTTPStatusError,
    InDoubt,
    Md5Signer,
    parse_payment_response,
)
from cmpay_async._cli import main
from cmpay_async._endpoints import is_loopback, safe_url
from cmpay_async._redact import redact_untrusted
from cmpay_async._serve import serve_in_thread
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, Sandbox
from tests.support.helpers import make_client, valid_order

PRODUCTION_HTTP = "http://ipos.10086.cn/ips/cmpayService"


class Recording(httpx.AsyncBaseTransport):
    """Records every request it is asked to send, and answers HTTP 500."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Record, then answer 500."""
        self.requests.append(request)
        return httpx.Response(500, content=b"busy")


def _settings(**kw: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "merchant_id": PUBLIC_TEST_MERCHANT,
        "signer": Md5Signer(PUBLIC_TEST_KEY),
    }
    settings.update(kw)
    return settings


# -- plain http ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [
        PRODUCTION_HTTP,
        "http://10.0.0.7:8080/ips/cmpayService",
        "http://0.0.0.0:8800/ips/cmpayService",
        "http://127.0.0.1.evil.example/ips/cmpayService",
        "http://localhost.evil.example/ips/cmpayService",
        "http://[::2]/ips/cmpayService",
    ],
)
@pytest.mark.parametrize("injected", ["none", "transport", "http_client"])
def test_plain_http_beyond_loopback_is_refused_before_any_request(
    endpoint: str, injected: str
) -> None:
    """http:// to a host that is not loopback raises ConfigurationError; nothing is sent,
    whether the client makes its own connections or is given a transport or an http_client."""
    recording = Recording()
    choices: dict[str, dict[str, Any]] = {
        "none": {},
        "transport": {"transport": recording},
        "http_client": {"http_client": httpx.AsyncClient(transport=recording)},
    }
    extra = choices[injected]

    with pytest.raises(ConfigurationError) as caught:
        CmpayClient(**_settings(endpoint=endpoint, **extra))

    host = httpx.URL(endpoint).host
    assert (
        f"endpoint is plain http:// to {host}, which is not a loopback address: signed orders "
        "and buyers' userTokens would cross the network in clear text; use https://, or pass "
        "allow_insecure_http=True if a trusted network encrypts it"
    ) == str(caught.value)
    assert [] == recording.requests


def test_the_blocking_client_and_the_cli_refuse_plain_http_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """BlockingCmpayClient and `cmpay reconcile --endpoint` apply the same rule."""
    with pytest.raises(ConfigurationError, match="plain http://"):
        BlockingCmpayClient(**_settings(endpoint=PRODUCTION_HTTP))

    orders = tmp_path / "pending.txt"
    orders.write_text("A1\n")
    code = main(
        ["reconcile", "--endpoint", PRODUCTION_HTTP, "--public-test-key", "--file", str(orders)]
    )

    err = capsys.readouterr().err
    assert 2 == code
    assert "ConfigurationError: endpoint is plain http:// to ipos.10086.cn" in err


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.200.3.4", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost.", True),
        ("0.0.0.0", False),  # noqa: S104 - a host name under test, not a bind
        ("128.0.0.1", False),
        ("::", False),
        ("127.0.0.1.nip.io", False),
        ("ipos.10086.cn", False),
    ],
)
def test_loopback_is_127_slash_8_ipv6_one_and_localhost(host: str, loopback: bool) -> None:
    """Only addresses that never leave the machine count as loopback."""
    assert loopback == is_loopback(host)


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:8800/ips/cmpayService",
        "http://127.9.9.9/ips/cmpayService",
        "http://[::1]:8800/ips/cmpayService",
        "http://localhost:8800/ips/cmpayService",
    ],
)
def test_plain_http_to_loopback_is_accepted_without_a_word(
    endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A local sandbox needs no flag, and nothing is logged."""
    caplog.set_level(logging.DEBUG, logger="cmpay_async")

    CmpayClient(**_settings(endpoint=endpoint))

    assert [] == [r for r in caplog.records if r.name.startswith("cmpay_async")]


@pytest.mark.anyio
async def test_the_opt_in_sends_over_plain_http_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """allow_insecure_http=True accepts the endpoint with one WARNING at construction."""
    caplog.set_level(logging.DEBUG, logger="cmpay_async")
    recording = Recording()

    client = CmpayClient(
        **_settings(endpoint=PRODUCTION_HTTP, transport=recording, allow_insecure_http=True)
    )
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    async with client:
        with pytest.raises(HTTPStatusError):
            await client.query_order("Q1")

    assert 1 == len(warned)
    assert (
        "allow_insecure_http=True: requests to ipos.10086.cn go over plain http://, unencrypted"
        == warned[0].getMessage()
    )
    assert PRODUCTION_HTTP == str(recording.requests[0].url)
    assert 1 == sum(1 for r in caplog.records if "allow_insecure_http" in r.getMessage())


def test_the_opt_in_says_nothing_where_nothing_is_insecure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With https:// (or loopback) the flag changes nothing and logs nothing."""
    caplog.set_level(logging.DEBUG, logger="cmpay_async")

    CmpayClient(**_settings(allow_insecure_http=True))
    CmpayClient(**_settings(endpoint="http://127.0.0.1:1/x", allow_insecure_http=True))

    assert [] == [r for r in caplog.records if r.name.startswith("cmpay_async")]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["asgi", "mock"])
async def test_in_process_transports_take_any_http_endpoint(kind: str) -> None:
    """ASGITransport and MockTransport never open a socket: the in-process sandbox's
    http://cmpay-sandbox.invalid needs no flag."""
    sandbox = Sandbox()
    asgi = httpx.ASGITransport(app=sandbox)

    async def forward(request: httpx.Request) -> httpx.Response:
        return await asgi.handle_async_request(request)

    transport = asgi if kind == "asgi" else httpx.MockTransport(forward)
    endpoint = "http://cmpay-sandbox.invalid/ips/cmpayService"

    async with make_client(transport, endpoint=endpoint) as client:
        payment = await client.create_payment(valid_order(), ip_address="203.0.113.7")

    assert payment.pay_url.url.startswith("http://cmpay-sandbox.invalid/")


@pytest.mark.anyio
async def test_plain_http_to_a_sandbox_on_loopback_over_tcp() -> None:
    """http://127.0.0.1:<port> reaches a real sandbox over TCP with the client's own pool."""
    sandbox = Sandbox()
    with serve_in_thread(sandbox) as url:
        assert url.startswith("http://127.0.0.1:")
        async with CmpayClient(**_settings(endpoint=f"{url}/ips/cmpayService")) as client:
            payment = await client.create_payment(
                valid_order(order_id="TCP1"), ip_address="203.0.113.7"
            )

    assert sandbox.order("TCP1").fields["orderId"] == "TCP1"
    assert payment.pay_url.url.startswith(url)


# -- URL credentials ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://merchant:S3cr3tPass@gw.example/ips", "https://merchant:***@gw.example/ips"),
        (
            "https://merchant:a:b@gw.example:8443/x?y=1",
            "https://merchant:***@gw.example:8443/x?y=1",
        ),
        ("https://T0KEN@gw.example/", "https://***@gw.example/"),
        ("https://gw.example/ips", "https://gw.example/ips"),
    ],
)
def test_safe_url_hides_the_password(url: str, shown: str) -> None:
    """The password (or a lone user name, which may be a token) becomes ***."""
    assert shown == safe_url(url)


@pytest.mark.anyio
async def test_a_password_in_the_endpoint_is_never_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not in the client's repr, the blocking client's, an error or any log line."""
    caplog.set_level(logging.DEBUG, logger="cmpay_async")
    with socket.socket() as probe:  # a port nobody listens on: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://merchant:S3cr3tPass@127.0.0.1:{port}/ips/cmpayService"
    client = CmpayClient(**_settings(endpoint=endpoint))
    blocking = BlockingCmpayClient(client)

    async with client:
        with pytest.raises(ConnectError) as caught:
            await client.create_payment(valid_order(), ip_address="203.0.113.7")

    assert f"endpoint='http://merchant:***@127.0.0.1:{port}/ips/cmpayService'" in repr(client)
    shown = [repr(client), repr(blocking), str(caught.value), repr(caught.value)]
    shown += [r.getMessage() for r in caplog.records]
    assert [] == [text for text in shown if "S3cr3tPass" in text]
    assert endpoint == client.endpoint  # still used as given: httpx sends it as Basic auth


# -- redaction by value -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call 13800138000 now", "call [redacted] now"),
        ("手机号13912345678。", "手机号[redacted]。"),
        ("tel +86 138-0013-8000.", "tel [redacted]."),
        ("tel +8613800138000", "tel [redacted]"),
        ("tel 008613800138000", "tel [redacted]"),
        ("card 6222020200112233445 x", "card [redacted] x"),
        ("acct 123456789012", "acct [redacted]"),
        ("key=abc123&x=1", "key=[redacted]&x=1"),
        ("PASSWORD: hunter2 ok", "PASSWORD: [redacted] ok"),
        ("password:hunter2", "password:[redacted]"),
        ("a secret = s3 b", "a secret = [redacted] b"),
        ("SignKey: ABC;x", "SignKey: [redacted];x"),
        ("token=t0k&", "token=[redacted]&"),
        ('{"access_token": "a b c"}', '{"access_token": "[redacted]"}'),
        ("Key%3Dabc%26x%3D1", "Key%3D[redacted]%26x%3D1"),
        ("at https://u:pw@h.example/x", "at https://u:***@h.example/x"),
        ("hmac=0123abcd&userToken=Ab1", "hmac=[redacted]&userToken=[redacted]"),
    ],
)
def test_untrusted_text_is_redacted_by_value(text: str, expected: str) -> None:
    """Phone numbers, long digit runs, secret-named pairs and URL passwords are blanked."""
    assert expected == redact_untrusted(text)


@pytest.mark.parametrize(
    "text",
    [
        "orderId=A1&amount=1250&orderDate=20261206&returnCode=IPS0008",
        "12345678901 is not a mobile, nor is 10013800000",
        "12345678901",
        "keyword: x, tokens=3",
        "signKey=[redacted] and key: [redacted]",
        "",
    ],
)
def test_untrusted_text_keeps_what_is_not_secret(text: str) -> None:
    """Short numbers, non-mobile 11-digit runs, look-alike names and blanked values stay."""
    assert text == redact_untrusted(text)


SHAPES = {
    "phone": "13800138000",
    "+86-phone": "+86 13912345678",
    "long-digits": "6222020200112233445",
    "key=": "key=KeyValue77",
    "password:": "password: PassValue77",
    "secret=": "secret=SecretValue77",
}


@pytest.mark.anyio
@pytest.mark.parametrize("shape", list(SHAPES))
async def test_an_unverified_500_is_redacted_by_value_everywhere(shape: str) -> None:
    """Each shape is blanked in the message, the excerpt, the InDoubt repr and the error as
    it comes back from a pickle."""
    value = SHAPES[shape]
    secret = value.split(" ")[-1].split("=")[-1]
    body = f"<p>Internal error for buyer {value}; call support</p>".encode()
    doubts: list[InDoubt] = []
    transport = httpx.MockTransport(lambda request: httpx.Response(500, content=body))

    async with make_client(transport, on_in_doubt=doubts.append) as client:
        with pytest.raises(HTTPStatusError) as caught:
            await client.create_payment(valid_order(), ip_address="203.0.113.7")

    error = caught.value
    back = pickle.loads(pickle.dumps(error))
    shown = {
        "message": str(error),
        "excerpt": error.excerpt or "",
        "in-doubt repr": repr(doubts),
        "unpickled": f"{back} {back.excerpt} {back.__dict__!r} {back.args!r}",
    }
    assert {k: False for k in shown} == {k: secret in v for k, v in shown.items()}
    assert "[redacted]" in (error.excerpt or "")
    assert error.maybe_sent is True
    assert 1 == len(doubts)


# -- unverified gateway text ----------------------------------------------------------------------


def _unsigned_refusal(message: str) -> bytes:
    fields = {"merchantId": PUBLIC_TEST_MERCHANT, "returnCode": "IPS0001", "message": message}
    return str(httpx.QueryParams(fields)).encode()


def test_an_unverified_refusal_is_labelled_and_redacted() -> None:
    """The text of an answer that did not verify is called unverified, never 'gateway said',
    and its secrets and personal data are blanked in the attribute and the message."""
    body = _unsigned_refusal("请联系 13800138000 key=K77")

    with pytest.raises(GatewayError) as caught:
        parse_payment_response(body, verifier=Md5Signer(PUBLIC_TEST_KEY))

    error = caught.value
    assert "请联系 [redacted] key=[redacted]" == error.gateway_message
    assert "(unverified message: 请联系 [redacted] key=[redacted])" in str(error)
    assert "gateway said" not in str(error)
    assert (False, True) == (error.verified, error.maybe_sent)
    back = pickle.loads(pickle.dumps(error))
    assert str(error) == str(back)
    assert "13800138000" not in repr(back.__dict__)


def test_a_verified_refusal_is_what_the_gateway_said() -> None:
    """A verified answer's text is quoted as the gateway's, unchanged."""
    error = GatewayError("IPS0008", "签名不符", explanation="bad signature", verified=True)
    unverified = GatewayError("IPS0008", "签名不符", explanation="bad signature", verified=False)

    assert "IPS0008: bad signature (gateway said: 签名不符)" == str(error)
    assert (
        "IPS0008: bad signature (unverified message: 签名不符) "
        "[answer not signed with the configured key]"
    ) == str(unverified)


def test_a_url_password_quoted_by_httpx_is_hidden() -> None:
    """httpx may quote the URL in its error's text: the translated error hides the password."""
    from cmpay_async._transport import translate as _translate

    error = _translate(
        httpx.ConnectError("cannot reach http://merchant:S3cr3tPass@gw.example/ips"),
        order_id="O1",
        request_id="R1",
    )

    assert str(error).startswith("cannot reach http://merchant:***@gw.example/ips;")


@pytest.mark.parametrize("unit", ["-a", "x_", "a+", "a"])
def test_redaction_by_value_is_linear_in_hostile_input(unit: str) -> None:
    """64 KiB (the largest answer read) of name-like characters is redacted in well under a
    second, not in time quadratic in its length (about a minute before it was fixed)."""
    import time

    text = unit * (64 * 1024 // len(unit))
    started = time.perf_counter()
    assert text == redact_untrusted(text)
    # A bound 100 times the measured cost (about 30 ms) and far below the quadratic one.
    assert time.perf_counter() - started < 5.0
