"""Build signed requests and read signed answers: pure functions over the registry."""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Collection, Mapping

import attrs

from ._appendix import SUCCESS_CODES, explain_return_code
from ._codec import (
    content_type,
    decode_payload,
    encode_form,
    escaped_readings,
    typed_values,
    wire_fields,
)
from ._enums import CharacterSet, SignType
from ._exceptions import (
    DecodeError,
    GatewayError,
    Problem,
    SignatureError,
    SignTypeMismatchError,
    UnexpectedMessageError,
    ValidationError,
)
from ._models import Order, PaymentResponse
from ._schema import Schema, schema_for
from ._signing import Signer, Verifier, source_of
from ._validate import check_fields

__all__ = [
    "PreparedRequest",
    "build_payment_request",
    "gateway_error",
    "parse_payment_response",
    "verify_fields",
]


@attrs.frozen(kw_only=True)
class PreparedRequest:
    """A validated, signed request, ready to post."""

    message: str
    request_id: str
    order_id: str
    content_type: str
    #: The form body; holds the hmac, so it is kept out of repr.
    body: bytes = attrs.field(repr=False)
    #: Every wire field including ``hmac``; kept out of repr for the same reason.
    fields: Mapping[str, str] = attrs.field(repr=False)


_ORDER_ATTRS = tuple(a.name for a in attrs.fields(Order))
_order_values = operator.attrgetter(*_ORDER_ATTRS)


def build_payment_request(
    order: Order,
    *,
    merchant_id: str,
    request_id: str,
    ip_address: str,
    signer: Signer,
    today: dt.date,
    character_set: CharacterSet = CharacterSet.UTF8,
    callback_url: str = "",
    notify_url: str = "",
    extra_bank_codes: Collection[str] = (),
    message: str = "DirectPayConfirm",
) -> PreparedRequest:
    """Validate ``order`` with the protocol fields, sign it and encode the form body.

    ``today`` (China time) fills ``orderDate`` and ``merAcDate`` when the order leaves them
    empty. Every problem is reported together in one ``ValidationError``.
    """
    if not isinstance(order, Order):
        raise TypeError(f"order must be an Order, not {type(order).__name__}")
    schema = schema_for(message)
    values = dict(zip(_ORDER_ATTRS, _order_values(order), strict=True))
    values.update(
        character_set=character_set,
        merchant_id=merchant_id,
        request_id=request_id,
        ip_address=ip_address,
        sign_type=signer.sign_type,
        merchant_cert=signer.merchant_cert,
        callback_url=order.callback_url or callback_url,
        notify_url=order.notify_url or notify_url,
        order_date=order.order_date or today,
        mer_ac_date=order.mer_ac_date or today,
    )
    fields, problems = wire_fields(schema, values)
    typed_wrong = {p.field for p in problems}
    problems += [
        p
        for p in check_fields(schema, fields, extra_bank_codes=extra_bank_codes)
        if p.field not in typed_wrong
    ]
    if signer.sign_type is SignType.RSA and not signer.merchant_cert:
        problems.append(Problem("merchantCert", "required when signType is RSA", "required"))
    if problems:
        order_of = {f.wire: i for i, f in enumerate(schema.fields)}
        raise ValidationError(sorted(problems, key=lambda p: order_of.get(p.field, 0)))
    fields[schema.signature_field.wire] = signer.sign(source_of(schema, fields))
    # ``fields`` is in schema order already; an empty certificate is left out of the body.
    cert = schema.cert_field
    sent = fields
    if cert is not None and not fields[cert.wire]:
        sent = {k: v for k, v in fields.items() if k != cert.wire}
    body = encode_form(sent.items(), character_set)
    return PreparedRequest(
        message=message,
        request_id=request_id,
        order_id=order.order_id,
        content_type=content_type(character_set),
        body=body,
        fields=fields,
    )


def verify_fields(schema: Schema, fields: Mapping[str, str], verifier: Verifier) -> dict[str, str]:
    """Verify received wire fields and return the reading the signature covers.

    The payload's ``signType`` must be the verifier's own: an MD5 payload is never accepted by
    an RSA verifier, nor the reverse. A certificate carried in the payload is never used.
    """
    sign_type = fields.get("signType", "")
    if sign_type != verifier.sign_type.value:
        raise SignTypeMismatchError(
            f"is {sign_type[:10]!r} but the configured verifier checks {verifier.sign_type.value}",
            field="signType",
        )
    signature = fields.get(schema.signature_field.wire, "")
    if not signature:
        raise SignatureError("missing", field=schema.signature_field.wire)
    for reading in escaped_readings(schema, fields):
        try:
            verifier.verify(source_of(schema, reading), signature)
        except SignatureError:
            continue
        return reading
    raise SignatureError("signature does not match", field=schema.signature_field.wire)


def gateway_error(code: str, message: str, verified: bool) -> GatewayError:
    """The ``GatewayError`` for a failure return code, explained from appendix 9.2."""
    row = explain_return_code(code)
    return GatewayError(code, message, explanation=row.english, hint=row.hint, verified=verified)


def parse_payment_response(
    body: bytes | str,
    *,
    verifier: Verifier,
    merchant_id: str | None = None,
    request_id: str | None = None,
    message: str = "DirectPayConfirmResponse",
) -> PaymentResponse:
    """Verify and decode the gateway's answer to a payment request.

    A failure return code raises ``GatewayError``; a bad signature ``SignatureError``; an
    answer for another merchant or request ``UnexpectedMessageError``. Content that does not
    verify is never returned.
    """
    schema = schema_for(message)
    fields = decode_payload(body, form=False)
    code = fields.get("returnCode", "")
    if not code:
        raise DecodeError("missing or empty", field="returnCode")
    if code not in SUCCESS_CODES:
        # A failure answer is only ever raised, never returned as data, so one that is unsigned
        # or signed with another key (the gateway cannot sign for a merchant it does not know;
        # after IPS0008 the merchant's own key is the wrong one) still reports its code.
        try:
            verified = verify_fields(schema, fields, verifier)
        except SignatureError:
            raise gateway_error(code, _readable(schema, fields).get("message", ""), False) from None
        raise gateway_error(code, verified.get("message", ""), True)
    verified = verify_fields(schema, fields, verifier)
    if merchant_id is not None and verified.get("merchantId") != merchant_id:
        raise UnexpectedMessageError("answer is for another merchant", field="merchantId")
    if request_id is not None and verified.get("requestId") != request_id:
        raise UnexpectedMessageError("answer is for another request", field="requestId")
    if not verified.get("payUrl"):
        raise DecodeError("missing in a success answer", field="payUrl")
    return PaymentResponse(**typed_values(schema, verified, PaymentResponse))


def _readable(schema: Schema, fields: Mapping[str, str]) -> dict[str, str]:
    return escaped_readings(schema, fields)[0]
