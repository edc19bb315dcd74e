"""Typed values of cmpay-async: attrs, frozen, keyword-only. Money is always an int of fen.

The models declare typed attributes (so that type checkers see them), but their names must be
the registry's ``attr`` names: every conversion to and from the wire iterates the registry, and
``_binding`` refuses at import a model attribute the registry does not know.
"""

from __future__ import annotations

import datetime as dt
import html
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar
from urllib.parse import quote

import attrs

from . import _serial
from ._appendix import SUCCESS_CODES
from ._enums import CouponsFlag, Currency, OrderState, PaymentStatus, PeriodUnit, SignType
from ._exceptions import Problem, ValidationError
from ._serial import CHINA_TZ

#: A module name: reading a member off its Enum class costs more than the rest of ``paid``.
_SUCCESS = PaymentStatus.SUCCESS

__all__ = [
    "CHINA_TZ",
    "AmountItems",
    "FrozenMapping",
    "GatewayAnswer",
    "Model",
    "Notification",
    "OfflineNotify",
    "Order",
    "OrderQueryResult",
    "PageNotify",
    "PayUrl",
    "PaymentResponse",
    "Placement",
    "RefundResult",
    "yuan_to_fen",
]


def yuan_to_fen(yuan: Decimal | str | int) -> int:
    """Convert yuan (``Decimal("12.50")``, ``"12.50"`` or int) to int fen, exactly.

    Floats are refused (``0.1 + 0.2`` is not money) and so are amounts below one fen.
    """
    if isinstance(yuan, (bool, float)):
        raise ValidationError([Problem("amount", "give yuan as Decimal or str, not float")])
    try:
        value = Decimal(yuan)  # a str may have surrounding whitespace: Decimal allows it
    except (InvalidOperation, TypeError, ValueError):
        raise ValidationError([Problem("amount", "not a decimal number of yuan")]) from None
    if not value.is_finite():
        raise ValidationError([Problem("amount", "not a finite amount")])
    fen = value * 100
    if fen != fen.to_integral_value():
        raise ValidationError([Problem("amount", "finer than one fen")])
    return int(fen)


M = TypeVar("M", bound="Model")
#: Any frozen, slotted attrs class (a model, a store's answer, a payment event).
A = TypeVar("A")

_UNCHECKED: dict[type, Callable[..., Any]] = {}


def unchecked(cls: type[A]) -> Callable[..., A]:
    """A constructor of the frozen, slotted attrs class ``cls`` taking every attribute
    positionally, in ``attrs.fields`` order, with no type check and no converter: only for
    values the library's own decoders produced and proved (a verified notification) or its
    own code made. Everyone else uses the checked ``cls(...)``.

    The instance is the one ``cls(...)`` builds from the same values: the attributes are set
    through the slots' own descriptors, as attrs' generated ``__init__`` does for a frozen
    class, so equality, hashing, ``repr``, pickling and ``attrs.fields`` are unchanged.
    """
    made = _UNCHECKED.get(cls)
    if made is None:
        made = _UNCHECKED[cls] = _compile_unchecked(cls)
    return made


def _compile_unchecked(cls: type) -> Callable[..., Any]:
    names = [a.name for a in attrs.fields(cls)]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    lines = [f"def make_{cls.__name__}({', '.join(names)}):", "    self = _new(_cls)"]
    for i, name in enumerate(names):
        slot = next(
            k.__dict__[name]
            for k in cls.__mro__
            if isinstance(k.__dict__.get(name), types.MemberDescriptorType)
        )
        namespace[f"_set{i}"] = slot.__set__
        lines.append(f"    _set{i}(self, {name})")
    lines.append("    return self")
    exec(compile("\n".join(lines), f"<unchecked {cls.__qualname__}>", "exec"), namespace)  # noqa: S102
    return namespace[f"make_{cls.__name__}"]  # type: ignore[no-any-return]


