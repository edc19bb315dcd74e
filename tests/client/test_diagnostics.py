"""Diagnostics: every error from a call names the call; secrets are blanked in one place."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from urllib.parse import quote

import httpx
import pytest

from cmpay_async import (
    ClientClosedError,
    CmpayError,
    ConnectError,
    DecodeError,
    GatewayError,
    HTTPStatusError,
    Order,
    PayloadTooLargeError,
    SignatureError,
    TransportError,
    TransportTimeoutError,
    ValidationError,
)
from cmpay_async._redact import redact
from cmpay_async.testing import Sandbox
from tests.support.helpers import make_client

pytestmark = pytest.mark.anyio

ORDER = Order(
    amount=1250,
    order_id="CTX1001",
    product_name="咖啡",
    callback_url="https://shop.example/return",
    notify_url="https://shop.example/notify",
)
PHONE = "13800138000"


def _raising(exc: Exception) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return httpx.MockTransport(handler)


def _answering(status: int, body: bytes) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, content=body))


def _sandbox(fault: Callable[[Sandbox], None]) -> httpx.ASGITransport:
    sandbox = Sandbox()
    fault(sandbox)
    return httpx.ASGITransport(app=sandbox)


CASES: dict[str, tuple[Callable[[], httpx.AsyncBaseTransport], type[CmpayError], bool]] = {
    # name: (transport, the exact class expected, maybe_sent)
    "connect": (
        lambda: _raising(httpx.ConnectError("All connection attempts failed")),
        ConnectError,
        False,
    ),
    "connect-timeout": (lambda: _raising(httpx.ConnectTimeout("")), TransportTimeoutError, False),
    "read-error": (lambda: _raising(httpx.ReadError("reset")), TransportError, True),
    "http-500": (
        lambda: _answering(500, f"<h1>oops</h1> userToken={PHONE}".encode()),
        HTTPStatusError,
        True,
    ),
    "html": (lambda: _answering(200, b"<html>proxy</html>"), DecodeError, True),
    "too-large": (lambda: _answering(200, b"x" * 3_000_000), PayloadTooLargeError, True),
    "tampered": (lambda: _sandbox(Sandbox.tamper_next), SignatureError, True),
    "refused": (lambda: _sandbox(lambda s: s.fail_next("RPM22208")), GatewayError, False),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_every_error_from_a_call_carries_its_context(case: str) -> None:
    """Operation, order id, request id and host are on the error and at the end of its text."""
    transport, expected, maybe_sent = CASES[case]
    async with make_client(transport()) as client:
        with pytest.raises(CmpayError) as caught:
            await client.create_payment(ORDER, ip_address="203.0.113.7", request_id="REQ1")

    exc = caught.value
    assert expected is type(exc)
    assert maybe_sent is exc.maybe_sent
    assert ("create_payment", "CTX1001", "REQ1", "sandbox.test") == (
        exc.operation,
        exc.order_id,
        exc.request_id,
        exc.endpoint_host,
    )
    assert str(exc).endswith(" [create_payment orderId=CTX1001 requestId=REQ1 host=sandbox.test]")
    assert PHONE not in str(exc)
    # The context survives a task queue.
    clone = pickle.loads(pickle.dumps(exc))
    assert (str(clone), clone.operation, clone.endpoint_host) == (
        str(exc),
        "create_payment",
        "sandbox.test",
    )


async def test_connect_error_names_its_class_once() -> None:
    """'ConnectError: ConnectError: ...' was the old text; the class name appears once."""
    transport = _raising(httpx.ConnectError("All connection attempts failed"))
    async with make_client(transport) as client:
        with pytest.raises(ConnectError) as caught:
            await client.query_order("Q1", request_id="REQ2")

    assert str(caught.value) == (
        "All connection attempts failed; the request never reached the gateway"
        " [query_order orderId=Q1 requestId=REQ2 host=sandbox.test]"
    )


async def test_errors_before_any_io_name_the_call_too() -> None:
    """A ValidationError from preparing and a ClientClosedError carry the call's context."""
    client = make_client(_answering(200, b""))
    with pytest.raises(ValidationError) as invalid:
        await client.create_payment(ORDER, ip_address="not-an-ip", request_id="REQ-CTX1")
    assert ("create_payment", "CTX1001", "REQ-CTX1", "sandbox.test") == (
        invalid.value.operation,
        invalid.value.order_id,
        invalid.value.request_id,
        invalid.value.endpoint_host,
    )
    assert str(invalid.value).startswith("ipAddress: must be an IPv4 address [create_payment")
    with pytest.raises(ValidationError) as query:
        await client.query_order("Q*1", request_id="REQ-CTX2")
    with pytest.raises(ValidationError) as refund:
        await client.refund("R1", 0, request_id="REQ-CTX3")
    assert [
        ("query_order", "Q*1", "REQ-CTX2", "sandbox.test"),
        ("refund", "R1", "REQ-CTX3", "sandbox.test"),
    ] == [
        (e.operation, e.order_id, e.request_id, e.endpoint_host)
        for e in (query.value, refund.value)
    ]
    await client.aclose()
    with pytest.raises(ClientClosedError) as closed:
        await client.refund("R1", 100)
    assert ("refund", "R1") == (closed.value.operation, closed.value.order_id)


