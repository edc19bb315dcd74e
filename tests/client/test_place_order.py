"""place_order: a job that runs twice never fails with RPM22208 nor creates a second order."""

from __future__ import annotations

import httpx
import pytest

from cmpay_async import (
    Channel,
    CmpayClient,
    GatewayError,
    OrderState,
    Placement,
    TransportError,
    UnexpectedMessageError,
)
from cmpay_async.testing import Sandbox
from tests.support.helpers import _AsyncMock, make_client, valid_order

pytestmark = pytest.mark.anyio

ORDER_ID = "201103071740044998"


async def test_first_run_creates_the_order(client: CmpayClient, sandbox: Sandbox) -> None:
    """The first run creates it and hands back the pay link."""
    placed = await client.place_order(valid_order(), ip_address="1.2.3.4")

    assert placed.created is True
    assert OrderState.PENDING is placed.state
    assert placed.pay_url is not None
    assert sandbox.order(ORDER_ID).session_id == placed.pay_url.session_id
    assert placed.query is None


@pytest.mark.parametrize(
    ("outcome", "state"),
    [(None, OrderState.PENDING), (True, OrderState.PAID), (False, OrderState.FAILED)],
)
async def test_second_run_reports_what_the_gateway_knows(
    client: CmpayClient, sandbox: Sandbox, outcome: bool | None, state: OrderState
) -> None:
    """A redelivered job gets the order's state instead of RPM22208, and no second order."""
    await client.place_order(valid_order(), ip_address="1.2.3.4")
    if outcome is not None:
        sandbox.settle(sandbox.order(ORDER_ID), paid=outcome)
    seen = sandbox.requests_seen

    placed = await client.place_order(valid_order(), ip_address="1.2.3.4")

    assert placed.created is False
    assert state is placed.state
    assert placed.pay_url is None  # the protocol cannot fetch a pay link again
    assert placed.query is not None
    assert ORDER_ID == placed.query.order_id
    assert 1 == len(sandbox.orders)
    assert seen + 2 == sandbox.requests_seen  # the refused create, then one query


async def test_an_answer_lost_after_processing_is_recovered(sandbox: Sandbox) -> None:
    """The gateway created the order but the answer was cut: pending, not a second order."""
    sandbox.drop_next()
    async with make_client(httpx.ASGITransport(app=sandbox)) as client:
        placed = await client.place_order(valid_order(), ip_address="1.2.3.4")

    assert (False, OrderState.PENDING) == (placed.created, placed.state)
    assert 1 == len(sandbox.orders)


async def test_an_attempt_that_never_arrived_is_made_again(sandbox: Sandbox) -> None:
    """A read timeout before the gateway saw the order: the query says unknown, so create."""
    inner = httpx.ASGITransport(app=sandbox)
    lost = [True]

    async def handler(request: httpx.Request) -> httpx.Response:
        if lost and b"type=DirectPayConfirm" in request.content:
            lost.pop()
            raise httpx.ReadTimeout("lost on the way")
        return await inner.handle_async_request(request)

    async with make_client(_AsyncMock(handler)) as client:
        placed = await client.place_order(valid_order(), ip_address="1.2.3.4")

    assert placed.created is True
    assert placed.pay_url is not None
    assert 1 == len(sandbox.orders)


async def test_an_order_id_used_for_another_amount_is_refused(
    client: CmpayClient, sandbox: Sandbox
) -> None:
    """The same orderId with another amount is a merchant bug, not a recovered order."""
    await client.place_order(valid_order(amount=100), ip_address="1.2.3.4")

    with pytest.raises(UnexpectedMessageError) as caught:
        await client.place_order(valid_order(amount=200), ip_address="1.2.3.4")

    assert "amount" == caught.value.field
    assert str(caught.value).startswith(
        f"amount: orderId '{ORDER_ID}' is already used at the gateway for 100 fen, not 200: "
        "another order has this id"
    )


async def test_a_refusal_as_used_of_an_order_the_gateway_does_not_know_is_raised(
    client: CmpayClient, sandbox: Sandbox
) -> None:
    """RPM22208 yet the query finds nothing: not ours to fix, and no order is created."""
    sandbox.fail_next("RPM22208")

    with pytest.raises(GatewayError) as caught:
        await client.place_order(valid_order(), ip_address="1.2.3.4")

    assert "RPM22208" == caught.value.code
    assert [] == list(sandbox.orders)


@pytest.mark.parametrize("lose_first", [False, True], ids=["first-try", "made-again"])
async def test_the_channel_is_kept_whichever_try_creates_the_order(
    sandbox: Sandbox, lose_first: bool
) -> None:
    """channel=WAP reaches the create that succeeds, the first or the one after a lost try."""
    inner = httpx.ASGITransport(app=sandbox)
    lost = [True] if lose_first else []

    async def handler(request: httpx.Request) -> httpx.Response:
        if lost and b"DirectPayConfirm" in request.content:
            lost.pop()
            raise httpx.ReadTimeout("lost on the way")
        return await inner.handle_async_request(request)

    async with make_client(_AsyncMock(handler)) as client:
        placed = await client.place_order(valid_order(), ip_address="1.2.3.4", channel=Channel.WAP)

    assert placed.payment is not None
    assert (True, "WAPDirectPayConfirm") == (placed.created, placed.payment.type)


async def test_definite_refusals_still_raise(client: CmpayClient, sandbox: Sandbox) -> None:
    """Any other failure code is raised as it is (nothing to recover)."""
    sandbox.fail_next("MCG01033")

    with pytest.raises(GatewayError) as info:
        await client.place_order(valid_order(), ip_address="1.2.3.4")

    assert "MCG01033" == info.value.code


async def test_a_second_doubt_is_raised_for_the_next_run(sandbox: Sandbox) -> None:
    """If the query fails too, the error says maybe_sent; the job's next run will try again."""

    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("gateway unreachable after sending")

    async with make_client(_AsyncMock(handler)) as client:
        with pytest.raises(TransportError) as info:
            await client.place_order(valid_order(), ip_address="1.2.3.4")

    assert info.value.maybe_sent
    assert 0 == sandbox.requests_seen


def test_placement_round_trips_as_a_dict() -> None:
    """A Placement crosses a task queue as JSON-safe data."""
    placed = Placement(order_id="A1", state=OrderState.PAID, created=False)

    assert placed == Placement.from_dict(placed.to_dict())
    assert {"order_id": "A1", "state": "paid", "created": False} == {
        k: v for k, v in placed.to_dict().items() if v is not None
    }
