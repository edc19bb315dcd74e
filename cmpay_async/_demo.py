"""The demo: the whole payment flow on one machine, over real TCP, with a timeline.

A sandbox gateway and a small shop (``DemoShop``: ``CmpayClient`` for orders,
``verify_notification`` and ``ack`` for notifications) run on free loopback ports; the demo
places an order, pays at the cashier like a browser, and follows both notifications. The shop
answers the first OfflineNotify with a failure on purpose, so the gateway's retry is seen.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx

from ._asgi import Receive, Scope, Send, read_request, respond
from ._client import CmpayClient
from ._exceptions import CmpayError
from ._models import CHINA_TZ, Notification, OfflineNotify, Order
from ._notify import ack, nack, verify_notification
from ._sandbox import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, Sandbox, SandboxClock
from ._serve import serve_in_thread
from ._signing import Md5Signer

__all__ = ["DemoShop", "run_demo"]

_INPUT = re.compile(r'<input type="hidden" name="([^"]*)" value="([^"]*)">')
_ACTION = re.compile(r'<form id="notify" method="post" action="([^"]*)"[^>]*>')


class Timeline:
    """Events from every thread, stamped on one monotonic clock."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self._events: list[tuple[float, bool, str]] = []
        self._lock = threading.Lock()

    def add(self, text: str, *, ok: bool = True) -> None:
        """Record an event now."""
        with self._lock:
            self._events.append((time.perf_counter(), ok, text))

    def lines(self) -> list[str]:
        """The events in order, with milliseconds since the start."""
        with self._lock:
            events = sorted(self._events)
        return [
            f"{(t - self.start) * 1000:9.1f} ms  {'✓' if ok else '✗'} {text}"
            for t, ok, text in events
        ]

    @property
    def failures(self) -> int:
        """How many events were failures."""
        return sum(1 for _, ok, _ in self._events if not ok)


