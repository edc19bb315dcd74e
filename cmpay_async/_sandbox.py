"""The sandbox gateway: an ASGI app that plays CMPay, built on the same registry and signing.

It holds merchants and orders in memory, answers ``POST /ips/cmpayService`` like the gateway
(appendix 9.2 codes for the first problem found), serves a cashier page, and delivers signed
PageNotify and OfflineNotify messages, with OfflineNotify retried on the document's schedule.
Time runs on a ``SandboxClock``: scaled (a minute in 10 ms, say) and advanceable by hand.
"""

from __future__ import annotations

import datetime as dt
import html
import itertools
import json
import math
import secrets
import time
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import attrs
import httpx
from anyio.abc import TaskGroup

from ._appendix import RETURN_CODES, SUCCESS_CODES
from ._asgi import Receive, Request, Scope, Send, read_request, respond
from ._binding import wire_fields
from ._codec import decode_payload, encode_answer
from ._enums import CharacterSet
from ._exceptions import ConfigurationError, DecodeError, Problem, SignatureError
from ._models import CHINA_TZ, AmountItems
from ._notify import build_notification, encode_notification
from ._schema import REGISTRY, Schema
from ._signing import Md5Signer, RsaSigner, Signer, Verifier, source_of
from ._validate import check_fields
from ._verify import verify_fields

__all__ = [
    "OFFLINE_GAPS_MINUTES",
    "PUBLIC_TEST_KEY",
    "PUBLIC_TEST_MERCHANT",
    "Merchant",
    "NotifyAttempt",
    "Sandbox",
    "SandboxClock",
    "SandboxKeyWarning",
    "SandboxOrder",
]

#: The vendor's public test merchant and signKey (PROTOCOL.md section 6): not a secret.
PUBLIC_TEST_MERCHANT = "888009941120001"
PUBLIC_TEST_KEY = "8Fb5j7RAYj4Dw3s6bZ11hVynY9oyx0LHdTz3Xww8xmNsfzGd1qABCerSz0ZRXMA3"

#: The header that must carry ``Sandbox.control_token`` on ``POST /_sandbox/*``.
CONTROL_TOKEN_HEADER = "X-Sandbox-Token"  # noqa: S105 - a header name, not a secret

#: Minutes between the 8 OfflineNotify attempts (section 8.1): about 24.3 hours in all.
OFFLINE_GAPS_MINUTES = (1, 5, 10, 60, 120, 360, 900)

#: Pay links of a sandbox not served over TCP: a host that can never resolve (RFC 2606), so
#: that no link of an in-process sandbox leads to the real gateway.
SANDBOX_BASE_URL = "http://cmpay-sandbox.invalid"

#: A code of the sandbox's own, for a broken rule the appendix gives no code for.
SANDBOX_INVALID = "SBX01000"

# The appendix codes for the problems the document names; (wire name, rule code) -> code.
_PROBLEM_CODES: Mapping[tuple[str, str], str] = {
    ("productName", "required"): "MCG01033",
    ("productName", "max_length"): "MCG01081",
    ("periodUnit", "required"): "MCG01030",
    ("periodUnit", "choices"): "MCG01030",
    ("period", "required"): "MCG01027",
    ("period", "min_value"): "MCG01028",
    ("orderDate", "required"): "MCG01024",
    ("orderDate", "date"): "MCG01025",
    ("orderDate", "max_length"): "MCG01025",
    ("currency", "required"): "MCG01018",
    ("currency", "choices"): "MCG01019",
    ("amount", "required"): "MCG01014",
}