def test_an_error_outside_a_call_has_no_context_suffix() -> None:
    """Errors raised by the pure helpers read as before."""
    exc = DecodeError("missing or empty", field="orderId")
    assert "orderId: missing or empty" == str(exc)


SECRETS = {
    "hmac": "0123456789abcdef0123456789abcdef",
    "userToken": PHONE,
    "mobile": "13912345678",
    "merchantCert": "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA",
    "serverCert": "MIICdgIBADANBgkqhkiG9w0BAQEFAASCAmAwggJcAgEA",
    "signKey": "a-merchant-sign-key-of-64-chars",
    "user_token": PHONE,
}


def _shapes(name: str, value: str) -> dict[str, str]:
    form = f"type=DirectPayConfirm&{name}={value}&amount=1250"
    return {
        "form": form,
        "json": json.dumps({"type": "x", name: value, "amount": 1250}),
        "json-compact": json.dumps({name: value}, separators=(",", ":")),
        "percent-encoded": "next=https://shop.example/?" + quote(form, safe=""),
        "html-field": f'<input type="hidden" name="{name}" value="{value}">',
        "upper-case-name": f"{name.upper()}={value}",
    }


@pytest.mark.parametrize("name", sorted(SECRETS))
@pytest.mark.parametrize(
    "shape",
    ["form", "json", "json-compact", "percent-encoded", "html-field", "upper-case-name"],
)
def test_redact_blanks_each_sensitive_field_in_each_shape(name: str, shape: str) -> None:
    """The value is gone; the field's name and the other fields stay readable."""
    text = _shapes(name, SECRETS[name])[shape]

    out = redact(text)

    assert SECRETS[name] not in out
    assert name.lower() in out.lower()
    assert "[redacted]" in out
    if shape in ("form", "json", "percent-encoded"):
        assert "1250" in out


def test_redact_leaves_other_fields_and_lookalike_names_alone() -> None:
    """`notmobile`, `hmacX` and ordinary fields are not secrets."""
    text = "notmobile=1&hmacX=2&orderId=A1&amount=1250"
    assert text == redact(text)


async def test_an_error_page_echoing_the_request_leaks_nothing() -> None:
    """A 500 page that echoes the request: no phone number, no hmac in the message."""
    echoed = f"<pre>userToken={PHONE}&hmac={SECRETS['hmac']}</pre>".encode()
    async with make_client(_answering(500, echoed)) as client:
        with pytest.raises(HTTPStatusError) as caught:
            await client.create_payment(ORDER, ip_address="203.0.113.7")
    text = f"{caught.value} {caught.value.excerpt}"
    assert PHONE not in text
    assert SECRETS["hmac"] not in text
    assert "userToken=[redacted]" in text
