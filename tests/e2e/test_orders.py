"""OrderQuery, OrderRefund and the WAP cashier, end to end over real TCP."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import httpx
import pytest

from cmpay_async import (
    Channel,
    GatewayError,
    Md5Signer,
    Order,
    OrderState,
    Timeouts,
    TransportTimeoutError,
    ValidationError,
)
from cmpay_async._protocol import build_order_request
from cmpay_async._serve import serve_in_thread
from cmpay_async.testing import (
    Sandbox,
    SandboxClock,
)
from tests.support.helpers import MD5_VECTORS, TEST_KEY, TEST_MERCHANT, sandbox_client
from tests.support.merchant import ScriptedMerchant
from tests.support.readme import run_examples

pytestmark = pytest.mark.anyio

VECTORS = {v["message"]: v for v in MD5_VECTORS["vectors"]}


@pytest.mark.parametrize(("message", "amount"), [("OrderQuery", None), ("OrderRefund", 100)])
def test_requests_reproduce_the_vectors(message: str, amount: int | None) -> None:
    """The client's OrderQuery and OrderRefund requests carry the vectors' exact hmac."""
    vector = VECTORS[message]
    request = build_order_request(
        message,
        vector["fields"]["orderId"],
        merchant_id=TEST_MERCHANT,
        request_id=vector["fields"]["requestId"],
        signer=Md5Signer(TEST_KEY),
        amount=amount,
    )

    assert vector["hmac"] == request.fields["hmac"]
    assert b"requestId=2011%2F3%2F9+1" in request.body


class SandboxAndShop(NamedTuple):
    """The sandbox and the scripted merchant, each with the loopback URL it is served at."""

    sandbox: Sandbox
    url: str
    merchant: ScriptedMerchant
    shop: str


@pytest.fixture(scope="module")
def sandbox_and_shop() -> Iterator[SandboxAndShop]:
    """A sandbox and a merchant on loopback TCP, shared by this module's tests."""
    sandbox = Sandbox(clock=SandboxClock(0.001))
    merchant = ScriptedMerchant(b"SUCCESS")
    with serve_in_thread(sandbox) as url, serve_in_thread(merchant, lifespan="off") as shop:
        yield SandboxAndShop(sandbox, url, merchant, shop)


@pytest.fixture
def uid() -> str:
    """A suffix that keeps order ids unique across tests sharing one sandbox."""
    return uuid.uuid4().hex[:10]


async def pay(url: str, session_id: str, *, page: str = "/ips/FormTrans3") -> dict[str, str]:
    """Open the cashier and press Pay like a browser; return the PageNotify form fields."""
    async with httpx.AsyncClient() as browser:
        cashier = await browser.get(f"{url}{page}?sessionId={session_id}")
        assert 200 == cashier.status_code
        done = await browser.post(
            f"{url}/ips/FormTrans3/pay", data={"sessionId": session_id, "outcome": "pay"}
        )
    return dict(re.findall(r'name="([^"]+)" value="([^"]*)"', done.text))


async def test_pay_query_refund_query(sandbox_and_shop: Any, uid: str) -> None:
    """Pay, query paid, refund part, refuse a refund over the rest, query again."""
    sandbox, url, _, shop = sandbox_and_shop
    async with sandbox_client(url, shop) as client:
        payment = await client.create_payment(
            Order(amount=1000, order_id=f"FLOW1-{uid}", product_name="T"), ip_address="127.0.0.1"
        )
        pending = await client.query_order(f"FLOW1-{uid}")
        await pay(url, payment.pay_url.session_id)
        paid = await client.query_order(f"FLOW1-{uid}")
        refund = await client.refund(f"FLOW1-{uid}", 600)
        with pytest.raises(GatewayError) as over_rest:
            await client.refund(f"FLOW1-{uid}", 500)
        with pytest.raises(GatewayError) as over_paid:
            await client.refund(f"FLOW1-{uid}", 1001)
        after = await client.query_order(f"FLOW1-{uid}")

    assert OrderState.PENDING is pending.state
    assert OrderState.PAID is paid.state
    assert paid.paid
    assert 1000 == paid.amount == paid.amount_items.cash  # type: ignore[union-attr]
    assert paid.pay_no
    assert paid.pay_date is not None
    assert 600 == refund.amount
    assert paid.pay_no == refund.pay_no
    assert "RPM22407" == over_rest.value.code
    assert "RPM22401" == over_paid.value.code
    assert 600 == sandbox.order(f"FLOW1-{uid}").refunded
    assert OrderState.PAID is after.state


async def test_query_of_unknown_order_is_not_found(sandbox_and_shop: Any, uid: str) -> None:
    """RPM22201 comes back as a verified NOT_FOUND result, not an exception."""
    _, url, _, shop = sandbox_and_shop
    async with sandbox_client(url, shop) as client:
        result = await client.query_order("NO-SUCH-ORDER")

    assert OrderState.NOT_FOUND is result.state
    assert not result.found
    assert "RPM22201" == result.return_code