class SandboxClock:
    """Virtual minutes for the notification schedule: scaled real time plus manual advances.

    ``seconds_per_minute=0.01`` runs a virtual minute in 10 ms; ``None`` stops time, so only
    ``advance()`` moves it (for tests that step through the schedule).
    """

    def __init__(self, seconds_per_minute: float | None = 60.0) -> None:
        if seconds_per_minute is not None and seconds_per_minute <= 0:
            raise ConfigurationError("seconds_per_minute must be positive or None")
        self.seconds_per_minute = seconds_per_minute
        self._start = time.monotonic()
        self._offset = 0.0
        self._waiters: list[anyio.Event] = []

    def now(self) -> float:
        """Virtual minutes since the clock started."""
        scaled = 0.0
        if self.seconds_per_minute is not None:
            scaled = (time.monotonic() - self._start) / self.seconds_per_minute
        return self._offset + scaled

    @property
    def sleepers(self) -> int:
        """How many tasks are waiting on this clock right now."""
        return len(self._waiters)

    def advance(self, minutes: float) -> None:
        """Move virtual time forward, waking sleepers whose time has come."""
        self._offset += minutes
        waiters, self._waiters = self._waiters, []
        for event in waiters:
            event.set()

    async def sleep(self, minutes: float) -> None:
        """Sleep this many virtual minutes."""
        target = self.now() + minutes
        while (remaining := target - self.now()) > 1e-9:
            event = anyio.Event()
            self._waiters.append(event)
            real = (
                math.inf if self.seconds_per_minute is None else remaining * self.seconds_per_minute
            )
            with anyio.move_on_after(real):
                await event.wait()


class SandboxKeyWarning(UserWarning):
    """A sandbox was given a signKey other than the public test key: it may be a real one."""


@attrs.define(kw_only=True)
class Merchant:
    """A merchant account of the sandbox: its id and how its messages are signed."""

    merchant_id: str
    #: Signs the sandbox's answers and notifications to this merchant.
    signer: Signer = attrs.field(repr=False)
    #: Checks this merchant's requests.
    verifier: Verifier = attrs.field(repr=False)
    name: str = "Sandbox merchant"

    @classmethod
    def md5(cls, merchant_id: str, sign_key: str, **kw: Any) -> Merchant:
        """A merchant that signs with a signKey (MD5 both ways)."""
        signer = Md5Signer(sign_key)
        return cls(merchant_id=merchant_id, signer=signer, verifier=signer, **kw)

    @classmethod
    def rsa(
        cls, merchant_id: str, *, merchant_public: Verifier, gateway: RsaSigner, **kw: Any
    ) -> Merchant:
        """A merchant that signs with RSA: its public key checks requests, ``gateway`` signs."""
        return cls(merchant_id=merchant_id, signer=gateway, verifier=merchant_public, **kw)


@attrs.define(kw_only=True)
class NotifyAttempt:
    """One delivery of a notification, and what the merchant answered."""

    kind: str
    attempt: int
    #: Virtual minute of the sandbox clock when it was sent.
    minute: float
    status: int | None
    answer: str
    forged: bool = False
    duplicate: bool = False


@attrs.define(kw_only=True)
class SandboxOrder:
    """An order the sandbox accepted, with its state and notification history."""

    merchant_id: str
    order_id: str
    request_id: str
    session_id: str
    fields: dict[str, str]
    state: str = "pending"  # pending, paid, failed
    pay_no: str = ""
    pay_date: str = ""
    refunded: int = 0
    #: idle, delivering, acknowledged (SUCCESS received), exhausted (8 attempts failed)
    delivery: str = "idle"
    attempts: list[NotifyAttempt] = attrs.field(factory=list)

    @property
    def charset(self) -> CharacterSet:
        """The order's ``characterSet``: its notifications are encoded in it (GBK if empty)."""
        return CharacterSet(self.fields.get("characterSet") or CharacterSet.GBK.value)

    @property
    def amount(self) -> int:
        """Order amount in fen."""
        return int(self.fields["amount"])

    def to_json(self) -> dict[str, Any]:
        """The order as shown by ``GET /_sandbox/orders``: no hmac, personal data masked."""
        data = attrs.asdict(self)
        schema = REGISTRY[self.fields["type"]]
        hidden = {schema.signature_field.wire}
        sensitive = {f.wire for f in schema.fields if f.sensitive}
        data["fields"] = {
            k: (_mask(v) or "****" if k in sensitive and v else v)
            for k, v in self.fields.items()
            if k not in hidden
        }
        data["amount"] = self.amount
        return data