@attrs.frozen(kw_only=True)
class Model:
    """Base of every model: type-checked on construction, picklable, JSON-safe via dicts."""

    def __attrs_post_init__(self) -> None:
        # A wrong type fails here, not later as a wrong answer (a "SUCCESS" str where a
        # PaymentStatus belongs would read as unpaid).
        _serial.check_types(self)

    def to_dict(self) -> dict[str, Any]:
        """This model as a JSON-safe dict (ints, strings, ISO dates, enum values)."""
        return _serial.to_dict(self)

    @classmethod
    def from_dict(cls: type[M], data: Mapping[str, Any]) -> M:
        """Rebuild the model from ``to_dict()`` output; raises ``DecodeError`` naming the field.

        It trusts the data as much as its source: carry verified models between your own
        processes with it, never data from outside (verify the raw payload instead).
        """
        return _serial.from_dict(cls, data)  # type: ignore[no-any-return]


@attrs.frozen(kw_only=True)
class Order(Model):
    """The business fields of a DirectPayConfirm order, as the merchant states them."""

    #: Amount in fen (1 yuan = 100); see ``yuan_to_fen``.
    amount: int
    order_id: str
    product_name: str
    period: int = 1
    period_unit: PeriodUnit = PeriodUnit.DAYS
    currency: Currency = Currency.CNY
    bank_abbr: str = ""
    merchant_abbr: str = ""
    product_desc: str = ""
    product_id: str = ""
    product_num: int | None = None
    reserved1: str = ""
    reserved2: str = ""
    #: Buyer's phone number or account nickname: personal data, so not in repr.
    user_token: str = attrs.field(default="", repr=False)
    show_url: str = ""
    coupons_flag: CouponsFlag | None = None
    #: Defaults to today in China time when the request is built.
    order_date: dt.date | None = None
    mer_ac_date: dt.date | None = None
    #: Empty means the client's default.
    callback_url: str = ""
    notify_url: str = ""


class FrozenMapping(Mapping[str, int]):
    """A read-only mapping that pickles and hashes (``AmountItems.extra``)."""

    __slots__ = ("_data",)

    def __init__(self, items: Mapping[str, int] | Iterable[tuple[str, int]] = ()) -> None:
        self._data = dict(items)

    def __getitem__(self, key: str) -> int:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMapping({self._data!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenMapping, (self._data,))


def _frozen_mapping(value: object) -> Any:
    # Anything but a mapping is left for the type check to name.
    if isinstance(value, Mapping) and not isinstance(value, FrozenMapping):
        return FrozenMapping(value)
    return value


_NO_EXTRA = FrozenMapping()


@attrs.frozen(kw_only=True)
class AmountItems(Model):
    """The parts of a paid amount (``amtItem``), each in fen."""

    cash: int = 0
    top_up_card: int = 0
    e_coupon: int = 0
    voucher: int = 0
    points: int = 0
    #: Parts the 2011 document does not name, kept rather than dropped.
    extra: Mapping[str, int] = attrs.field(default=_NO_EXTRA, converter=_frozen_mapping)

    @property
    def total(self) -> int:
        """Sum of all parts in fen."""
        return (
            self.cash
            + self.top_up_card
            + self.e_coupon
            + self.voucher
            + self.points
            + sum(self.extra.values())
        )


@attrs.frozen(kw_only=True)
class PayUrl(Model):
    """The decoded ``payUrl`` token: where and how to send the buyer to the cashier."""

    url: str
    method: str
    session_id: str
    #: Other keys of the token, in order, empty values kept.
    extra: tuple[tuple[str, str], ...] = ()
    #: The token as received.
    raw: str = ""

    @property
    def redirect_url(self) -> str:
        """A URL for a GET redirect: ``url?sessionId=ID``."""
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}sessionId={quote(self.session_id, safe='')}"

    def form_html(self) -> str:
        """A minimal HTML page that auto-submits the buyer to the cashier; values escaped."""
        method = "get" if self.method.lower() == "get" else "post"
        # escape() also quotes " and ' by default, which attribute values need.
        action = html.escape(self.url)
        sid = html.escape(self.session_id)
        return (
            '<!DOCTYPE html><html><head><meta charset="utf-8"><title>CMPay</title></head>'
            f'<body onload="document.forms[0].submit()">'
            f'<form method="{method}" action="{action}">'
            f'<input type="hidden" name="sessionId" value="{sid}">'
            '<noscript><button type="submit">Continue to payment</button></noscript>'
            "</form></body></html>"
        )


@attrs.frozen(kw_only=True)
class GatewayAnswer(Model):
    """What every verified gateway answer carries."""

    merchant_id: str
    return_code: str
    message: str
    sign_type: SignType
    type: str
    version: str


