"""The sandbox gateway in-process: service codes, cashier, notifications on a manual clock."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import anyio
import httpx
import pytest

from cmpay_async import (
    CharacterSet,
    Md5Signer,
    OrderState,
    PaymentStatus,
    decode_payload,
    encode_form,
    signing_source,
)
from cmpay_async._schema import REGISTRY
from cmpay_async._verify import verify_fields
from cmpay_async.testing import (
    OFFLINE_GAPS_MINUTES,
    PUBLIC_TEST_KEY,
    PUBLIC_TEST_MERCHANT,
    Sandbox,
    SandboxClock,
)
from tests.support.helpers import make_client
from tests.support.merchant import ScriptedMerchant

pytestmark = pytest.mark.anyio

SIGNER = Md5Signer(PUBLIC_TEST_KEY)


def request_fields(**overrides: str) -> dict[str, str]:
    """A valid DirectPayConfirm request as wire fields (unsigned)."""
    fields = {
        "characterSet": "02",
        "callbackUrl": "http://shop.test/return",
        "notifyUrl": "http://shop.test/notify",
        "ipAddress": "10.0.0.1",
        "merchantId": PUBLIC_TEST_MERCHANT,
        "requestId": "REQ1",
        "signType": "MD5",
        "type": "DirectPayConfirm",
        "version": "2.0.0",
        "amount": "1250",
        "currency": "00",
        "orderDate": "20261126",
        "orderId": "ORDER1",
        "merAcDate": "20261126",
        "period": "1",
        "periodUnit": "02",
        "productName": "咖啡",
        "userToken": "13800138000",
    }
    fields.update(overrides)
    return fields


def signed_body(fields: dict[str, str], signer: Md5Signer = SIGNER) -> bytes:
    """Sign and form-encode wire fields, bypassing the client's own validation."""
    fields = dict(fields)
    fields["hmac"] = signer.sign(signing_source(fields["type"], fields))
    return encode_form(fields.items(), CharacterSet(fields.get("characterSet") or "00"))


