"""The cashier pages: the buyer sees the order, pays or fails it, and returns to the shop.

Paying settles the order and hands its notifications to delivery; the PageNotify goes back
through the buyer's browser, as a form the return page posts to the shop's ``callbackUrl``.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping

from cmpay_async._asgi import Request, Send, respond
from cmpay_async._codec import decode_payload
from cmpay_async._enums import CharacterSet
from cmpay_async._notify import encode_notification

from ._delivery import Delivery
from ._faults import NotifyFaults
from ._gateway import Gateway
from ._records import NotifyAttempt, SandboxOrder

__all__ = ["Cashier"]

_HTML = "text/html; charset=utf-8"


class Cashier:
    """Serves the cashier (``/ips/FormTrans3``, ``/ips/WAPCashier``) and its pay button."""

    def __init__(
        self, gateway: Gateway, delivery: Delivery, take_faults: Callable[[], NotifyFaults]
    ) -> None:
        self._gateway = gateway
        self._delivery = delivery
        # Takes (and so disarms) the faults armed for the next payment's notifications.
        self._take_faults = take_faults

    async def show(self, request: Request, send: Send) -> None:
        """The cashier page of a session: the order, and Pay and Fail buttons while pending."""
        params = dict(request.query)
        if request.method == "POST":
            params.update(decode_payload(request.body, form=True) if request.body.strip() else {})
        order = self._gateway.sessions.get(_session_id(params))
        if order is None:
            await respond(
                send, 404, _page("CMPay sandbox", "<p>Unknown or expired session.</p>"), _HTML
            )
            return
        merchant = self._gateway.merchants[order.merchant_id]
        mobile = request.path == "/ips/WAPCashier"
        fields = order.fields
        rows = [
            ("Merchant", fields.get("merchantAbbr") or merchant.name),
            ("Product", fields.get("productName", "")),
            ("Order", order.order_id),
            ("Amount", f"¥{order.amount // 100}.{order.amount % 100:02d}"),
        ]
        table = "".join(f"<tr><th>{k}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
        sid = html.escape(order.session_id, quote=True)
        if order.state != "pending":
            body = f"<table>{table}</table><p>This order is already {order.state}.</p>"
        else:
            buttons = "".join(
                f'<form method="post" action="/ips/FormTrans3/pay">'
                f'<input type="hidden" name="sessionId" value="{sid}">'
                f'<button name="outcome" value="{value}">{label}</button></form>'
                for value, label in (("pay", "Pay"), ("fail", "Fail"))
            )
            body = f"<table>{table}</table>{buttons}"
        title = "CMPay sandbox cashier" + (" (mobile)" if mobile else "")
        await respond(send, 200, _page(title, body, mobile=mobile), _HTML)

    async def pay(self, request: Request, send: Send) -> None:
        """The Pay or Fail button: settle the order, deliver its notifications, return."""
        form = decode_payload(request.body, form=True) if request.body.strip() else {}
        order = self._gateway.sessions.get(_session_id(form))
        if order is None or order.state != "pending":
            await respond(send, 409, _page("CMPay sandbox", "<p>Nothing to pay.</p>"), _HTML)
            return
        paid = form.get("outcome", "pay") == "pay"
        faults = self._take_faults()
        page_fields, offline_body = self._gateway.settle(order, paid=paid)
        if faults.lost:
            order.delivery = "lost"
            body = "<p>Paid. (Every notification of this payment is lost, as asked.)</p>"
            await respond(send, 200, _page("CMPay sandbox", body), _HTML)
            return
        if faults.page_at_once:
            page_body = encode_notification("PageNotify", page_fields, charset=order.charset)
            self._delivery.schedule(order, offline_body, faults, page_body)
            body = "<p>Paid. (The sandbox posts the PageNotify itself, as asked.)</p>"
            await respond(send, 200, _page("CMPay sandbox", body), _HTML)
            return
        self._delivery.schedule(order, offline_body, faults)
        order.attempts.append(
            NotifyAttempt(
                kind="PageNotify",
                attempt=1,
                minute=round(self._delivery.clock.now(), 3),
                status=None,
                answer="handed to the buyer's browser",
            )
        )
        page, content_type = _return_page(order, page_fields)
        await respond(send, 200, page, content_type)


def _return_page(order: SandboxOrder, page_fields: Mapping[str, str]) -> tuple[bytes, str]:
    """The page whose form takes the buyer back to the shop with the PageNotify."""
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(k, quote=True)}" '
        f'value="{html.escape(v, quote=True)}">'
        for k, v in page_fields.items()
    )
    action = html.escape(order.fields["callbackUrl"], quote=True)
    # The page, and so the browser's form post, is in the order's charset.
    charset = order.charset.http_name
    body = (
        f'<form id="notify" method="post" action="{action}" accept-charset="{charset}">'
        f"{inputs}"
        '<noscript><button type="submit">Return to the shop</button></noscript></form>'
        '<script>document.getElementById("notify").submit()</script>'
    )
    page = _page("Returning to the shop", body, charset=order.charset)
    return page, f"text/html; charset={charset}"


def _session_id(params: Mapping[str, str]) -> str:
    # The vendor's PHP demo posts SESSIONID=, the document sessionId=: any letter case.
    for name, value in params.items():
        if name.lower() == "sessionid":
            return value
    return ""


def _page(
    title: str, body: str, *, mobile: bool = False, charset: CharacterSet = CharacterSet.UTF8
) -> bytes:
    viewport = '<meta name="viewport" content="width=device-width">' if mobile else ""
    return (
        f'<!DOCTYPE html><html><head><meta charset="{charset.http_name}">{viewport}'
        # No favicon request: a browser would log the sandbox's 404 for it as an error.
        '<link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    ).encode(charset.codec, "xmlcharrefreplace")
