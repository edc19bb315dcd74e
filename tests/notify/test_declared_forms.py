"""What the merchant declares about its own traffic (the form of its order ids, bank codes
newer than appendix 9.1) reaches verification through every entry point."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cmpay_async import BlockingCmpayClient, Md5Signer, NotificationProcessor, PaymentEvent
from cmpay_async.stores import MemoryStore
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, sign_notification
from tests.support.helpers import make_client

VERIFIER = Md5Signer(PUBLIC_TEST_KEY)


def _body(**fields: Any) -> bytes:
    return sign_notification(kind="OfflineNotify", amount=1250, **fields)


def _processor(handled: list[PaymentEvent], **kw: Any) -> NotificationProcessor:
    async def handler(event: PaymentEvent) -> None:
        handled.append(event)

    return NotificationProcessor(
        verifier=VERIFIER,
        merchant_id=PUBLIC_TEST_MERCHANT,
        store=MemoryStore(),
        handler=handler,
        **kw,
    )


@pytest.mark.anyio
async def test_the_processor_refuses_an_order_id_of_another_form_without_the_handler() -> None:
    """With order_id_pattern declared, a notification whose orderId has another form is
    answered 400 FAIL and the handler never runs; one of the declared form is handled."""
    handled: list[PaymentEvent] = []
    processor = _processor(handled, order_id_pattern=r"[0-9]{12}")

    refused = await processor.process(_body(order_id="ICBC20261206"))
    accepted = await processor.process(_body(order_id="202612060001"))

    assert (400, b"FAIL") == (refused.status_code, refused.body)
    assert (200, b"SUCCESS") == (accepted.status_code, accepted.body)
    assert ["202612060001"] == [e.order_id for e in handled]


@pytest.mark.anyio
async def test_the_processor_admits_the_bank_codes_it_is_given() -> None:
    """A bank code newer than appendix 9.1 is refused unless declared in extra_bank_codes."""
    handled: list[PaymentEvent] = []
    body = _body(order_id="N1", bank_abbr="NEWBANK")

    refused = await _processor(handled).process(body)
    accepted = await _processor(handled, extra_bank_codes={"NEWBANK"}).process(body)

    assert (b"FAIL", b"SUCCESS") == (refused.body, accepted.body)
    assert ["N1"] == [e.order_id for e in handled]


@pytest.mark.anyio
async def test_the_client_verifies_with_its_extra_bank_codes_and_a_declared_form() -> None:
    """CmpayClient.verify_notification uses the client's extra_bank_codes and the
    order_id_pattern it is given."""
    body = _body(order_id="A7", bank_abbr="NEWBANK")
    transport = httpx.MockTransport(lambda request: httpx.Response(500))
    async with (
        make_client(transport) as plain,
        make_client(transport, extra_bank_codes={"NEWBANK"}) as client,
    ):
        with pytest.raises(Exception, match=r"^bankAbbr: unknown bank code 'NEWBANK'"):
            plain.verify_notification(body)
        assert "NEWBANK" == client.verify_notification(body).bank_abbr
        with pytest.raises(Exception, match=r"^orderId: does not have the form"):
            client.verify_notification(body, order_id_pattern=r"[0-9]+")


def test_the_blocking_client_passes_the_declared_form_on() -> None:
    """BlockingCmpayClient.verify_notification takes order_id_pattern too."""
    body = _body(order_id="A7")
    with BlockingCmpayClient(
        merchant_id=PUBLIC_TEST_MERCHANT,
        signer=VERIFIER,
        endpoint="http://127.0.0.1:9/ips/cmpayService",
    ) as client:
        assert "A7" == client.verify_notification(body, order_id_pattern=r"A[0-9]").order_id
        with pytest.raises(Exception, match=r"^orderId: does not have the form"):
            client.verify_notification(body, order_id_pattern=r"[0-9]+")