@attrs.define(kw_only=True)
class Faults:
    """One-shot faults, to test how merchant code copes."""

    return_code: str | None = None
    raw_answer: tuple[int, bytes] | None = None
    tamper_answer: bool = False
    delay: float = 0.0
    #: Process the order, then cut the connection mid-answer.
    drop_after_processing: bool = False


@attrs.define(kw_only=True)
class NotifyFaults:
    """One-shot faults for the next payment's OfflineNotify delivery."""

    #: Before the real OfflineNotify, post a copy with a broken signature.
    forged: bool = False
    #: Post the first OfflineNotify this many extra times.
    duplicates: int = 0
    #: Post those extra copies all at the same instant as the first attempt.
    concurrent: bool = False
    #: Lose every notification of the payment: no OfflineNotify, and the buyer's browser
    #: never returns the PageNotify (only a query can find the payment).
    lost: bool = False
    #: The sandbox posts the PageNotify to ``callbackUrl`` itself, at the same instant as the
    #: first OfflineNotify, as a buyer's browser returning at that moment would.
    page_at_once: bool = False


class Sandbox:
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
        self.merchants: dict[str, Merchant] = {}
        for merchant in merchants or [Merchant.md5(PUBLIC_TEST_MERCHANT, PUBLIC_TEST_KEY)]:
            self.merchants[merchant.merchant_id] = merchant
            if _holds_another_md5_key(merchant):
                warnings.warn(
                    f"the sandbox merchant {merchant.merchant_id} signs with a signKey that is "
                    "not the public test key (cmpay_async.testing.PUBLIC_TEST_KEY): the "
                    "sandbox is a simulator, never give it a real merchant's key",
                    SandboxKeyWarning,
                    stacklevel=2,
                )
        #: The secret that ``POST /_sandbox/*`` must send in ``X-Sandbox-Token``.
        self.control_token = control_token or secrets.token_urlsafe(24)
        self.clock = clock or SandboxClock()
        self.orders: dict[tuple[str, str], SandboxOrder] = {}
        self.sessions: dict[str, SandboxOrder] = {}
        self.request_ids: set[tuple[str, str]] = set()
        self.faults = Faults()
        self.notify_faults = NotifyFaults()
        self.requests_seen = 0
        self._now = now or (lambda: dt.datetime.now(CHINA_TZ))
        self._pay_numbers = itertools.count(1)
        self._notify_transport = notify_transport
        self._task_group: TaskGroup | None = None
        self._http: httpx.AsyncClient | None = None
        self._pending: list[tuple[SandboxOrder, bytes, NotifyFaults, bytes]] = []

    # -- configuration and inspection ---------------------------------------------------------

    @property
    def merchant_id(self) -> str:
        """The id of the first (default) merchant."""
        return next(iter(self.merchants))

    def order(self, order_id: str, merchant_id: str | None = None) -> SandboxOrder:
        """The order with this id (of the default merchant unless told)."""
        return self.orders[(merchant_id or self.merchant_id, order_id)]

    def fail_next(self, return_code: str) -> None:
        """Answer the next valid order with this return code instead of success."""
        self.faults.return_code = return_code

    def answer_next(self, status: int, body: bytes) -> None:
        """Answer the next request with this raw status and body."""
        self.faults.raw_answer = (status, body)

    def tamper_next(self) -> None:
        """Break the signature of the next answer."""
        self.faults.tamper_answer = True

    def delay_next(self, seconds: float) -> None:
        """Wait this long (real time) before answering the next request."""
        self.faults.delay = seconds

    def drop_next(self) -> None:
        """Process the next order, then cut the connection before the answer is complete."""
        self.faults.drop_after_processing = True

    def forge_next_notification(self) -> None:
        """Precede the next payment's OfflineNotify with a copy whose signature is broken."""
        self.notify_faults.forged = True

    def duplicate_next_notification(self, times: int = 1, *, concurrent: bool = False) -> None:
        """Post the next payment's first OfflineNotify ``times`` extra times (at once if told)."""
        self.notify_faults.duplicates = times
        self.notify_faults.concurrent = concurrent

    def race_next_page_notify(self) -> None:
        """Post the next payment's PageNotify at the same instant as its first OfflineNotify."""
        self.notify_faults.page_at_once = True

    def lose_next_notifications(self) -> None:
        """Lose every notification of the next payment: only reconciliation can find it."""
        self.notify_faults.lost = True

    def arm(self, faults: Mapping[str, object]) -> list[str]:
        """Arm faults by name, as ``POST /_sandbox/faults`` and ``cmpay sandbox --fault`` do.

        Keys are the fault methods' names; values their argument (``{"fail_next":
        "IPS0008", "delay_next": 2.5, "drop_next": true, "answer_next": {"status": 500,
        "body": "..."}, "duplicate_next_notification": {"times": 10, "concurrent": true}}``).
        Every key is checked before any is armed: a ``ValueError`` names the first bad one.
        """
        calls = [_fault_call(name, value) for name, value in faults.items()]
        for name, args, kwargs in calls:
            getattr(self, name)(*args, **kwargs)
        return [name for name, _, _ in calls]

    # -- background delivery ------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Sandbox]:
        """Run notification delivery in the background for the duration of the block."""
        async with (
            httpx.AsyncClient(transport=self._notify_transport, timeout=10) as http,
            anyio.create_task_group() as tg,
        ):
            self._task_group, self._http = tg, http
            pending, self._pending = self._pending, []
            for job in pending:
                tg.start_soon(self._deliver, *job)
            try:
                yield self
            finally:
                self._task_group = self._http = None
                tg.cancel_scope.cancel()

    def _schedule(
        self, order: SandboxOrder, body: bytes, faults: NotifyFaults, page: bytes = b""
    ) -> None:
        order.delivery = "delivering"
        if self._task_group is None:
            self._pending.append((order, body, faults, page))
        else:
            self._task_group.start_soon(self._deliver, order, body, faults, page)

    async def _deliver(
        self, order: SandboxOrder, body: bytes, faults: NotifyFaults, page: bytes
    ) -> None:
        url = order.fields["notifyUrl"]
        if faults.forged:
            await self._post(order, url, _break_signature(body), 0, forged=True)
        for attempt, gap in enumerate((0, *OFFLINE_GAPS_MINUTES), start=1):
            if gap:
                await self.clock.sleep(gap)
            if attempt == 1:
                if not faults.concurrent:
                    for _ in range(faults.duplicates):
                        await self._post(order, url, body, attempt, duplicate=True)
                # Concurrent copies, a racing PageNotify and the first attempt leave at once.
                async with anyio.create_task_group() as tg:
                    for _ in range(faults.duplicates if faults.concurrent else 0):
                        tg.start_soon(partial(self._post, order, url, body, 1, duplicate=True))
                    if faults.page_at_once:
                        callback = order.fields["callbackUrl"]
                        tg.start_soon(partial(self._post, order, callback, page, 1, page=True))
                    acknowledged = await self._post(order, url, body, attempt)
            else:
                acknowledged = await self._post(order, url, body, attempt)
            if acknowledged:  # on attempt 1, only once every copy has been answered too
                order.delivery = "acknowledged"
                return
        order.delivery = "exhausted"

    async def _post(
        self,
        order: SandboxOrder,
        url: str,
        body: bytes,
        attempt: int,
        *,
        page: bool = False,
        **flags: bool,
    ) -> bool:
        """Post one notification; True when the merchant answered exactly ``SUCCESS``."""
        if self._http is None:
            raise RuntimeError("notifications are delivered only while the sandbox is running")
        minute = round(self.clock.now(), 3)
        kind = "PageNotify" if page else "OfflineNotify"
        status: int | None = None
        try:
            content_type = f"application/x-www-form-urlencoded; charset={order.charset.http_name}"
            response = await self._http.post(
                url, content=body, headers={"content-type": content_type}
            )
        except httpx.HTTPError as exc:
            answer, content = type(exc).__name__, b""
        else:
            status, content = response.status_code, response.content
            answer = content[:64].decode("utf-8", "replace")
        record = NotifyAttempt(
            kind=kind, attempt=attempt, minute=minute, status=status, answer=answer, **flags
        )
        order.attempts.append(record)
        if self.on_attempt is not None:
            self.on_attempt(order, record)
        return content == b"SUCCESS" and not flags and not page

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
            await self._cashier(request, send)
        elif route == ("POST", "/ips/FormTrans3/pay"):
            await self._pay_page(request, send)
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
            body = json.dumps({"error": str(exc), "faults": sorted(_FAULTS)}).encode()
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
        answer = self._handle(request.body, self.base_url, faults)
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

    def _handle(self, body: bytes, base: str, faults: Faults) -> bytes:
        """Process one service request and return the answer body."""
        try:
            fields = decode_payload(body, form=True, charset=_charset_of(body))
        except DecodeError as exc:
            return _unsigned_answer({}, SANDBOX_INVALID, str(exc))
        message = fields.get("type", "")
        schema = REGISTRY.get(message)
        answer_schema = REGISTRY.get(message + "Response")
        if schema is None or answer_schema is None:
            return _unsigned_answer(fields, SANDBOX_INVALID, f"type: unknown {message[:20]!r}")
        merchant = self.merchants.get(fields.get("merchantId", ""))
        if merchant is None:
            return _unsigned_answer(fields, "IPS0001", RETURN_CODES["IPS0001"].chinese)
        try:
            verify_fields(schema, fields, merchant.verifier)
        except SignatureError:
            return _answer(merchant, answer_schema, fields, "IPS0008", faults)
        problems = check_fields(schema, fields)
        if problems:
            code = _PROBLEM_CODES.get((problems[0].field, problems[0].code), SANDBOX_INVALID)
            return _answer(merchant, answer_schema, fields, code, faults, problems[0])
        handler = _HANDLERS.get(message)
        if handler is None:
            return _answer(merchant, answer_schema, fields, "RPM77040", faults)
        return handler(self, merchant, answer_schema, fields, base, faults)

    def _create(
        self, merchant: Merchant, schema: Schema, fields: dict[str, str], base: str, faults: Faults
    ) -> bytes:
        key = (merchant.merchant_id, fields["orderId"])
        request_key = (merchant.merchant_id, fields["requestId"])
        if key in self.orders or request_key in self.request_ids:
            return _answer(merchant, schema, fields, "RPM22208", faults)
        self.request_ids.add(request_key)
        if faults.return_code is not None:
            return _answer(merchant, schema, fields, faults.return_code, faults)
        session_id = secrets.token_hex(12)
        order = SandboxOrder(
            merchant_id=merchant.merchant_id,
            order_id=fields["orderId"],
            request_id=fields["requestId"],
            session_id=session_id,
            fields=dict(fields),
        )
        self.orders[key] = order
        self.sessions[session_id] = order
        cashier = "/ips/WAPCashier" if schema.wire_type.startswith("WAP") else "/ips/FormTrans3"
        pay_url = (
            f"url<hi:=>{base}{cashier}<hi:$$>method<hi:=>post<hi:$$>sessionId<hi:=>{session_id}"
        )
        return _answer(merchant, schema, fields, "000000", faults, business={"pay_url": pay_url})

    def _query(
        self, merchant: Merchant, schema: Schema, fields: dict[str, str], base: str, faults: Faults
    ) -> bytes:
        order = self.orders.get((merchant.merchant_id, fields["orderId"]))
        if order is None:
            return _answer(merchant, schema, fields, "RPM22201", faults)
        values = _outcome_values(order, schema.name)
        wire, _ = wire_fields(schema, values)
        business = {f.attr: wire[f.wire] for f in schema.fields if f.attr in values}
        business.pop("message", None)
        business.pop("return_code", None)
        return _answer(merchant, schema, fields, "000000", faults, business=business)

    def _refund(
        self, merchant: Merchant, schema: Schema, fields: dict[str, str], base: str, faults: Faults
    ) -> bytes:
        request_key = (merchant.merchant_id, fields["requestId"])
        if request_key in self.request_ids:
            return _answer(merchant, schema, fields, "RPM22208", faults)
        self.request_ids.add(request_key)
        order = self.orders.get((merchant.merchant_id, fields["orderId"]))
        if order is None:
            return _answer(merchant, schema, fields, "RPM22201", faults)
        if order.state != "paid":
            return _answer(merchant, schema, fields, "RPM22208", faults)
        amount = int(fields["amount"])
        if amount > order.amount:
            return _answer(merchant, schema, fields, "RPM22401", faults)
        if amount > order.amount - order.refunded:
            return _answer(merchant, schema, fields, "RPM22407", faults)
        order.refunded += amount
        refunded = {"pay_no": order.pay_no, "status": "SUCCESS"}
        return _answer(merchant, schema, fields, "000000", faults, business=refunded)

    # -- the cashier ------------------------------------------------------------------------------

    async def _cashier(self, request: Request, send: Send) -> None:
        params = dict(request.query)
        if request.method == "POST":
            params.update(decode_payload(request.body, form=True) if request.body.strip() else {})
        order = self.sessions.get(_session_id(params))
        if order is None:
            await respond(
                send, 404, _page("CMPay sandbox", "<p>Unknown or expired session.</p>"), _HTML
            )
            return
        merchant = self.merchants[order.merchant_id]
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

    async def _pay_page(self, request: Request, send: Send) -> None:
        form = decode_payload(request.body, form=True) if request.body.strip() else {}
        order = self.sessions.get(_session_id(form))
        if order is None or order.state != "pending":
            await respond(send, 409, _page("CMPay sandbox", "<p>Nothing to pay.</p>"), _HTML)
            return
        paid = form.get("outcome", "pay") == "pay"
        faults, self.notify_faults = self.notify_faults, NotifyFaults()
        page_fields, offline_body = self.settle(order, paid=paid)
        if faults.lost:
            order.delivery = "lost"
            body = "<p>Paid. (Every notification of this payment is lost, as asked.)</p>"
            await respond(send, 200, _page("CMPay sandbox", body), _HTML)
            return
        if faults.page_at_once:
            page_body = encode_notification("PageNotify", page_fields, charset=order.charset)
            self._schedule(order, offline_body, faults, page_body)
            body = "<p>Paid. (The sandbox posts the PageNotify itself, as asked.)</p>"
            await respond(send, 200, _page("CMPay sandbox", body), _HTML)
            return
        self._schedule(order, offline_body, faults)
        order.attempts.append(
            NotifyAttempt(
                kind="PageNotify",
                attempt=1,
                minute=round(self.clock.now(), 3),
                status=None,
                answer="handed to the buyer's browser",
            )
        )
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
        await respond(send, 200, page, f"text/html; charset={charset}")

    def settle(self, order: SandboxOrder, *, paid: bool) -> tuple[dict[str, str], bytes]:
        """Mark an order paid or failed; return PageNotify fields and the OfflineNotify body.

        The body is encoded in the order's ``characterSet`` (GBK when it was empty), as the
        vendor's notify pages expect; the signature covers the decoded text either way.
        """
        now = self._now().astimezone(CHINA_TZ)
        order.state = "paid" if paid else "failed"
        order.pay_no = f"{now:%Y%m%d}{next(self._pay_numbers):010d}"
        order.pay_date = f"{now:%Y%m%d%H%M%S}"
        merchant = self.merchants[order.merchant_id]
        values = _outcome_values(order, "PageNotify")
        page = build_notification("PageNotify", values, signer=merchant.signer)
        offline = build_notification("OfflineNotify", values, signer=merchant.signer)
        return page, encode_notification("OfflineNotify", offline, charset=order.charset)


