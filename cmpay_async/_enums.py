"""The closed vocabularies of the CMPay protocol, as enums whose values are the wire codes."""

from __future__ import annotations

import enum

__all__ = [
    "Channel",
    "CharacterSet",
    "CouponsFlag",
    "Currency",
    "OrderState",
    "PaymentStatus",
    "PeriodUnit",
    "SignType",
]


class CharacterSet(str, enum.Enum):
    """The charset a request body is percent-encoded in (``characterSet``)."""

    GBK = "00"
    GB2312 = "01"
    UTF8 = "02"

    @property
    def codec(self) -> str:
        """Python codec name for this charset."""
        return _CODECS[self]

    @property
    def http_name(self) -> str:
        """Charset name as written in a ``Content-Type`` header."""
        return _HTTP_NAMES[self]


_CODECS = {CharacterSet.GBK: "gbk", CharacterSet.GB2312: "gb2312", CharacterSet.UTF8: "utf-8"}
_HTTP_NAMES = {CharacterSet.GBK: "GBK", CharacterSet.GB2312: "GB2312", CharacterSet.UTF8: "UTF-8"}


class SignType(str, enum.Enum):
    """How a message is signed (``signType``)."""

    MD5 = "MD5"
    RSA = "RSA"


class Currency(str, enum.Enum):
    """Order currency (``currency``); the gateway knows only CNY."""

    CNY = "00"


class PeriodUnit(str, enum.Enum):
    """Unit of the order's validity period (``periodUnit``)."""

    MINUTES = "00"
    HOURS = "01"
    DAYS = "02"
    MONTHS = "03"


class CouponsFlag(str, enum.Enum):
    """Which marketing tools the buyer may use (``couponsFlag``)."""

    ALL = "00"
    NO_E_COUPONS = "10"
    NO_VOUCHERS = "20"
    NO_POINTS = "30"
    NONE = "40"


class PaymentStatus(str, enum.Enum):
    """Outcome of a payment as notified (``status``)."""

    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


class Channel(str, enum.Enum):
    """Which cashier the buyer is sent to; the value is the request's ``type``."""

    WEB = "DirectPayConfirm"
    WAP = "WAPDirectPayConfirm"


class OrderState(str, enum.Enum):
    """What an OrderQuery found, as one of four distinct outcomes."""

    PAID = "paid"
    FAILED = "failed"
    #: Known to the gateway but neither paid nor failed (yet).
    PENDING = "pending"
    #: The gateway does not know the order (``RPM22201``).
    NOT_FOUND = "not_found"