async def post_service(sandbox: Sandbox, body: bytes) -> dict[str, str]:
    """POST to the service endpoint and split the answer."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox)) as http:
        response = await http.post("http://gw.test/ips/cmpayService", content=body)
    return decode_payload(response.content, form=False)


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"productName": ""}, "MCG01033"),
        ({"productName": "长" * 51}, "MCG01081"),
        ({"amount": ""}, "MCG01014"),
        ({"currency": "01"}, "MCG01019"),
        ({"currency": ""}, "MCG01018"),
        ({"periodUnit": "09"}, "MCG01030"),
        ({"period": ""}, "MCG01027"),
        ({"period": "0"}, "MCG01028"),
        ({"orderDate": ""}, "MCG01024"),
        ({"orderDate": "20261345"}, "MCG01025"),
        ({"merchantId": "999"}, "IPS0001"),
    ],
)
async def test_bad_orders_get_their_appendix_codes(overrides: dict[str, str], code: str) -> None:
    """Each listed return code comes from the matching bad order."""
    answer = await post_service(Sandbox(), signed_body(request_fields(**overrides)))

    assert code == answer["returnCode"]


async def test_bad_signature_gets_ips0008() -> None:
    """A request signed with another key is refused with IPS0008, signed by the gateway."""
    answer = await post_service(
        Sandbox(), signed_body(request_fields(), Md5Signer("other-not-the-merchants-key"))
    )

    assert "IPS0008" == answer["returnCode"]
    verify_fields(REGISTRY["DirectPayConfirmResponse"], answer, SIGNER)


@pytest.mark.parametrize("repeat", ["requestId", "orderId"])
async def test_repeated_ids_get_rpm22208(repeat: str) -> None:
    """A repeated requestId or orderId is refused with RPM22208."""
    sandbox = Sandbox()
    await post_service(sandbox, signed_body(request_fields()))
    other = {"requestId": "REQ2", "orderId": "ORDER2"}
    del other[repeat]

    answer = await post_service(sandbox, signed_body(request_fields(**other)))

    assert "RPM22208" == answer["returnCode"]


@pytest.mark.parametrize("charset", list(CharacterSet))
async def test_accepts_each_charset(charset: CharacterSet) -> None:
    """GBK, GB2312 and UTF-8 bodies decode to the same order."""
    sandbox = Sandbox()
    answer = await post_service(sandbox, signed_body(request_fields(characterSet=charset.value)))

    assert "000000" == answer["returnCode"]
    assert "咖啡" == sandbox.order("ORDER1").fields["productName"]


async def _place_and_pay(sandbox: Sandbox, *, outcome: str = "pay") -> dict[str, str]:
    """Place ORDER1, open the cashier, press a button; return the PageNotify form fields."""
    answer = await post_service(sandbox, signed_body(request_fields()))
    assert "000000" == answer["returnCode"]
    session = sandbox.order("ORDER1").session_id
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox), base_url="http://gw.test"
    ) as browser:
        page = await browser.post("/ips/FormTrans3", data={"sessionId": session})
        assert "¥12.50" in page.text
        assert "咖啡" in page.text
        done = await browser.post(
            "/ips/FormTrans3/pay", data={"sessionId": session, "outcome": outcome}
        )
    if "<p>Paid. (" not in done.text:  # unless a fault keeps the PageNotify from the browser
        assert 'action="http://shop.test/return"' in done.text
    return dict(re.findall(r'name="([^"]+)" value="([^"]*)"', done.text))


async def test_paying_sends_pagenotify_through_the_browser() -> None:
    """The cashier answers an auto-submitting form holding a signed PageNotify."""
    sandbox = Sandbox(clock=SandboxClock(None))
    fields = await _place_and_pay(sandbox)

    assert "PageNotify" == fields["type"]
    assert "1250" == fields["amount"]
    assert "138****8000" == fields["mobile"]
    SIGNER.verify(signing_source("PageNotify", fields), fields["hmac"])
    assert "paid" == sandbox.order("ORDER1").state


async def _deliver(merchant: ScriptedMerchant, *, outcome: str = "pay", **faults: Any) -> Sandbox:
    """Pay ORDER1 and step the manual clock through the whole OfflineNotify schedule."""
    clock = SandboxClock(None)
    sandbox = Sandbox(clock=clock, notify_transport=httpx.ASGITransport(app=merchant))
    if faults.get("forged"):
        sandbox.forge_next_notification()
    if faults.get("duplicates"):
        sandbox.duplicate_next_notification(
            faults["duplicates"], concurrent=faults.get("concurrent", False)
        )
    if faults.get("lost"):
        sandbox.lose_next_notifications()
    if faults.get("race_page"):
        sandbox.race_next_page_notify()
    async with sandbox.running():
        await _place_and_pay(sandbox, outcome=outcome)
        order = sandbox.order("ORDER1")
        for gap in (0, *OFFLINE_GAPS_MINUTES):
            clock.advance(gap)
            # Let the delivery task run until it sleeps on the clock again or finishes.
            await anyio.sleep(0)
            with anyio.fail_after(5):
                while order.delivery == "delivering" and not clock.sleepers:
                    await anyio.sleep(0)
            if order.delivery != "delivering":
                break
    return sandbox


def _offline_minutes(sandbox: Sandbox) -> list[float]:
    return [
        a.minute
        for a in sandbox.order("ORDER1").attempts
        if a.kind == "OfflineNotify" and not a.forged and not a.duplicate
    ]


async def test_retries_stop_at_the_first_success() -> None:
    """Failing twice then answering SUCCESS gets exactly 3 attempts, at minutes 0, 1 and 6."""
    merchant = ScriptedMerchant(b"FAIL", b"error", b"SUCCESS")

    sandbox = await _deliver(merchant)

    assert [0.0, 1.0, 6.0] == _offline_minutes(sandbox)
    assert "acknowledged" == sandbox.order("ORDER1").delivery


async def test_always_failing_merchant_gets_exactly_8_attempts() -> None:
    """The whole schedule: 8 attempts at the document's gaps, about 24.3 hours."""
    sandbox = await _deliver(ScriptedMerchant(b"FAIL"))

    minutes = _offline_minutes(sandbox)
    assert 8 == len(minutes)
    # Section 8.1 of the document, written out: not read from the module under test.
    assert [1, 5, 10, 60, 120, 360, 900] == [b - a for a, b in itertools.pairwise(minutes)]
    assert 1456.0 == minutes[-1]
    assert "exhausted" == sandbox.order("ORDER1").delivery


async def test_success_must_be_exact() -> None:
    """'SUCCESS ' or 'success' is not SUCCESS: the gateway sends again."""
    sandbox = await _deliver(ScriptedMerchant(b"success", b"SUCCESS\n", b"SUCCESS"))

    assert 3 == len(_offline_minutes(sandbox))


async def test_failed_payment_notifies_failed_status() -> None:
    """Pressing Fail marks the order failed and notifies status FAILED."""
    merchant = ScriptedMerchant(b"SUCCESS")

    sandbox = await _deliver(merchant, outcome="fail")

    assert "failed" == sandbox.order("ORDER1").state
    assert PaymentStatus.FAILED is merchant.verified[0].status
    assert not merchant.verified[0].paid


