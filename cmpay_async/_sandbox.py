"""The sandbox gateway: an ASGI app that plays CMPay, built on the same registry and signing.

It holds merchants and orders in memory, answers ``POST /ips/cmpayService`` like the gateway
(appendix 9.2 codes for the first problem found), serves a cashier page, and delivers signed
PageNotify and OfflineNotify messages, with OfflineNotify retried on the document's schedule.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import anyio
import attrs

from ._appendix import RETURN_CODES, SUCCESS_CODES
from ._codec import decode_payload, encode_answer
from ._enums import CharacterSet
from ._exceptions import DecodeError, Problem, SignatureError
from ._models import CHINA_TZ
from ._protocol import verify_fields
from ._schema import REGISTRY, Schema
from ._signing import Md5Signer, RsaSigner, Signer, Verifier, source_of
from ._validate import check_fields

__all__ = ["PUBLIC_TEST_KEY", "PUBLIC_TEST_MERCHANT", "Merchant", "Sandbox", "SandboxOrder"]

#: The vendor's public test merchant and signKey (PROTOCOL.md section 6): not a secret.
PUBLIC_TEST_MERCHANT = "888009941120001"
PUBLIC_TEST_KEY = "8Fb5j7RAYj4Dw3s6bZ11hVynY9oyx0LHdTz3Xww8xmNsfzGd1qABCerSz0ZRXMA3"

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
    ("orderDate", "digits"): "MCG01025",
    ("currency", "required"): "MCG01018",
    ("currency", "choices"): "MCG01019",
    ("amount", "required"): "MCG01014",
}


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
    """One delivery attempt of a notification, and what the merchant answered."""

    kind: str
    attempt: int
    at: str
    status: int | None
    answer: str


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
    attempts: list[NotifyAttempt] = attrs.field(factory=list)

    @property
    def amount(self) -> int:
        """Order amount in fen."""
        return int(self.fields["amount"])

    def to_json(self) -> dict[str, Any]:
        """The order as shown by ``GET /_sandbox/orders``; the hmac is not included."""
        data = attrs.asdict(self)
        signature = REGISTRY[self.fields.get("type", "DirectPayConfirm")].signature_field.wire
        data["fields"] = {k: v for k, v in self.fields.items() if k != signature}
        data["amount"] = self.amount
        return data


@attrs.define(kw_only=True)
class Faults:
    """One-shot faults for the next request, to test how merchant code copes."""

    return_code: str | None = None
    raw_answer: tuple[int, bytes] | None = None
    tamper_answer: bool = False
    delay: float = 0.0
    #: Process the order, then cut the connection mid-answer.
    drop_after_processing: bool = False


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_MAX_BODY = 64 * 1024


class _Dropped(Exception):
    """Raised inside the app to cut a connection after a partial answer."""


class Sandbox:
    """A simulated CMPay gateway as an ASGI application.

    By default it knows the vendor's public test merchant; add others with ``add_merchant``.
    Orders live in memory in ``orders``; ``faults`` injects one-shot failures.
    """

    def __init__(
        self,
        *,
        merchants: list[Merchant] | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.merchants: dict[str, Merchant] = {}
        for merchant in merchants or [Merchant.md5(PUBLIC_TEST_MERCHANT, PUBLIC_TEST_KEY)]:
            self.add_merchant(merchant)
        self.orders: dict[tuple[str, str], SandboxOrder] = {}
        self.sessions: dict[str, SandboxOrder] = {}
        self.request_ids: set[tuple[str, str]] = set()
        self.faults = Faults()
        self._clock = clock or (lambda: dt.datetime.now(CHINA_TZ))
        self._pay_numbers = itertools.count(1)
        self.requests_seen = 0

    # -- configuration -------------------------------------------------------------------------

    def add_merchant(self, merchant: Merchant) -> None:
        """Register a merchant account."""
        self.merchants[merchant.merchant_id] = merchant

    @property
    def merchant_id(self) -> str:
        """The id of the first (default) merchant."""
        return next(iter(self.merchants))

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

    def order(self, order_id: str, merchant_id: str | None = None) -> SandboxOrder:
        """The order with this id (of the default merchant unless told)."""
        return self.orders[(merchant_id or self.merchant_id, order_id)]

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        body = await _read_body(receive)
        base = _base_url(scope)
        if path == "/ips/cmpayService" and method == "POST":
            await self._service(body, base, send)
        elif path == "/_sandbox/orders" and method == "GET":
            data = [o.to_json() for o in self.orders.values()]
            await _respond(
                send, 200, json.dumps(data, ensure_ascii=False).encode(), "application/json"
            )
        else:
            await _respond(send, 404, b"not found", "text/plain; charset=utf-8")

    # -- the gateway ----------------------------------------------------------------------------

    async def _service(self, body: bytes, base: str, send: Send) -> None:
        self.requests_seen += 1
        faults, self.faults = self.faults, Faults()
        if faults.delay:
            await anyio.sleep(faults.delay)
        if faults.raw_answer is not None:
            status, raw = faults.raw_answer
            await _respond(send, status, raw, "text/html; charset=UTF-8")
            return
        answer = self._handle(body, base, faults)
        if faults.drop_after_processing:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", str(len(answer) + 100).encode())],
                }
            )
            await send({"type": "http.response.body", "body": answer[:10], "more_body": True})
            raise _Dropped("connection cut by fault injection")
        await _respond(send, 200, answer, "text/plain; charset=UTF-8")

    def _handle(self, body: bytes, base: str, faults: Faults) -> bytes:
        """Process one service request and return the answer body."""
        charset = _charset_of(body)
        try:
            fields = decode_payload(body, form=True, charset=charset)
        except DecodeError as exc:
            return _unsigned_answer({}, SANDBOX_INVALID, str(exc))
        message = fields.get("type", "")
        schema = REGISTRY.get(message)
        if schema is None or REGISTRY.get(message + "Response") is None:
            return _unsigned_answer(fields, SANDBOX_INVALID, f"type: unknown type {message[:20]!r}")
        answer_schema = REGISTRY[message + "Response"]
        merchant = self.merchants.get(fields.get("merchantId", ""))
        if merchant is None:
            return _unsigned_answer(fields, "IPS0001", RETURN_CODES["IPS0001"].chinese)
        try:
            verify_fields(schema, fields, merchant.verifier)
        except SignatureError:
            return self._answer(merchant, answer_schema, fields, "IPS0008", faults)
        problems = check_fields(schema, fields)
        if problems:
            return self._answer(
                merchant, answer_schema, fields, _code_for(problems[0]), faults, problems[0]
            )
        handler = self._HANDLERS.get(message)
        if handler is None:
            return self._answer(merchant, answer_schema, fields, "RPM77040", faults)
        return handler(self, merchant, answer_schema, fields, base, faults)

    def _pay(
        self, merchant: Merchant, schema: Schema, fields: dict[str, str], base: str, faults: Faults
    ) -> bytes:
        key = (merchant.merchant_id, fields["orderId"])
        request_key = (merchant.merchant_id, fields["requestId"])
        if key in self.orders or request_key in self.request_ids:
            return self._answer(merchant, schema, fields, "RPM22208", faults)
        self.request_ids.add(request_key)
        if faults.return_code is not None:
            return self._answer(merchant, schema, fields, faults.return_code, faults)
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
        cashier = (
            "/ips/WAPCashier" if fields.get("type", "").startswith("WAP") else "/ips/FormTrans3"
        )
        pay_url = (
            f"url<hi:=>{base}{cashier}<hi:$$>method<hi:=>post<hi:$$>sessionId<hi:=>{session_id}"
        )
        return self._answer(merchant, schema, fields, "000000", faults, pay_url=pay_url)

    _HANDLERS: Mapping[str, Callable[..., bytes]] = {
        "DirectPayConfirm": _pay,
        "WAPDirectPayConfirm": _pay,
    }

    def _answer(
        self,
        merchant: Merchant,
        schema: Schema,
        request: Mapping[str, str],
        code: str,
        faults: Faults,
        problem: Problem | None = None,
        **business: str,
    ) -> bytes:
        """A signed answer echoing the request's protocol fields."""
        row = RETURN_CODES.get(code)
        message = "成功" if code in SUCCESS_CODES else (row.chinese if row else "交易失败")
        if problem is not None:
            message = f"{message} ({problem})"
        wire_by_attr = {f.attr: f.wire for f in schema.fields}
        fields = {f.wire: request.get(f.wire, "") for f in schema.fields if f.signed}
        fields.update(
            signType=merchant.signer.sign_type.value,
            returnCode=code,
            message=message,
        )
        fields.update({wire_by_attr[k]: v for k, v in business.items()})
        fields[schema.signature_field.wire] = merchant.signer.sign(source_of(schema, fields))
        if faults.tamper_answer:
            sig = fields[schema.signature_field.wire]
            fields[schema.signature_field.wire] = ("0" if sig[0] != "0" else "1") + sig[1:]
        return encode_answer(schema, fields)


def _code_for(problem: Problem) -> str:
    return _PROBLEM_CODES.get((problem.field, problem.code), SANDBOX_INVALID)


def _unsigned_answer(request: Mapping[str, str], code: str, message: str) -> bytes:
    # The gateway cannot sign for a merchant it does not know: such answers carry no hmac.
    schema = REGISTRY["DirectPayConfirmResponse"]
    fields = {f.wire: request.get(f.wire, "") for f in schema.fields if f.signed}
    fields.update(returnCode=code, message=message, payUrl="")
    return encode_answer(schema, fields)


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


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            break
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _base_url(scope: Scope) -> str:
    headers = dict(scope.get("headers") or [])
    host = headers.get(b"host", b"").decode("latin-1")
    if not host:
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}"