def _holds_another_md5_key(merchant: Merchant) -> bool:
    """True when the merchant signs with an MD5 signKey other than the public test key.

    Only MD5 keys are shared secrets: for an RSA merchant the sandbox holds the merchant's
    public key and a gateway key of the developer's own making, neither a merchant's secret.
    """
    signer = merchant.signer
    if not isinstance(signer, Md5Signer):
        return False
    # The keys are hidden inside the signers: two keys are the same when they sign alike.
    probe = "cmpay-sandbox-key-probe"
    return signer.sign(probe) != _PUBLIC_TEST_SIGNER.sign(probe)


_PUBLIC_TEST_SIGNER = Md5Signer(PUBLIC_TEST_KEY)


def _outcome_values(order: SandboxOrder, message: str) -> dict[str, Any]:
    """What the gateway reports of an order, keyed by the attribute names of ``message``.

    The order's own values (amount, orderId, reserved fields...) are echoed by registry name;
    fixed-vocabulary fields (type, version, signType) belong to the message itself.
    """
    request = REGISTRY[order.fields["type"]]
    values: dict[str, Any] = {
        f.attr: order.fields.get(request.by_attr[f.attr].wire, "")
        for f in REGISTRY[message].fields
        if f.attr in request.by_attr and f.choices is None and f.signed and f.wire != "type"
    }
    paid = order.state == "paid"
    # The document does not say how a pending order is reported: the sandbox says PENDING.
    status = {"paid": "SUCCESS", "failed": "FAILED"}.get(order.state, "PENDING")
    values.update(
        pay_no=order.pay_no,
        return_code="000000",
        message=status,
        amount_items=AmountItems(cash=order.amount if paid else 0),
        mobile=_mask(order.fields.get("userToken", "")),
        pay_date=order.pay_date,
        account_date=order.pay_date[:8],
        status=status,
        fee=0,
    )
    return values


