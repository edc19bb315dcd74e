"""The sandbox as an ASGI app: routing, the control endpoints, and the service endpoint.

``Sandbox`` puts the parts together: the gateway's logic (``_gateway``), the cashier pages
(``_cashier``), notification delivery (``_delivery``) and the faults (``_faults``), whose
methods it offers.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import httpx

from cmpay_async._asgi import Receive, Request, Scope, Send, read_request, respond
from cmpay_async._testkeys import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT

from ._cashier import Cashier
from ._delivery import Delivery, SandboxClock
from ._faults import FAULTS, FaultControls, Faults, NotifyFaults
from ._gateway import Gateway
from ._records import (
    Merchant,
    NotifyAttempt,
    SandboxKeyWarning,
    SandboxOrder,
    holds_another_md5_key,
)

__all__ = ["CONTROL_TOKEN_HEADER", "SANDBOX_BASE_URL", "Sandbox"]

#: The header that must carry ``Sandbox.control_token`` on ``POST /_sandbox/*``.
CONTROL_TOKEN_HEADER = "X-Sandbox-Token"  # noqa: S105 - a header name, not a secret

#: Pay links of a sandbox not served over TCP: a host that can never resolve (RFC 2606), so
#: that no link of an in-process sandbox leads to the real gateway.
SANDBOX_BASE_URL = "http://cmpay-sandbox.invalid"


class Sandbox(FaultControls):
    """A simulated CMPay gateway as an ASGI application.

    By default it knows the vendor's public test merchant; pass ``merchants`` for others.
    Background delivery of OfflineNotify runs while the app's lifespan runs (any ASGI server)
    or inside ``async with sandbox.running():`` (in-process tests).

    ``POST /_sandbox/faults`` takes only ``Content-Type: application/json`` with the header
    ``X-Sandbox-Token: <control_token>`` (random per instance unless given), so that no web
    page the developer visits can arm a fault with a form; ``GET /_sandbox/orders`` changes
    nothing and needs no token. A merchant whose signKey is not ``PUBLIC_TEST_KEY`` draws a
    ``SandboxKeyWarning``: this is a simulator, and a real key does not belong in it.
    """

    def __init__(
        self,
        *,
        merchants: list[Merchant] | None = None,
        clock: SandboxClock | None = None,
        notify_transport: httpx.AsyncBaseTransport | None = None,
        now: Callable[[], dt.datetime] | None = None,
        base_url: str = SANDBOX_BASE_URL,
        on_attempt: Callable[[SandboxOrder, NotifyAttempt], object] | None = None,
        control_token: str | None = None,
    ) -> None:
        #: Where the sandbox's cashier is reached: pay links point here, whatever Host a
        #: client sent. Serving it over TCP sets the real address.
        self.base_url = base_url.rstrip("/")
        #: Called with each notification attempt as it is answered (the CLI prints them).
        self.on_attempt = on_attempt
        merchants = merchants or [Merchant.md5(PUBLIC_TEST_MERCHANT, PUBLIC_TEST_KEY)]
        for merchant in merchants:
            if holds_another_md5_key(merchant):
                warnings.warn(
                    f"the sandbox merchant {merchant.merchant_id} signs with a signKey that is "
                    "not the public test key (cmpay_async.testing.PUBLIC_TEST_KEY): the "
                    "sandbox is a simulator, never give it a real merchant's key",
                    SandboxKeyWarning,
                    stacklevel=2,
                )
        #: The secret that ``POST /_sandbox/*`` must send in ``X-Sandbox-Token``.
        self.control_token = control_token or secrets.token_urlsafe(24)
        self._gateway = Gateway(merchants, now)
        self._delivery = Delivery(clock or SandboxClock(), notify_transport, self._attempted)
        self._cashier = Cashier(self._gateway, self._delivery, self._take_notify_faults)
        self.faults = Faults()
        self.notify_faults = NotifyFaults()
        #: How many service requests arrived (``POST /ips/cmpayService``).
        self.requests_seen = 0

    # -- configuration and inspection ---------------------------------------------------------

    @property
    def clock(self) -> SandboxClock:
        """The clock the notification schedule runs on."""
        return self._delivery.clock

    @property
    def merchants(self) -> dict[str, Merchant]:
        """The merchants the sandbox knows, by id."""
        return self._gateway.merchants

    @property
    def orders(self) -> dict[tuple[str, str], SandboxOrder]:
        """Every order accepted, by merchant id and order id."""
        return self._gateway.orders

    @property
    def sessions(self) -> dict[str, SandboxOrder]:
        """Every order accepted, by the cashier session of its pay link."""
        return self._gateway.sessions

    @property
    def request_ids(self) -> set[tuple[str, str]]:
        """The request ids used, with their merchant id: each may be used once."""
        return self._gateway.request_ids

    @property
    def merchant_id(self) -> str:
        """The id of the first (default) merchant."""
        return next(iter(self.merchants))

    def order(self, order_id: str, merchant_id: str | None = None) -> SandboxOrder:
        """The order with this id (of the default merchant unless told)."""
        return self.orders[(merchant_id or self.merchant_id, order_id)]

    def settle(self, order: SandboxOrder, *, paid: bool) -> tuple[dict[str, str], bytes]:
        """Mark an order paid or failed; return PageNotify fields and the OfflineNotify body.

        The body is encoded in the order's ``characterSet`` (GBK when it was empty), as the
        vendor's notify pages expect; the signature covers the decoded text either way.
        """
        return self._gateway.settle(order, paid=paid)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Sandbox]:
        """Run notification delivery in the background for the duration of the block."""
        async with self._delivery.running():
            yield self

    def _attempted(self, order: SandboxOrder, attempt: NotifyAttempt) -> None:
        if self.on_attempt is not None:
            self.on_attempt(order, attempt)

    def _take_notify_faults(self) -> NotifyFaults:
        faults, self.notify_faults = self.notify_faults, NotifyFaults()
        return faults

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = await read_request(scope, receive)
        route = (request.method, request.path)
        if route == ("POST", "/ips/cmpayService"):
            await self._service(request, send)
        elif request.path in ("/ips/FormTrans3", "/ips/WAPCashier"):
            await self._cashier.show(request, send)
        elif route == ("POST", "/ips/FormTrans3/pay"):
            await self._cashier.pay(request, send)
        elif route == ("POST", "/_sandbox/faults"):
            await self._faults_endpoint(request, send)
        elif route == ("GET", "/_sandbox/orders"):
            data = [o.to_json() for o in self.orders.values()]
            body = json.dumps(data, ensure_ascii=False, indent=1).encode()
            await respond(send, 200, body, "application/json")
        else:
            await respond(send, 404, b"not found")

    async def _faults_endpoint(self, request: Request, send: Send) -> None:
        refusal = self._control_refusal(request)
        if refusal is not None:
            status, reason = refusal
            await respond(send, status, json.dumps({"error": reason}).encode(), "application/json")
            return
        try:
            faults = json.loads(request.body or b"{}")
            if not isinstance(faults, dict):
                raise ValueError("the body must be a JSON object of fault names")
            armed = self.arm(faults)
        except ValueError as exc:  # JSONDecodeError included
            body = json.dumps({"error": str(exc), "faults": sorted(FAULTS)}).encode()
            await respond(send, 400, body, "application/json")
            return
        await respond(send, 200, json.dumps({"armed": armed}).encode(), "application/json")

    def _control_refusal(self, request: Request) -> tuple[int, str] | None:
        """Why a control request is refused (status, reason), or None to accept it.

        A web page can send a cross-origin form or text POST without asking, but neither
        ``application/json`` nor a custom header: both make the browser ask first (a CORS
        preflight), which the sandbox never grants. The token also stops a page that reached
        the port through DNS rebinding, since the page cannot know it.
        """
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            return 415, (
                "control requests take only Content-Type: application/json, "
                f"with the header {CONTROL_TOKEN_HEADER}: <the sandbox's control token>"
            )
        token = request.headers.get(CONTROL_TOKEN_HEADER.lower(), "")
        if not secrets.compare_digest(token.encode(), self.control_token.encode()):
            return 403, (
                f"missing or wrong {CONTROL_TOKEN_HEADER} header: send the sandbox's control "
                "token (Sandbox.control_token; printed by cmpay sandbox at start)"
            )
        return None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        async with self.running():
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})

    # -- the service endpoint -------------------------------------------------------------------

    async def _service(self, request: Request, send: Send) -> None:
        self.requests_seen += 1
        faults, self.faults = self.faults, Faults()
        if faults.delay:
            await anyio.sleep(faults.delay)
        if faults.raw_answer is not None:
            status, raw = faults.raw_answer
            await respond(send, status, raw, "text/html; charset=UTF-8")
            return
        answer = self._gateway.handle(request.body, self.base_url, faults)
        if faults.drop_after_processing:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", str(len(answer) + 100).encode())],
                }
            )
            await send({"type": "http.response.body", "body": answer[:10], "more_body": True})
            # What httpx raises over TCP when this happens: a client on httpx.ASGITransport
            # sees the same TransportError(maybe_sent=True), not a class of the sandbox's.
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body (sandbox fault)"
            )
        await respond(send, 200, answer, "text/plain; charset=UTF-8")
