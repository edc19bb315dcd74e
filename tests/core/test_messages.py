"""The newcomer's error messages: each names the real cause, not a generic symptom."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from cmpay_async import (
    CmpayClient,
    CmpayError,
    ConfigurationError,
    DecodeError,
    GatewayError,
    Md5Signer,
    Order,
    explain_return_code,
    signing_source,
    verify_notification,
)
from cmpay_async._cli import main
from cmpay_async._protocol import parse_refund_response
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, Sandbox
from tests.support.helpers import NOTIFY_BODY, TEST_KEY, make_client

VERIFIER = Md5Signer(PUBLIC_TEST_KEY)

pytestmark = pytest.mark.anyio


async def test_refunding_an_unpaid_order_blames_the_order_state() -> None:
    """RPM22208 on a refund: the order is not paid; not the orderId/requestId reuse text."""
    sandbox = Sandbox()
    order = Order(
        amount=1250,
        order_id="UNPAID1",
        product_name="咖啡",
        callback_url="https://shop.example/r",
        notify_url="https://shop.example/n",
    )
    async with make_client(httpx.ASGITransport(app=sandbox)) as client:
        await client.create_payment(order, ip_address="203.0.113.7")
        with pytest.raises(GatewayError) as caught:
            await client.refund("UNPAID1", 1250)

    assert "RPM22208" == caught.value.code
    assert caught.value.hint is not None
    assert "not paid" in caught.value.hint
    assert "every order a new orderId" not in str(caught.value)


def test_a_reused_order_id_keeps_the_appendix_hint() -> None:
    """For a payment, RPM22208 still means a reused orderId or requestId."""
    assert "every order a new orderId" in (explain_return_code("RPM22208").hint or "")


def test_ips0008_hint_names_the_sign_key() -> None:
    """Signature mismatch: the key is the first suspect, then the encoding."""
    hint = explain_return_code("IPS0008").hint or ""
    assert "signKey" in hint
    assert "encoding" in hint


JSON = "is JSON, not a form body: the gateway posts key=value&...; pass the raw body"
PAGE = "is an HTML or XML page, not a form body: pass the raw body the gateway posted"
URL = "is a whole URL: pass only its query string (the part after '?')"
QUERY = "starts with '?': pass the query string without it"


@pytest.mark.parametrize(
    ("payload", "names"),
    [
        (b'{"type": "OfflineNotify", "orderId": "A1"}', JSON),
        ("  [1, 2]", JSON),
        (b"\r\n {}", JSON),
        (b"<html><body>notify</body></html>", PAGE),
        ("<?xml version='1.0'?><a/>", PAGE),
        ("?" + NOTIFY_BODY, QUERY),
        ("https://shop.example/cmpay/return?" + NOTIFY_BODY, URL),
        ("HTTP://shop.example/r?" + NOTIFY_BODY, URL),
        (b"http://shop.example/r?" + NOTIFY_BODY.encode(), URL),
        ("\t\thttps://x.example/?" + NOTIFY_BODY, URL),
    ],
)
def test_wrong_shapes_of_notification_say_what_is_wrong(payload: bytes | str, names: str) -> None:
    """JSON, a page, a leading '?' or a whole URL: a DecodeError that names it."""
    with pytest.raises(DecodeError) as caught:
        verify_notification(payload, verifier=VERIFIER)

    assert f"the notification payload {names}" == str(caught.value)
    assert type(caught.value) is DecodeError


@pytest.mark.parametrize(
    "payload",
    [" " * 16 + "{json-after-16}", b"x=<b>"],
    ids=["json-after-the-head", "html-in-a-value"],
)
def test_shapes_are_judged_on_the_head_only(payload: bytes | str) -> None:
    """Only the first 16 characters are looked at: these fail later, for what they are."""
    with pytest.raises(CmpayError) as caught:
        verify_notification(payload, verifier=VERIFIER)

    assert not str(caught.value).startswith("the notification payload ")


def test_a_head_that_is_not_utf8_is_looked_at_without_failing() -> None:
    """GBK bytes first (an extra field named in Chinese): the look does not break on them."""
    body = "支付=1&".encode("gbk") + NOTIFY_BODY.encode()

    assert verify_notification(NOTIFY_BODY, verifier=VERIFIER) == verify_notification(
        body, verifier=VERIFIER
    )


def test_the_plain_query_string_still_verifies() -> None:
    """The check above does not refuse the right input."""
    note = verify_notification(NOTIFY_BODY, verifier=Md5Signer(TEST_KEY))
    assert note.order_id


def test_plain_with_on_the_async_client_points_to_async_with() -> None:
    """`with CmpayClient(...)` says what to use instead."""
    client = CmpayClient(merchant_id=PUBLIC_TEST_MERCHANT, signer=VERIFIER)
    with (
        pytest.raises(TypeError, match=r"async with CmpayClient.*BlockingCmpayClient"),
        client,
    ):
        pass


@pytest.mark.parametrize(
    ("key", "names"),
    [
        ("abcde", "has 5 characters"),
        (" " * 64, "only whitespace"),
        ("", "only whitespace"),
        (PUBLIC_TEST_KEY + "\n", "a newline from a key file?"),
        (" " + PUBLIC_TEST_KEY, "starts or ends with whitespace"),
    ],
)
def test_implausible_sign_keys_are_refused(key: str, names: str) -> None:
    """A short, blank or padded key is a ConfigurationError naming why; the key is not shown."""
    with pytest.raises(ConfigurationError) as caught:
        Md5Signer(key)

    assert names in str(caught.value)
    if key.strip():
        assert key.strip() not in str(caught.value)


def test_a_sixteen_character_key_is_accepted() -> None:
    """The lower bound itself works (keys issued by the gateway have 64 characters)."""
    assert Md5Signer("0123456789abcdef").sign("a=1")


def _sign_with_key_file(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str]:
    code = main(["sign", "PageNotify", "--body", NOTIFY_BODY, "--key-file", str(path)])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_cli_key_file_line_ending_is_the_files_not_the_keys(
    ending: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key file ending in a newline signs like the key itself, as the library would."""
    path = tmp_path / "key"
    path.write_bytes((PUBLIC_TEST_KEY + ending).encode())

    code, out = _sign_with_key_file(capsys, path)

    expected = Md5Signer(PUBLIC_TEST_KEY)
    assert 0 == code
    hmac = re.search(r"hmac:\s+([0-9a-f]{32})", out)
    assert hmac is not None
    source = re.search(r"source: (.*)", out)
    assert source is not None
    assert expected.sign(source.group(1)) == hmac.group(1)