_HTML = "text/html; charset=utf-8"

_HANDLERS: Mapping[str, Callable[..., bytes]] = {
    "DirectPayConfirm": Sandbox._create,
    "WAPDirectPayConfirm": Sandbox._create,
    "OrderQuery": Sandbox._query,
    "OrderRefund": Sandbox._refund,
}


def _answer(
    merchant: Merchant,
    schema: Schema,
    request: Mapping[str, str],
    code: str,
    faults: Faults,
    problem: Problem | None = None,
    business: Mapping[str, str] | None = None,
) -> bytes:
    """A signed answer echoing the request's protocol fields; ``business`` by attribute."""
    row = RETURN_CODES.get(code)
    # The vendor's success samples say SUCCESS (PROTOCOL.md section 3).
    message = "SUCCESS" if code in SUCCESS_CODES else (row.chinese if row else "交易失败")
    if problem is not None:
        message = f"{message} ({problem})"
    fields = {f.wire: request.get(f.wire, "") for f in schema.fields if f.signed}
    fields.update(signType=merchant.signer.sign_type.value, returnCode=code, message=message)
    fields.update({schema.by_attr[k].wire: v for k, v in (business or {}).items()})
    signature = merchant.signer.sign(source_of(schema, fields))
    if faults.tamper_answer:
        signature = ("0" if signature[0] != "0" else "1") + signature[1:]
    fields[schema.signature_field.wire] = signature
    return encode_answer(schema, fields)


