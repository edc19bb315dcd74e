"""The sandbox against PROTOCOL.md and the vendor's demos, checked by a reference verifier.

The reference verifier below is written from PROTOCOL.md alone (its field orders from the
document's table kept as data in tests/vectors/field_orders.json, the double HMAC-MD5 with
Python's ``hmac``), not from the library, so a sandbox that drifts from the protocol fails
here even if the library drifts with it.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import parse_qsl

import anyio
import httpx
import pytest

from cmpay_async import CharacterSet, Md5Signer, Order, verify_notification
from cmpay_async._serve import serve_in_thread
from cmpay_async.testing import (
    PUBLIC_TEST_KEY,
    PUBLIC_TEST_MERCHANT,
    Sandbox,
    SandboxClock,
    sign_notification,
)
from tests.support.helpers import load_vectors, make_client, reference_hmac

pytestmark = pytest.mark.anyio

#: PROTOCOL.md section 3's table "fields, in order", as data: the orders of an OfflineNotify
#: and of an OrderQuery answer.
ORDERS = load_vectors("field_orders.json")["orders"]
NOTIFY_ORDER = ORDERS["OfflineNotify"]
QUERY_ANSWER_ORDER = ORDERS["OrderQueryResponse"]

CODECS = {"00": "gbk", "01": "gb2312", "02": "utf-8"}
HTTP_NAMES = {"00": "GBK", "01": "GB2312", "02": "UTF-8"}


def reference_form(body: bytes, codec: str) -> dict[str, str]:
    """One form decode in ``codec``, as a notify page in that charset does."""
    return dict(parse_qsl(body.decode("ascii"), keep_blank_values=True, encoding=codec))


def reference_answer(body: bytes) -> dict[str, str]:
    """PROTOCOL.md section 4: split on '&', then on the first '='; Chinese fields escaped."""
    fields = dict(part.split("=", 1) for part in body.decode("ascii").split("&"))
    from urllib.parse import unquote

    for name in ("message", "reserved1", "reserved2"):
        if name in fields:
            fields[name] = unquote(fields[name])
    return fields


class Recorder:
    """A shop: records each notification's raw body and content type, answers SUCCESS."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, bytes, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Record and answer."""
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").decode()
        self.posts.append((scope["path"], body, content_type))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"SUCCESS"})


async def _pay_chinese_order(character_set: str) -> tuple[Sandbox, Recorder, httpx.Response]:
    """Place a Chinese order in ``character_set`` on an in-process sandbox and pay it."""
    shop = Recorder()
    sandbox = Sandbox(
        clock=SandboxClock(None),
        notify_transport=httpx.ASGITransport(app=shop),
    )
    client = make_client(
        httpx.ASGITransport(app=sandbox), character_set=CharacterSet(character_set)
    )
    order = Order(
        amount=1250,
        order_id=f"CN{character_set}",
        product_name="咖啡",
        reserved1="订单备注",
        reserved2="中文",
        callback_url="http://shop.test/return",
        notify_url="http://shop.test/notify",
    )
    async with sandbox.running(), client:
        payment = await client.create_payment(order, ip_address="203.0.113.7")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox)) as browser:
            page = await browser.post(
                "http://gw.test/ips/FormTrans3/pay",
                data={"sessionId": payment.pay_url.session_id, "outcome": "pay"},
            )
        with anyio.fail_after(5):
            while not shop.posts:
                await anyio.sleep(0)
    return sandbox, shop, page


@pytest.mark.parametrize("character_set", ["00", "01", "02"])
async def test_offline_notify_is_in_the_orders_charset_and_verifies_by_the_reference(
    character_set: str,
) -> None:
    """Body encoded in the order's charset, labelled so, signed over the decoded text."""
    _, shop, _ = await _pay_chinese_order(character_set)

    (path, body, content_type) = shop.posts[0]
    assert "/notify" == path
    assert f"charset={HTTP_NAMES[character_set]}" in content_type
    codec = CODECS[character_set]
    fields = reference_form(body, codec)
    assert ("订单备注", "中文") == (fields["reserved1"], fields["reserved2"])
    assert "OfflineNotify" == fields["type"]
    assert reference_hmac("".join(fields[n] for n in NOTIFY_ORDER).encode()) == fields["hmac"]
    if codec != "utf-8":  # really that charset, not UTF-8 labelled otherwise
        assert "订单备注".encode(codec) in _percent_decoded(body)
        assert "订单备注".encode() not in _percent_decoded(body)


def _percent_decoded(body: bytes) -> bytes:
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(body.replace(b"+", b" "))


@pytest.mark.parametrize("character_set", ["00", "02"])
async def test_the_page_notify_form_is_served_in_the_orders_charset(character_set: str) -> None:
    """The auto-submitting page (and so the browser's post) uses the order's charset."""
    _, _, page = await _pay_chinese_order(character_set)

    name = HTTP_NAMES[character_set]
    assert f"charset={name}" in page.headers["content-type"]
    text = page.content.decode(CODECS[character_set])
    assert f'accept-charset="{name}"' in text
    assert 'value="订单备注"' in text


async def test_query_answer_is_typed_orderquery_and_says_success() -> None:
    """An OrderQuery answer repeats type=OrderQuery; success says SUCCESS (vendor samples)."""
    sandbox, _, _ = await _pay_chinese_order("02")
    request = {
        "merchantId": PUBLIC_TEST_MERCHANT,
        "requestId": "Q1",
        "signType": "MD5",
        "type": "OrderQuery",
        "version": "2.0.0",
        "orderId": "CN02",
    }
    source = "".join(request.values())  # PROTOCOL.md: merchantId, requestId, ..., orderId
    request["hmac"] = reference_hmac(source.encode())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox)) as http:
        answer = await http.post("http://gw.test/ips/cmpayService", data=request)

    fields = reference_answer(answer.content)
    assert ("OrderQuery", "000000", "SUCCESS") == (
        fields["type"],
        fields["returnCode"],
        fields["message"],
    )
    assert reference_hmac("".join(fields[n] for n in QUERY_ANSWER_ORDER).encode()) == fields["hmac"]


