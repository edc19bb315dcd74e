"""The gateway's logic: check a service request, then create, query or refund an order.

Pure of I/O: a request body in, a signed answer body out. Merchants, orders, sessions and the
request ids already used live here; the ASGI app only moves bytes.
"""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cmpay_async._appendix import RETURN_CODES, SUCCESS_CODES
from cmpay_async._binding import wire_fields
from cmpay_async._codec import decode_payload, encode_answer
from cmpay_async._enums import CharacterSet
from cmpay_async._exceptions import DecodeError, Problem, SignatureError
from cmpay_async._models import CHINA_TZ, AmountItems
from cmpay_async._notify import build_notification, encode_notification
from cmpay_async._schema import REGISTRY, Schema
from cmpay_async._signing import source_of
from cmpay_async._validate import check_fields
from cmpay_async._verify import verify_fields

from ._faults import Faults
from ._records import Merchant, SandboxOrder, mask

__all__ = ["SANDBOX_INVALID", "Gateway"]

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


class Gateway:
    """The gateway's books and rules: merchants, orders, sessions, used request ids."""

    def __init__(
        self, merchants: Iterable[Merchant], now: Callable[[], dt.datetime] | None = None
    ) -> None:
        self.merchants: dict[str, Merchant] = {m.merchant_id: m for m in merchants}
        self.orders: dict[tuple[str, str], SandboxOrder] = {}
        self.sessions: dict[str, SandboxOrder] = {}
        self.request_ids: set[tuple[str, str]] = set()
        self._now = now or (lambda: dt.datetime.now(CHINA_TZ))
        self._pay_numbers = itertools.count(1)

    def handle(self, body: bytes, base: str, faults: Faults) -> bytes:
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


_HANDLERS: Mapping[str, Callable[..., bytes]] = {
    "DirectPayConfirm": Gateway._create,
    "WAPDirectPayConfirm": Gateway._create,
    "OrderQuery": Gateway._query,
    "OrderRefund": Gateway._refund,
}


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
        mobile=mask(order.fields.get("userToken", "")),
        pay_date=order.pay_date,
        account_date=order.pay_date[:8],
        status=status,
        fee=0,
    )
    return values


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