class DemoShop:
    """A merchant's notification endpoints as a plain ASGI app."""

    def __init__(self, timeline: Timeline, *, fail_first_offline: bool = True) -> None:
        self.timeline = timeline
        self.verifier = Md5Signer(PUBLIC_TEST_KEY)
        self.fail_first_offline = fail_first_offline
        self.paid: dict[str, Notification] = {}  # pay_no -> notification: the "database"
        self.offline_attempts = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route ``/cmpay/return`` (PageNotify) and ``/cmpay/notify`` (OfflineNotify)."""
        if scope["type"] != "http":
            return
        request = await read_request(scope, receive)
        kind = {"/cmpay/return": "PageNotify", "/cmpay/notify": "OfflineNotify"}.get(request.path)
        if kind is None or request.method != "POST":
            await respond(send, 404, b"not found")
            return
        attempt = ""
        if kind == "OfflineNotify":
            self.offline_attempts += 1
            attempt = f" #{self.offline_attempts}"
        try:
            note = verify_notification(
                request.body, verifier=self.verifier, merchant_id=PUBLIC_TEST_MERCHANT
            )
        except CmpayError as exc:
            self.timeline.add(f"shop: {kind}{attempt} REJECTED: {exc}", ok=False)
            await respond(send, 400, b"invalid notification")
            return
        summary = (
            f"payNo {note.pay_no}, order {note.order_id}, {note.amount} fen, {note.status.value}"
        )
        if isinstance(note, OfflineNotify):
            if self.fail_first_offline and self.offline_attempts == 1:
                self.timeline.add(
                    f"shop: OfflineNotify #1 verified ({summary}); answered FAIL on purpose"
                )
                answer = nack()
                await respond(send, answer.status_code, answer.body)
                return
            first = note.pay_no not in self.paid
            self.paid.setdefault(note.pay_no, note)  # idempotent: saved before the ack
            state = "saved" if first else "already saved"
            self.timeline.add(
                f"shop: OfflineNotify{attempt} verified ({summary}), {state}; answered SUCCESS"
            )
            answer = ack()
            await respond(send, answer.status_code, answer.body, headers=dict(answer.headers))
            return
        self.paid.setdefault(note.pay_no, note)
        self.timeline.add(f"shop: PageNotify verified in the buyer's browser post ({summary})")
        page = f"<p>Thank you: order {html.escape(note.order_id)} is paid.</p>".encode()
        await respond(send, 200, page, "text/html; charset=utf-8")


async def _flow(gateway: str, shop_url: str, shop: DemoShop, timeline: Timeline) -> None:
    order_id = dt.datetime.now(CHINA_TZ).strftime("DEMO%Y%m%d%H%M%S%f")
    async with CmpayClient(
        merchant_id=PUBLIC_TEST_MERCHANT,
        signer=Md5Signer(PUBLIC_TEST_KEY),
        endpoint=f"{gateway}/ips/cmpayService",
        callback_url=f"{shop_url}/cmpay/return",
        notify_url=f"{shop_url}/cmpay/notify",
    ) as client:
        order = Order(amount=1250, order_id=order_id, product_name="Demo coffee 咖啡")
        payment = await client.create_payment(order, ip_address="127.0.0.1")
    timeline.add(
        f"client: order {order_id} placed, answer verified "
        f"(requestId {payment.request_id}, sessionId {payment.pay_url.session_id})"
    )
    async with httpx.AsyncClient(timeout=10) as browser:
        cashier = await browser.get(payment.pay_url.redirect_url)
        cashier.raise_for_status()
        shows = "¥12.50" in cashier.text and "Demo coffee" in cashier.text
        timeline.add(f"browser: cashier opened at {payment.pay_url.url}", ok=shows)
        timeline.add("browser: pressed Pay")
        done = await browser.post(
            f"{gateway}/ips/FormTrans3/pay",
            data={"sessionId": payment.pay_url.session_id, "outcome": "pay"},
        )
        done.raise_for_status()
        action = _ACTION.search(done.text)
        fields = {html.unescape(k): html.unescape(v) for k, v in _INPUT.findall(done.text)}
        timeline.add("browser: the cashier answered with an auto-submitting PageNotify form")
        if action is None:
            timeline.add("browser: no PageNotify form in the cashier's answer", ok=False)
            return
        # A browser posts the form in the page's charset (the order's characterSet).
        charset = done.charset_encoding or "utf-8"
        back = await browser.post(
            html.unescape(action.group(1)),
            content=urlencode(fields, encoding=charset),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        timeline.add(f"browser: returned to the shop (HTTP {back.status_code})", ok=back.is_success)
        # The gateway keeps retrying until it records an exact SUCCESS: follow its record.
        with anyio.fail_after(30):
            while True:
                orders = json.loads((await browser.get(f"{gateway}/_sandbox/orders")).content)
                record = next(o for o in orders if o["order_id"] == order_id)
                if record["delivery"] != "delivering":
                    break
                await anyio.sleep(0.005)
    answers = [a["answer"] for a in record["attempts"] if a["kind"] == "OfflineNotify"]
    timeline.add(
        f"sandbox: OfflineNotify attempts answered {answers}; delivery {record['delivery']}",
        ok=answers == ["FAIL", "SUCCESS"] and record["delivery"] == "acknowledged",
    )
    paid = [n for n in shop.paid.values() if n.order_id == order_id]
    timeline.add(
        f"shop: order {order_id} recorded paid once ({len(paid)} payment)",
        ok=len(paid) == 1 and paid[0].paid and paid[0].amount == 1250,
    )


def run_demo(
    *,
    seconds_per_minute: float = 0.01,
    backend: str = "asyncio",
    out: Callable[[str], Any] = print,
) -> int:
    """Run the demo and print its timeline; 0 only if every step verified."""
    timeline = Timeline()
    sandbox = Sandbox(clock=SandboxClock(seconds_per_minute))
    shop = DemoShop(timeline)
    out("cmpay-async demo: sandbox gateway + shop on loopback, public test merchant")
    out(f"(one gateway minute lasts {seconds_per_minute * 1000:g} ms of real time)")
    try:
        with serve_in_thread(sandbox) as gateway, serve_in_thread(shop, lifespan="off") as shop_url:
            timeline.add(f"sandbox gateway listening on {gateway}")
            timeline.add(f"shop listening on {shop_url}")
            anyio.run(_flow, gateway, shop_url, shop, timeline, backend=backend)
    except Exception as exc:  # the demo reports any failure in its timeline, then exits 1
        timeline.add(f"demo stopped: {type(exc).__name__}: {exc}", ok=False)
    for line in timeline.lines():
        out(line)
    if timeline.failures:
        out(f"FAILED: {timeline.failures} step(s) did not verify")
        return 1
    out("OK: every step verified")
    return 0