@attrs.frozen(kw_only=True)
class PaymentResponse(GatewayAnswer):
    """The gateway's verified answer to a DirectPayConfirm order."""

    request_id: str
    pay_url: PayUrl


@attrs.frozen(kw_only=True)
class Notification(Model):
    """A verified payment notification (PageNotify or OfflineNotify)."""

    @classmethod
    def from_dict(cls: type[M], data: Mapping[str, Any]) -> M:
        """Rebuild a notification; ``Notification.from_dict`` picks the class from ``type``."""
        if cls is Notification and isinstance(data, Mapping):
            kinds = {c.__name__: c for c in Notification.__subclasses__()}
            kind = kinds.get(str(data.get("type")))
            if kind is not None:
                return kind.from_dict(data)  # type: ignore[return-value]
        return _serial.from_dict(cls, data)  # type: ignore[no-any-return]

    merchant_id: str
    pay_no: str
    return_code: str
    message: str
    sign_type: SignType
    type: str
    version: str
    amount: int
    amount_items: AmountItems
    bank_abbr: str
    #: Masked by the gateway (first three and last four digits), yet kept out of repr.
    mobile: str = attrs.field(repr=False)
    order_id: str
    pay_date: dt.datetime
    account_date: dt.date
    reserved1: str
    reserved2: str
    status: PaymentStatus
    order_date: dt.date
    fee: int

    @property
    def paid(self) -> bool:
        """True only for status SUCCESS with a success return code."""
        return self.status is _SUCCESS and self.return_code in SUCCESS_CODES


@attrs.frozen(kw_only=True)
class PageNotify(Notification):
    """The browser-redirect notification posted to ``callbackUrl``."""


@attrs.frozen(kw_only=True)
class OfflineNotify(Notification):
    """The server-to-server notification posted to ``notifyUrl``; answer it with ``ack()``."""


#: The return code of an OrderQuery for an order the gateway does not know.
ORDER_NOT_FOUND = "RPM22201"


@attrs.frozen(kw_only=True)
class OrderQueryResult(GatewayAnswer):
    """The gateway's verified answer to an OrderQuery; see ``state``."""

    order_id: str
    #: The gateway's own status text (``SUCCESS``, ``FAILED``, or another word while pending).
    status: str
    pay_no: str
    amount: int | None
    amount_items: AmountItems | None
    bank_abbr: str
    mobile: str = attrs.field(repr=False)
    pay_date: dt.datetime | None
    order_date: dt.date | None
    fee: int | None
    reserved1: str
    reserved2: str

    @property
    def state(self) -> OrderState:
        """PAID, FAILED, PENDING or NOT_FOUND."""
        if self.return_code == ORDER_NOT_FOUND:
            return OrderState.NOT_FOUND
        if self.status == PaymentStatus.SUCCESS.value:
            return OrderState.PAID
        if self.status == PaymentStatus.FAILED.value:
            return OrderState.FAILED
        return OrderState.PENDING

    @property
    def found(self) -> bool:
        """Whether the gateway knows the order."""
        return self.state is not OrderState.NOT_FOUND

    @property
    def paid(self) -> bool:
        """Whether the order is paid."""
        return self.state is OrderState.PAID


@attrs.frozen(kw_only=True)
class RefundResult(GatewayAnswer):
    """The gateway's verified answer to an OrderRefund that it accepted."""

    order_id: str
    pay_no: str
    #: The refunded amount in fen.
    amount: int | None
    status: str


@attrs.frozen(kw_only=True)
class Placement(Model):
    """What ``place_order`` found or did: safe to compute again for the same order."""

    order_id: str
    #: PENDING for an order created now; otherwise what the gateway's query said.
    state: OrderState
    #: True when this call created the order (the first run of a job, or its first delivery).
    created: bool
    #: The verified answer with the pay link, when this call created the order.
    payment: PaymentResponse | None = None
    #: The verified query result, when the order already existed at the gateway.
    query: OrderQueryResult | None = None

    @property
    def pay_url(self) -> PayUrl | None:
        """The cashier link, known only when this call created the order (see ``place_order``)."""
        return self.payment.pay_url if self.payment is not None else None