async def test_forged_and_duplicate_notification_faults() -> None:
    """A forged copy is rejected by the merchant; duplicates arrive with the same pay_no."""
    merchant = ScriptedMerchant(b"SUCCESS")

    sandbox = await _deliver(merchant, forged=True, duplicates=2)

    assert 1 == merchant.rejected
    assert 3 == len(merchant.verified)
    assert 1 == len({n.pay_no for n in merchant.verified})
    assert [0.0] == _offline_minutes(sandbox)


async def test_orders_json_shows_attempts_and_hides_hmac() -> None:
    """GET /_sandbox/orders lists orders with every notification attempt."""
    sandbox = await _deliver(ScriptedMerchant(b"FAIL", b"SUCCESS"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox)) as http:
        data = json.loads((await http.get("http://gw.test/_sandbox/orders")).content)

    (order,) = data
    assert "ORDER1" == order["order_id"]
    assert "hmac" not in order["fields"]
    assert "138****8000" == order["fields"]["userToken"]  # personal data masked
    kinds = [(a["kind"], a["answer"]) for a in order["attempts"]]
    assert ("OfflineNotify", "FAIL") in kinds
    assert ("OfflineNotify", "SUCCESS") in kinds
    assert "PageNotify" in {k for k, _ in kinds}


async def test_unknown_session_and_paths() -> None:
    """Unknown sessions and paths are 404s, not crashes."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=Sandbox())) as http:
        assert 404 == (await http.get("http://gw.test/ips/FormTrans3?sessionId=x")).status_code
        assert 404 == (await http.get("http://gw.test/nowhere")).status_code
        assert 409 == (await http.post("http://gw.test/ips/FormTrans3/pay")).status_code


def test_request_fields_helper_covers_the_schema() -> None:
    """The helper above writes only registry fields (a typo would silently be ignored)."""
    assert set(request_fields()) <= set(REGISTRY["DirectPayConfirm"].by_wire)


class OverlapCounter(ScriptedMerchant):
    """A merchant that notes how many notifications it was handling at the same time."""

    def __init__(self) -> None:
        super().__init__(b"SUCCESS")
        self.now = self.peak = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Count this request while it is handled."""
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await anyio.sleep(0)  # a checkpoint: copies that left together overlap here
            await super().__call__(scope, receive, send)
        finally:
            self.now -= 1


async def test_concurrent_duplicates_arrive_at_the_same_instant() -> None:
    """Ten copies and the first attempt are posted together: the merchant sees them overlap."""
    merchant = OverlapCounter()

    sandbox = await _deliver(merchant, duplicates=10, concurrent=True)

    attempts = sandbox.order("ORDER1").attempts
    offline = [a for a in attempts if a.kind == "OfflineNotify"]
    assert 11 == len(offline)
    assert 10 == sum(a.duplicate for a in offline)
    assert {0.0} == {a.minute for a in offline}
    assert merchant.peak > 1
    assert "acknowledged" == sandbox.order("ORDER1").delivery


class Rendezvous(ScriptedMerchant):
    """A merchant that holds each request until ``parties`` requests are inside at once."""

    def __init__(self, parties: int) -> None:
        super().__init__(b"SUCCESS")
        self.parties, self.inside, self.peak = parties, 0, 0
        self.all_in = anyio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Wait (bounded) for the others; posts sent one after another would time out here."""
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        if self.inside == self.parties:
            self.all_in.set()
        with anyio.fail_after(5):
            await self.all_in.wait()
        await super().__call__(scope, receive, send)


async def test_page_notify_races_the_offline_notify() -> None:
    """The sandbox posts the PageNotify itself, at the same instant as the first OfflineNotify."""
    merchant = Rendezvous(2)

    sandbox = await _deliver(merchant, race_page=True)

    attempts = sandbox.order("ORDER1").attempts
    assert [("PageNotify", 200, "thank you")] == [
        (a.kind, a.status, a.answer) for a in attempts if a.kind == "PageNotify"
    ]
    assert 1 == len(merchant.page_notes)
    assert merchant.page_notes[0].pay_no == merchant.verified[0].pay_no
    assert 2 == merchant.peak  # the two directions were in the merchant at the same time
    assert [0.0] == _offline_minutes(sandbox)
    assert "acknowledged" == sandbox.order("ORDER1").delivery


async def test_lost_notifications_leave_only_the_query() -> None:
    """Every notification of the payment is lost: no form, no OfflineNotify; a query finds it."""
    merchant = ScriptedMerchant(b"SUCCESS")

    sandbox = await _deliver(merchant, lost=True)

    order = sandbox.order("ORDER1")
    assert "paid" == order.state
    assert "lost" == order.delivery
    assert [] == [a for a in order.attempts if a.kind == "OfflineNotify"]
    assert [] == merchant.received
    async with make_client(httpx.ASGITransport(app=sandbox)) as client:
        found = await client.query_order("ORDER1")
    assert OrderState.PAID is found.state
    assert 1250 == found.amount