async def test_refund_amount_is_checked_locally(sandbox_and_shop: Any, uid: str) -> None:
    """Zero, negative, float and bool refund amounts never leave the process."""
    sandbox, url, _, shop = sandbox_and_shop
    seen = sandbox.requests_seen
    async with sandbox_client(url, shop) as client:
        for amount in (0, -5, 1.5, True):
            with pytest.raises(ValidationError, match="amount: "):
                await client.refund(f"FLOW1-{uid}", amount)  # type: ignore[arg-type]

    assert seen == sandbox.requests_seen


async def test_refund_of_unknown_or_unpaid_order(sandbox_and_shop: Any, uid: str) -> None:
    """Refunding an order that does not exist, or is not paid, is a gateway error."""
    _, url, _, shop = sandbox_and_shop
    async with sandbox_client(url, shop) as client:
        await client.create_payment(
            Order(amount=100, order_id=f"UNPAID1-{uid}", product_name="T"), ip_address="127.0.0.1"
        )
        with pytest.raises(GatewayError, match="RPM22201"):
            await client.refund("NO-SUCH-ORDER", 1)
        with pytest.raises(GatewayError, match="RPM22208"):
            await client.refund(f"UNPAID1-{uid}", 1)


async def test_wap_payment_reaches_pagenotify(sandbox_and_shop: Any, uid: str) -> None:
    """A WAP order opens the mobile cashier and ends in a signed PageNotify."""
    _, url, merchant, shop = sandbox_and_shop
    async with sandbox_client(url, shop) as client:
        payment = await client.create_payment(
            Order(amount=250, order_id=f"WAP1-{uid}", product_name="手机"),
            ip_address="127.0.0.1",
            channel=Channel.WAP,
        )
    assert payment.pay_url.url.endswith("/ips/WAPCashier")
    assert "WAPDirectPayConfirm" == payment.type

    fields = await pay(url, payment.pay_url.session_id, page="/ips/WAPCashier")
    async with httpx.AsyncClient() as browser:
        back = await browser.post(f"{shop}/return", data=fields)

    assert 200 == back.status_code
    assert f"WAP1-{uid}" == merchant.page_notes[-1].order_id
    assert merchant.page_notes[-1].paid


async def test_ambiguous_timeout_recipe_does_not_duplicate(sandbox_and_shop: Any, uid: str) -> None:
    """The gateway processes the order but the answer is cut: the recipe learns it exists."""
    sandbox, url, _, shop = sandbox_and_shop
    place_order = run_examples("recover")["place_order"]
    sandbox.drop_next()
    before = sandbox.requests_seen

    async with sandbox_client(url, shop) as client:
        outcome = await place_order(
            client, Order(amount=300, order_id=f"LOST1-{uid}", product_name="T"), "127.0.0.1"
        )
        status = await client.query_order(f"LOST1-{uid}")

    assert outcome is None
    assert OrderState.PENDING is status.state
    assert 1 == sum(1 for key in sandbox.orders if key[1] == f"LOST1-{uid}")
    assert before + 3 == sandbox.requests_seen  # create (cut), query, the test's own query


async def test_recipe_recreates_an_order_that_never_arrived(
    sandbox_and_shop: Any, uid: str
) -> None:
    """If the query says NOT_FOUND, the recipe creates the order (once)."""
    _, url, _, shop = sandbox_and_shop
    place_order = run_examples("recover")["place_order"]

    class LoseFirstRequest(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()
            self.lost = False

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if not self.lost:
                self.lost = True
                raise httpx.WriteTimeout("lost on the way")
            return await self.inner.handle_async_request(request)

        async def aclose(self) -> None:
            await self.inner.aclose()

    async with sandbox_client(url, shop, transport=LoseFirstRequest()) as client:
        outcome = await place_order(
            client, Order(amount=300, order_id=f"NEVER1-{uid}", product_name="T"), "127.0.0.1"
        )

    assert outcome is not None
    assert outcome.pay_url.session_id


async def test_delayed_answer_times_out_as_maybe_sent(sandbox_and_shop: Any, uid: str) -> None:
    """A gateway slower than the read timeout gives a TimeoutError that says maybe_sent."""
    sandbox, url, _, shop = sandbox_and_shop
    sandbox.delay_next(0.5)  # five times the read timeout: a margin, not a speed claim
    async with sandbox_client(url, shop, timeouts=Timeouts(read=0.1)) as client:
        with pytest.raises(TimeoutError) as info:
            await client.create_payment(
                Order(amount=100, order_id=f"SLOW-{uid}", product_name="T"),
                ip_address="127.0.0.1",
            )

    assert TransportTimeoutError is type(info.value)
    assert info.value.maybe_sent is True
