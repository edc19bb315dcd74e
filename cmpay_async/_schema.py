"""THE registry: every message's fields, in the document's order, with their rules.

This module is the only place in cmpay-async where a field list is written. Signing order,
validation, form encoding, parsing, the models' field mapping and the sandbox gateway all read
the tables below; adding a message (OrderQuery, OrderRefund, WAPDirectPayConfirm) is adding data
here. ``tests/core/test_registry.py`` fails if a field list appears anywhere else.

Wire order: the signed fields in the document's order, then the unsigned certificate field and
``hmac`` last, as in the document's samples (section 6.1.4 and 8.3).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

from ._appendix import RETURN_CODE_PATTERN
from ._enums import CharacterSet, CouponsFlag, Currency, PaymentStatus, PeriodUnit, SignType
from ._exceptions import ConfigurationError

T = TypeVar("T")

__all__ = ["AMT_ITEM_PARTS", "REGISTRY", "VERSION", "Field", "Kind", "Schema", "schema_for"]


class Kind(enum.Enum):
    """What a field's value is, which decides its checks and its Python type."""

    TEXT = "string"
    NUMBER = "number"  # ASCII digits; an int in Python
    DATE = "date"  # YYYYMMDD; a datetime.date
    DATETIME = "datetime"  # YYYYMMDDHHmmSS in China time; an aware datetime
    URL = "url"  # an http(s) URL
    IPV4 = "ipv4"  # a dotted IPv4 address
    BANK = "bank"  # a code from appendix 9.1
    AMT_ITEM = "amtItem"  # CNY_AMT=..#CMY_AMT=..; an AmountItems
    PAY_URL = "payUrl"  # the <hi:=>/<hi:$$> token; a PayUrl
    CERT = "cert"  # merchantCert/serverCert: never signed
    SIGNATURE = "signature"  # hmac: never signed


@attrs.frozen
class Field:
    """One field of one message: its wire name, Python name and rules."""

    wire: str
    attr: str
    max_length: int | None = None
    kind: Kind = Kind.TEXT
    #: May the value be empty ("可否为空")?
    optional: bool = False
    #: Allowed values, when the field is a closed vocabulary.
    choices: tuple[str, ...] | None = None
    #: The enum whose values are ``choices``, when there is one.
    enum: type[enum.Enum] | None = None
    #: Smallest value of a NUMBER field.
    min_value: int | None = None
    #: In answers and notifications the value may arrive percent-encoded UTF-8 (Chinese text).
    utf8_escaped: bool = False
    #: Personal data: never logged in clear.
    sensitive: bool = False
    #: A sample wire value (the document's own where it gives one), for test helpers and docs.
    example: str = ""
    #: A regular expression the whole (non-empty) value must match, and the rule it states in
    #: words (for error messages): the field's form where the document fixes one.
    pattern: str | None = None
    pattern_rule: str = ""
    #: For ``amtItem``: the wire name of the amount its parts must add up to.
    sums_to: str | None = None

    #: Whether the field takes part in the signature source (all but certificates and hmac).
    signed: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "signed", self.kind not in (Kind.CERT, Kind.SIGNATURE))


def _enum_field(
    wire: str,
    attr: str,
    max_length: int,
    cls: type[enum.Enum],
    *,
    optional: bool = False,
    example: str = "",
) -> Field:
    return Field(
        wire,
        attr,
        max_length,
        choices=tuple(m.value for m in cls),
        enum=cls,
        optional=optional,
        example=example,
    )