def _unsigned_answer(request: Mapping[str, str], code: str, message: str) -> bytes:
    # The gateway cannot sign for a merchant it does not know: such answers carry no hmac.
    schema = REGISTRY["DirectPayConfirmResponse"]
    fields = {f.wire: request.get(f.wire, "") for f in schema.fields if f.signed}
    fields.update(returnCode=code, message=message, payUrl="")
    return encode_answer(schema, fields)


def _break_signature(body: bytes) -> bytes:
    head, sep, signature = body.rpartition(b"hmac=")
    flipped = b"0" if signature[:1] != b"0" else b"1"
    return head + sep + flipped + signature[1:]


#: The faults reachable by name, and how their value becomes the method's arguments:
#: ``flag`` (true to arm), ``one`` (the single argument), ``keywords`` (a JSON object).
_FAULTS: Mapping[str, str] = {
    "fail_next": "one",
    "answer_next": "keywords",
    "tamper_next": "flag",
    "delay_next": "one",
    "drop_next": "flag",
    "forge_next_notification": "flag",
    "duplicate_next_notification": "keywords",
    "lose_next_notifications": "flag",
    "race_next_page_notify": "flag",
}


def _fault_call(name: str, value: object) -> tuple[str, tuple[object, ...], dict[str, Any]]:
    """The method call a named fault stands for; ``ValueError`` for anything else."""
    shape = _FAULTS.get(name)
    if shape is None:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(_FAULTS)}")
    if shape == "flag":
        if value is not True:
            raise ValueError(f"{name}: give true to arm it")
        return name, (), {}
    if shape == "one":
        if name == "fail_next" and not (isinstance(value, str) and value):
            raise ValueError('fail_next: give a return code such as "IPS0008"')
        if name == "delay_next" and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
        ):
            raise ValueError("delay_next: give seconds, a number from 0")
        return name, (value,), {}
    if name == "duplicate_next_notification" and isinstance(value, int):
        value = {"times": value}
    if not isinstance(value, dict):
        raise ValueError(f"{name}: give a JSON object of its arguments")
    if name == "answer_next":
        status, body = value.get("status"), value.get("body", "")
        if not isinstance(status, int) or isinstance(status, bool) or not isinstance(body, str):
            raise ValueError('answer_next: give {"status": <int>, "body": "<text>"}')
        return name, (status, body.encode()), {}
    times, concurrent = value.get("times", 1), value.get("concurrent", False)
    if not isinstance(times, int) or isinstance(times, bool) or times < 1:
        raise ValueError("duplicate_next_notification: times must be a positive integer")
    if not isinstance(concurrent, bool) or set(value) - {"times", "concurrent"}:
        raise ValueError('duplicate_next_notification: give {"times": n, "concurrent": bool}')
    return name, (times,), {"concurrent": concurrent}


def _session_id(params: Mapping[str, str]) -> str:
    # The vendor's PHP demo posts SESSIONID=, the document sessionId=: any letter case.
    for name, value in params.items():
        if name.lower() == "sessionid":
            return value
    return ""


def _mask(user_token: str) -> str:
    # The gateway reports the payer's phone as its first three and last four digits.
    if len(user_token) == 11 and user_token.isdigit():
        return f"{user_token[:3]}****{user_token[-4:]}"
    return ""


def _charset_of(body: bytes) -> str:
    # characterSet is ASCII in every charset, so it can be read before decoding the rest.
    for part in body.split(b"&"):
        if part.startswith(b"characterSet="):
            value = part[len(b"characterSet=") :].decode("ascii", "replace")
            try:
                return CharacterSet(value).codec
            except ValueError:
                break
    return CharacterSet.GBK.codec  # the document's default when empty


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
