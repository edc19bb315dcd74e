"""Public API used as a merchant would; checked by ``mypy --strict`` (never run)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import cmpay_async
from cmpay_async import (
    CharacterSet,
    GatewayError,
    Md5Signer,
    Order,
    PaymentResponse,
    PeriodUnit,
    Signer,
    ValidationError,
    Verifier,
    build_payment_request,
    parse_payment_response,
    yuan_to_fen,
)


def make_order() -> Order:
    """An order built with typed values."""
    return Order(
        amount=yuan_to_fen(Decimal("12.50")),
        order_id="A1",
        product_name="咖啡",
        period=30,
        period_unit=PeriodUnit.MINUTES,
        order_date=dt.date(2026, 11, 26),
    )


def sign_and_read(body: bytes) -> str:
    """Sign a request and read an answer."""
    signer: Signer = Md5Signer("k-not-the-merchants-key")
    verifier: Verifier = Md5Signer("k-not-the-merchants-key")
    try:
        request = build_payment_request(
            make_order(),
            merchant_id="M",
            request_id="R",
            ip_address="1.2.3.4",
            signer=signer,
            today=dt.date(2026, 11, 26),
            character_set=CharacterSet.GBK,
        )
    except ValidationError as exc:
        return "; ".join(f"{p.field}={p.rule}" for p in exc.problems)
    assert request.content_type
    try:
        response: PaymentResponse = parse_payment_response(body, verifier=verifier)
    except GatewayError as exc:
        return exc.code
    return response.pay_url.redirect_url + cmpay_async.__version__


async def use_the_client(body: bytes) -> int:
    """The async API as a merchant's web app would use it."""
    async with cmpay_async.CmpayClient(
        merchant_id="M",
        signer=Md5Signer("k-not-the-merchants-key"),
        callback_url="https://shop.example/r",
        notify_url="https://shop.example/n",
        timeouts=cmpay_async.Timeouts(read=20.0),
        retry=cmpay_async.RetryPolicy(attempts=2),
    ) as client:
        payment = await client.create_payment(
            make_order(), ip_address="1.2.3.4", channel=cmpay_async.Channel.WAP
        )
        html: str = payment.pay_url.form_html()
        result: cmpay_async.OrderQueryResult = await client.query_order("A1")
        if result.state is cmpay_async.OrderState.PAID and result.amount is not None:
            refund: cmpay_async.RefundResult = await client.refund("A1", result.amount)
            assert refund.amount
    note = cmpay_async.verify_notification(
        body, verifier=Md5Signer("k-not-the-merchants-key"), merchant_id="M"
    )
    answer: cmpay_async.Ack = cmpay_async.ack() if note.paid else cmpay_async.nack()
    return answer.status_code + len(html)


def carry_across_processes(note: cmpay_async.Notification) -> cmpay_async.Notification:
    """Models to JSON-safe dicts and back; errors carry what a task queue needs."""
    data: dict[str, object] = note.to_dict()
    again: cmpay_async.Notification = cmpay_async.Notification.from_dict(data)
    items: cmpay_async.AmountItems = cmpay_async.AmountItems.from_dict({"cash": 1})
    assert items.total
    error: cmpay_async.CmpayError = cmpay_async.TransportTimeoutError("late", maybe_sent=True)
    retry_later: bool = not error.maybe_sent and error.order_id is None
    return again if retry_later else note


def lifecycle_settings() -> cmpay_async.CmpayClient:
    """A module-level client with a total deadline and an in-doubt hook."""
    doubts: list[str] = []

    def remember(doubt: cmpay_async.InDoubt) -> None:
        doubts.append(doubt.order_id)

    return cmpay_async.CmpayClient(
        merchant_id="M",
        signer=Md5Signer("k-not-the-merchants-key"),
        timeouts=cmpay_async.Timeouts(total=20.0, pool=2.0),
        on_in_doubt=remember,
    )


def receive_without_await(body: bytes) -> bytes:
    """A plain-function handler, the blocking processor, the inbox and the framework glue."""
    from cmpay_async.inbox import DrainReport, Inbox
    from cmpay_async.inbox.sqlite import SqliteInbox
    from cmpay_async.integrations.flask import notify_view
    from cmpay_async.stores import MemoryStore

    def handler(event: cmpay_async.PaymentEvent) -> None:
        assert event.amount is not None

    processor = cmpay_async.NotificationProcessor(
        verifier=Md5Signer("k-not-the-merchants-key"),
        merchant_id="M",
        store=MemoryStore(),
        handler=handler,
    )
    receipt: cmpay_async.Receipt = processor.receive_sync(body, charset="GBK")
    inbox = Inbox(
        backend=SqliteInbox("inbox.db"),
        verifier=Md5Signer("k-not-the-merchants-key"),
        merchant_id="M",
        handler=handler,
    )
    report: DrainReport = inbox.drain_sync(limit=10)
    view: object = notify_view(inbox)
    assert report.handled >= 0, view
    return receipt.ack.body + processor.process_sync(body).body


def blocking_settings() -> list[cmpay_async.BlockingCmpayClient]:
    """The blocking client takes CmpayClient's own typed keywords, or a CmpayClient."""
    signer = Md5Signer("k-not-the-merchants-key")
    typed = cmpay_async.BlockingCmpayClient(
        merchant_id="M", signer=signer, timeouts=cmpay_async.Timeouts(total=20.0)
    )
    wrapped = cmpay_async.BlockingCmpayClient(
        cmpay_async.CmpayClient(merchant_id="M", signer=signer)
    )
    # Each line below must stay a type error (warn_unused_ignores fails the run otherwise).
    misspelt = cmpay_async.BlockingCmpayClient(merchant_idd="M", signer=signer)  # type: ignore[call-overload]
    mistyped = cmpay_async.BlockingCmpayClient(merchant_id="M", signer=signer, max_connections="9")  # type: ignore[call-overload]
    return [typed, wrapped, misspelt, mistyped]