def test_cli_key_file_with_other_whitespace_is_refused_like_the_library(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Trailing spaces are not a line ending: the CLI refuses them, as Md5Signer does."""
    path = tmp_path / "key"
    path.write_text(PUBLIC_TEST_KEY + "  \n", "utf-8")

    code = main(["sign", "PageNotify", "--body", NOTIFY_BODY, "--key-file", str(path)])

    assert 2 == code
    assert "starts or ends with whitespace" in capsys.readouterr().err


def _refund_failure(code: str, *, signed: bool, **extra: str) -> bytes:
    """A refund failure answer written by hand, empty fields left out as a gateway may."""
    fields = {
        "merchantId": PUBLIC_TEST_MERCHANT,
        "returnCode": code,
        "signType": "MD5",
        "type": "OrderRefund",
        "version": "2.0.0",
        "orderId": "R1",
        **extra,
    }
    if signed:
        fields["hmac"] = VERIFIER.sign(signing_source("OrderRefundResponse", fields))
    return urlencode(fields).encode()


def test_an_unsigned_refund_refusal_still_gets_the_refund_hint() -> None:
    """RPM22208 on a refund names the order state even when the answer is not signed."""
    with pytest.raises(GatewayError) as caught:
        parse_refund_response(
            _refund_failure("RPM22208", signed=False, message="x"),
            verifier=VERIFIER,
            merchant_id=PUBLIC_TEST_MERCHANT,
            order_id="R1",
        )

    assert (False, True) == (caught.value.verified, caught.value.maybe_sent)
    assert "not paid" in (caught.value.hint or "")


def test_a_signed_refusal_without_a_message_says_nothing_for_the_gateway() -> None:
    """No message field: the error has an empty gateway_message, not a made-up one."""
    with pytest.raises(GatewayError) as caught:
        parse_refund_response(
            _refund_failure("RPM22401", signed=True),
            verifier=VERIFIER,
            merchant_id=PUBLIC_TEST_MERCHANT,
            order_id="R1",
        )

    assert (True, "") == (caught.value.verified, caught.value.gateway_message)
    assert "gateway said" not in str(caught.value)
