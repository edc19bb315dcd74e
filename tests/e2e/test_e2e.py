"""End to end over real TCP: client -> sandbox (uvicorn) -> cashier -> both notifications."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import anyio
import httpx
import pytest

from cmpay_async import Order
from cmpay_async._serve import serve_in_thread
from cmpay_async.testing import (
    Sandbox,
    SandboxClock,
)
from tests.support.helpers import sandbox_client
from tests.support.merchant import ScriptedMerchant

pytestmark = pytest.mark.anyio
#: The document's retry gaps (section 8.1), in minutes: data, not the sandbox's constant.
DOCUMENT_GAPS = (1, 5, 10, 60, 120, 360, 900)

# One gateway minute in 1 ms: the full 8-attempt schedule (1,456 minutes) takes ~1.5 s.
MINUTE = 0.001


async def pay_through(gateway: str, shop: str, order_id: str) -> dict[str, Any]:
    """Place an order, pay at the cashier like a browser, return the sandbox's final record."""
    async with sandbox_client(gateway, shop) as client:
        payment = await client.create_payment(
            Order(amount=990, order_id=order_id, product_name="测试"), ip_address="127.0.0.1"
        )
    async with httpx.AsyncClient(timeout=10) as browser:
        cashier = await browser.get(payment.pay_url.redirect_url)
        assert "¥9.90" in cashier.text
        done = await browser.post(
            f"{gateway}/ips/FormTrans3/pay",
            data={"sessionId": payment.pay_url.session_id, "outcome": "pay"},
        )
        fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', done.text))
        back = await browser.post(f"{shop}/return", data=fields)
        assert 200 == back.status_code
        with anyio.fail_after(30):
            while True:
                orders = json.loads((await browser.get(f"{gateway}/_sandbox/orders")).content)
                record: dict[str, Any] = next(o for o in orders if o["order_id"] == order_id)
                if record["delivery"] != "delivering":
                    return record
                await anyio.sleep(0.01)


def offline_minutes(record: dict[str, Any]) -> list[float]:
    """Virtual minutes of the OfflineNotify attempts the sandbox recorded."""
    return [a["minute"] for a in record["attempts"] if a["kind"] == "OfflineNotify"]


async def test_fails_twice_then_success_gets_three_attempts() -> None:
    """A handler failing twice, then answering SUCCESS, receives exactly 3 attempts."""
    merchant = ScriptedMerchant(b"FAIL", b"FAIL", b"SUCCESS")
    sandbox = Sandbox(clock=SandboxClock(MINUTE))
    with serve_in_thread(sandbox) as gateway, serve_in_thread(merchant, lifespan="off") as shop:
        record = await pay_through(gateway, shop, "E2E-3")

    minutes = offline_minutes(record)
    assert "acknowledged" == record["delivery"]
    assert 3 == len(minutes) == len(merchant.verified)
    for (a, b), gap in zip(itertools.pairwise(minutes), DOCUMENT_GAPS, strict=False):
        assert b - a >= gap
    assert 1 == len({n.pay_no for n in merchant.verified})
    assert merchant.page_notes[0].pay_no == merchant.verified[0].pay_no
    assert 990 == merchant.verified[-1].amount


async def test_always_failing_handler_gets_eight_attempts() -> None:
    """A handler that never answers SUCCESS receives exactly 8 attempts, then no more."""
    merchant = ScriptedMerchant(b"FAIL")
    sandbox = Sandbox(clock=SandboxClock(MINUTE))
    with serve_in_thread(sandbox) as gateway, serve_in_thread(merchant, lifespan="off") as shop:
        record = await pay_through(gateway, shop, "E2E-8")

    minutes = offline_minutes(record)
    assert "exhausted" == record["delivery"]
    assert 8 == len(minutes) == len(merchant.verified)
    assert minutes[-1] - minutes[0] >= sum(DOCUMENT_GAPS)