def _plain_order(order_id: str) -> Order:
    return Order(
        amount=100,
        order_id=order_id,
        product_name="T",
        callback_url="http://shop.test/r",
        notify_url="http://shop.test/n",
    )


async def test_payment_answer_says_success() -> None:
    """The DirectPayConfirm answer's message is SUCCESS (the client verifies the answer)."""
    async with make_client(httpx.ASGITransport(app=Sandbox())) as client:
        payment = await client.create_payment(_plain_order("MSG1"), ip_address="203.0.113.7")
    assert "SUCCESS" == payment.message


@pytest.mark.parametrize("name", ["sessionId", "SESSIONID", "sessionid"])
async def test_the_cashier_takes_session_id_in_any_case(name: str) -> None:
    """The vendor's PHP demo posts SESSIONID=; the document says sessionId."""
    sandbox = Sandbox()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox)) as http:
        async with make_client(httpx.ASGITransport(app=sandbox)) as client:
            payment = await client.create_payment(_plain_order("SID1"), ip_address="203.0.113.7")
        page = await http.post(
            "http://gw.test/ips/FormTrans3", data={name: payment.pay_url.session_id}
        )
    assert 200 == page.status_code
    assert "Pay" in page.text


def test_pay_links_use_the_served_address_whatever_host_the_client_sends() -> None:
    """An HTTP/1.0 client sending Host without the port still gets a link with the port."""
    request = {
        "characterSet": "02",
        "callbackUrl": "http://shop.test/r",
        "notifyUrl": "http://shop.test/n",
        "ipAddress": "203.0.113.7",
        "merchantId": PUBLIC_TEST_MERCHANT,
        "requestId": "HOST1",
        "signType": "MD5",
        "type": "DirectPayConfirm",
        "version": "2.0.0",
        "amount": "100",
        "currency": "00",
        "orderDate": "20261126",
        "orderId": "HOST1",
        "merAcDate": "20261126",
        "period": "1",
        "periodUnit": "02",
        "productName": "T",
    }
    request["hmac"] = reference_hmac("".join(request.values()).encode())  # PROTOCOL.md's order
    body = "&".join(f"{k}={v}" for k, v in request.items()).replace(":", "%3A").replace("/", "%2F")
    with serve_in_thread(Sandbox()) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"POST /ips/cmpayService HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
            )
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
    answer = reference_answer(raw.split(b"\r\n\r\n", 1)[1])
    assert "000000" == answer["returnCode"]
    assert f"url<hi:=>{url}/ips/FormTrans3<hi:$$>" in answer["payUrl"]


def test_in_process_pay_links_never_point_at_the_real_gateway() -> None:
    """The default base URL is a host that never resolves."""
    assert Sandbox().base_url == "http://cmpay-sandbox.invalid"


def test_escaped_chinese_is_signed_as_the_vendor_demos_verify() -> None:
    """escape_chinese: the hmac covers the once-decoded (escaped) text; the library decodes."""
    body = sign_notification(order_id="ESC1", amount=100, reserved1="订单备注", escape_chinese=True)

    fields = reference_form(body, "utf-8")  # the vendor demo's one form decode
    assert fields["reserved1"].startswith("%E8%AE%A2")
    assert reference_hmac("".join(fields[n] for n in NOTIFY_ORDER).encode()) == fields["hmac"]
    note = verify_notification(body, verifier=Md5Signer(PUBLIC_TEST_KEY))
    assert "订单备注" == note.reserved1


async def test_an_empty_character_set_means_gbk_as_the_document_says() -> None:
    """6.1.3: characterSet "默认00-GBK". A request that leaves it out, encoded in GBK, is read
    as GBK, and the order's OfflineNotify is encoded in GBK."""
    from urllib.parse import quote_plus, urlencode

    from cmpay_async._protocol import build_payment_request
    from tests.support.helpers import TODAY, load_vectors

    order = Order(amount=1250, order_id="G1", product_name="咖啡", reserved1="订单备注")
    prepared = build_payment_request(
        order,
        merchant_id=PUBLIC_TEST_MERCHANT,
        request_id="RG1",
        ip_address="203.0.113.7",
        signer=Md5Signer(PUBLIC_TEST_KEY),
        today=TODAY,
        callback_url="https://shop.example/return",
        notify_url="https://shop.example/notify",
    )
    fields = {k: v for k, v in prepared.fields.items() if k not in ("hmac", "merchantCert")}
    fields["characterSet"] = ""
    request_order = load_vectors("field_orders.json")["orders"]["DirectPayConfirm"]
    fields["hmac"] = reference_hmac("".join(fields[n] for n in request_order).encode())
    body = urlencode(fields, encoding="gbk", quote_via=quote_plus)
    sandbox = Sandbox()

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox)) as http:
        answer = await http.post(
            "http://gw.test/ips/cmpayService",
            content=body,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )

    assert "returnCode=000000" in answer.text
    placed = sandbox.order("G1")
    assert ("咖啡", CharacterSet.GBK) == (placed.fields["productName"], placed.charset)
    _, offline = sandbox.settle(placed, paid=True)
    assert "订单备注" == reference_form(offline, "gbk")["reserved1"]