@attrs.frozen
class Schema:
    """One message: its name for signing, its wire ``type`` and its fields in order."""

    name: str
    wire_type: str
    fields: tuple[Field, ...]
    #: Wire names of the signed fields, in signing order.
    signed_names: tuple[str, ...] = attrs.field(init=False)
    by_wire: Mapping[str, Field] = attrs.field(init=False)
    by_attr: Mapping[str, Field] = attrs.field(init=False)
    #: The field that carries the signature (``hmac``).
    signature_field: Field = attrs.field(init=False)
    #: The unsigned certificate field (``merchantCert`` or ``serverCert``), if any.
    cert_field: Field | None = attrs.field(init=False)
    _plans: dict[str, Any] = attrs.field(init=False, factory=dict, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        by_wire = {f.wire: f for f in self.fields}
        by_attr = {f.attr: f for f in self.fields}
        if len(by_wire) != len(self.fields) or len(by_attr) != len(self.fields):
            raise ConfigurationError(f"schema {self.name}: duplicate field")
        signatures = [f for f in self.fields if f.kind is Kind.SIGNATURE]
        if len(signatures) != 1:
            raise ConfigurationError(f"schema {self.name}: needs exactly one signature field")
        object.__setattr__(self, "signed_names", tuple(f.wire for f in self.fields if f.signed))
        object.__setattr__(self, "by_wire", MappingProxyType(by_wire))
        object.__setattr__(self, "by_attr", MappingProxyType(by_attr))
        object.__setattr__(self, "signature_field", signatures[0])
        certs = [f for f in self.fields if f.kind is Kind.CERT]
        object.__setattr__(self, "cert_field", certs[0] if certs else None)

    def plan(self, name: str, build: Callable[[Schema], T]) -> T:
        """A table derived from this schema by ``build``, built on first use and kept.

        The modules that read the registry compile it into such plans (per-field checks,
        conversions, parsers), so that the hot paths do straight-line work.
        """
        try:
            return self._plans[name]  # type: ignore[no-any-return]
        except KeyError:
            built = self._plans[name] = build(self)
            return built


# -- Field definitions shared by several messages ------------------------------------------------

# Examples are the values of the document's section 8.3 sample.
_MERCHANT_ID = Field("merchantId", "merchant_id", 50, example="888009941120001")
_REQUEST_ID = Field("requestId", "request_id", 50)
_SIGN_TYPE = _enum_field("signType", "sign_type", 3, SignType)
#: The only protocol version this library speaks.
VERSION = "2.0.0"

_VERSION = Field("version", "version", 10, choices=(VERSION,), example=VERSION)
_RETURN_CODE = Field(
    "returnCode",
    "return_code",
    10,
    example="000000",
    pattern=RETURN_CODE_PATTERN,
    pattern_rule="not a return code of appendix 9.2's forms (6 digits, or MCG, RPM, E or IPS "
    "and digits)",
)
_MESSAGE = Field("message", "message", 256, optional=True, utf8_escaped=True, example="SUCCESS")
# No "*": the masked mobile (ddd****dddd) before it in notifications could otherwise move
# whole into the order id and keep the signature (docs/guarantees.md).
_ORDER_ID = Field(
    "orderId",
    "order_id",
    50,
    example="201103091030298930",
    pattern=r"[^*]+",
    pattern_rule="must not contain '*'",
)
_RESERVED1 = Field("reserved1", "reserved1", 256, optional=True, utf8_escaped=True)
_RESERVED2 = Field("reserved2", "reserved2", 256, optional=True, utf8_escaped=True)
_MERCHANT_CERT = Field("merchantCert", "merchant_cert", kind=Kind.CERT, optional=True)
_SERVER_CERT = Field("serverCert", "server_cert", kind=Kind.CERT, optional=True)
_HMAC = Field("hmac", "hmac", kind=Kind.SIGNATURE)


def _type(value: str) -> Field:
    return Field("type", "type", 20, choices=(value,), example=value)


def _payment_request(wire_type: str) -> Schema:
    """DirectPayConfirm and its siblings share the 27 fields of section 6.1.3."""
    return Schema(
        wire_type,
        wire_type,
        (
            _enum_field("characterSet", "character_set", 2, CharacterSet, optional=True),
            Field("callbackUrl", "callback_url", 100, Kind.URL),
            Field("notifyUrl", "notify_url", 100, Kind.URL),
            Field("ipAddress", "ip_address", 15, Kind.IPV4),
            _MERCHANT_ID,
            _REQUEST_ID,
            _SIGN_TYPE,
            _type(wire_type),
            _VERSION,
            Field("amount", "amount", 10, Kind.NUMBER, min_value=1),
            Field("bankAbbr", "bank_abbr", 8, Kind.BANK, optional=True),
            _enum_field("currency", "currency", 3, Currency),
            Field("orderDate", "order_date", 8, Kind.DATE),
            _ORDER_ID,
            Field("merAcDate", "mer_ac_date", 8, Kind.DATE),
            Field("period", "period", 3, Kind.NUMBER, min_value=1),
            _enum_field("periodUnit", "period_unit", 2, PeriodUnit),
            Field("merchantAbbr", "merchant_abbr", 50, optional=True),
            Field("productDesc", "product_desc", 256, optional=True),
            Field("productId", "product_id", 50, optional=True),
            Field("productName", "product_name", 50),
            Field("productNum", "product_num", 5, Kind.NUMBER, optional=True, min_value=1),
            _RESERVED1,
            _RESERVED2,
            Field("userToken", "user_token", 64, optional=True, sensitive=True),
            Field("showUrl", "show_url", 400, Kind.URL, optional=True),
            _enum_field("couponsFlag", "coupons_flag", 2, CouponsFlag, optional=True),
            _MERCHANT_CERT,
            _HMAC,
        ),
    )


def _payment_response(wire_type: str) -> Schema:
    """The gateway's answer to a payment request (section 6.2.2)."""
    return Schema(
        wire_type + "Response",
        wire_type,
        (
            _MERCHANT_ID,
            _REQUEST_ID,
            _SIGN_TYPE,
            # Answers have been seen with a shortened type; it is signed, not checked.
            Field("type", "type", 20),
            _VERSION,
            _RETURN_CODE,
            _MESSAGE,
            Field("payUrl", "pay_url", None, Kind.PAY_URL, optional=True),
            _SERVER_CERT,
            _HMAC,
        ),
    )


def _notification(wire_type: str) -> Schema:
    """PageNotify (section 7.2) and OfflineNotify (section 8.2) share one field list."""
    return Schema(
        wire_type,
        wire_type,
        (
            _MERCHANT_ID,
            _PAY_NO,
            _RETURN_CODE,
            _MESSAGE,
            _SIGN_TYPE,
            _type(wire_type),
            _VERSION,
            _AMOUNT_PAID,
            attrs.evolve(
                _AMT_ITEM, example="CNY_AMT=100#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0"
            ),
            # Appendix 9.1 (a newer bank is admitted by the verifier's extra_bank_codes).
            Field("bankAbbr", "bank_abbr", 8, Kind.BANK, optional=True, example="ICBC"),
            attrs.evolve(_MOBILE, example="151****0263"),
            _ORDER_ID,
            Field("payDate", "pay_date", 20, Kind.DATETIME, example="20190131102735"),
            Field("accountDate", "account_date", 8, Kind.DATE, example="20190131"),
            _RESERVED1,
            _RESERVED2,
            _enum_field("status", "status", 10, PaymentStatus, example="SUCCESS"),
            Field("orderDate", "order_date", 10, Kind.DATE, example="20110309"),
            Field("fee", "fee", 10, Kind.NUMBER, example="0"),
            _SERVER_CERT,
            _HMAC,
        ),
    )


def _order_request(wire_type: str, *business: Field) -> Schema:
    """OrderQuery and OrderRefund requests: the protocol fields, then their own."""
    return Schema(
        wire_type,
        wire_type,
        (
            _MERCHANT_ID,
            _REQUEST_ID,
            _SIGN_TYPE,
            _type(wire_type),
            _VERSION,
            *business,
            _MERCHANT_CERT,
            _HMAC,
        ),
    )


def _order_answer(wire_type: str, *business: Field) -> Schema:
    """OrderQuery and OrderRefund answers: a failure answer may leave business fields empty."""
    head = (_MERCHANT_ID, attrs.evolve(_PAY_NO, optional=True), _RETURN_CODE, _MESSAGE)
    protocol = (_SIGN_TYPE, Field("type", "type", 20), _VERSION)
    return Schema(
        wire_type + "Response",
        wire_type,
        head
        + protocol
        + tuple(attrs.evolve(f, optional=True) for f in business)
        + (_SERVER_CERT, _HMAC),
    )


_AMOUNT_PAID = Field("amount", "amount", 10, Kind.NUMBER, example="100")
#: Its five parts, each a canonical decimal, add up to ``amount`` (sections 7.2 and 8.2:
#: "支付金额明细", the breakdown of the paid amount), or are all 0 (nothing was paid).
_AMT_ITEM = Field("amtItem", "amount_items", 256, Kind.AMT_ITEM, sums_to="amount")
#: "手机前三位+后四位, 网关支付时为空": the first three and last four digits, or empty.
_MOBILE = Field(
    "mobile",
    "mobile",
    15,
    optional=True,
    sensitive=True,
    pattern=r"[0-9]{3}\*{4}[0-9]{4}",
    pattern_rule="must be 3 digits, '****' and 4 digits",
)
#: The status of an OrderQuery or OrderRefund answer: a word in capitals (SUCCESS, FAILED, or
#: another while pending); the document has no table for these answers.
_ANSWER_STATUS = Field(
    "status", "status", 10, pattern="[A-Z]+", pattern_rule="must be a word in capital letters"
)
_PAY_NO = Field("payNo", "pay_no", 50, example="201901310005378468")

_SCHEMAS = (
    _payment_request("DirectPayConfirm"),
    _payment_response("DirectPayConfirm"),
    # The WAP cashier: the same fields, another type (PROTOCOL.md section 3).
    _payment_request("WAPDirectPayConfirm"),
    _payment_response("WAPDirectPayConfirm"),
    _notification("PageNotify"),
    _notification("OfflineNotify"),
    _order_request("OrderQuery", _ORDER_ID),
    _order_answer(
        "OrderQuery",
        _AMOUNT_PAID,
        _AMT_ITEM,
        Field("bankAbbr", "bank_abbr", 8, Kind.BANK),
        _MOBILE,
        _ORDER_ID,
        Field("payDate", "pay_date", 20, Kind.DATETIME),
        _RESERVED1,
        _RESERVED2,
        # A query may report states other than SUCCESS and FAILED.
        _ANSWER_STATUS,
        Field("orderDate", "order_date", 10, Kind.DATE),
        Field("fee", "fee", 10, Kind.NUMBER),
    ),
    _order_request(
        "OrderRefund", _ORDER_ID, Field("amount", "amount", 10, Kind.NUMBER, min_value=1)
    ),
    _order_answer("OrderRefund", _AMOUNT_PAID, _ORDER_ID, _ANSWER_STATUS),
)

#: Message name -> schema. Requests and notifications are named by their wire ``type``;
#: gateway answers by the type plus ``Response``.
REGISTRY: Mapping[str, Schema] = MappingProxyType({s.name: s for s in _SCHEMAS})


#: The parts of ``amtItem`` (sections 7.2, 8.2), key -> ``AmountItems`` attribute, in order.
AMT_ITEM_PARTS: Mapping[str, str] = MappingProxyType(
    {
        "CNY_AMT": "cash",
        "CMY_AMT": "top_up_card",
        "RED_AMT": "e_coupon",
        "VCH_AMT": "voucher",
        "POT_CHG_AMT": "points",
    }
)


def schema_for(message: str) -> Schema:
    """Return the schema of a message name, or raise a clear error naming the known ones."""
    try:
        return REGISTRY[message]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ConfigurationError(f"unknown message {message!r}; known: {known}") from None
