"""One field's wire text <-> its Python value: dates, times, amtItem, the payUrl token.

Pure: no I/O, no clock. Whole messages are bound to models in ``_binding``.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import re

from ._exceptions import DecodeError, Problem
from ._models import CHINA_TZ, AmountItems, PayUrl, unchecked
from ._schema import AMT_ITEM_PARTS, Field, Kind
from ._validate import date_problem

__all__ = [
    "format_amount_items",
    "parse_amount_items",
    "parse_date",
    "parse_datetime",
    "parse_pay_url",
    "wire_value",
]

# -- Python values -> wire strings ----------------------------------------------------------------


def wire_value(field: Field, value: object) -> str | Problem:
    """One typed value as its wire string, or the ``Problem`` of a type the wire cannot carry."""
    kind = type(value)
    if kind is str:  # the common cases first, by exact type
        return value  # type: ignore[return-value]
    if value is None:
        return ""
    if kind is int:
        return str(value)
    # Enum first: the protocol enums are str subclasses whose str() is not their value.
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return Problem(field.wire, "must not be a bool", "type")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return Problem(field.wire, "datetime must be timezone-aware", "type")
        return value.astimezone(CHINA_TZ).strftime("%Y%m%d%H%M%S")
    if isinstance(value, dt.date):
        return value.isoformat().replace("-", "")  # a tenth of strftime's cost
    if isinstance(value, AmountItems):
        return format_amount_items(value)
    if isinstance(value, PayUrl):
        return value.raw
    expected = "an int of fen" if field.kind is Kind.NUMBER else "a str"
    return Problem(field.wire, f"must be {expected}, not {type(value).__name__}", "type")


# -- wire strings -> typed values -----------------------------------------------------------------


def parse_date(text: str, *, field: str = "date") -> dt.date:
    """Parse ``YYYYMMDD``."""
    why = date_problem(text)
    if why is not None:
        raise DecodeError(why, field=field)
    return _date(text)


@functools.lru_cache(maxsize=4096)
def _date(text: str) -> dt.date:
    # Few distinct dates recur (today's accounting date, recent order dates): cache them.
    return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))


def parse_datetime(text: str, *, field: str = "datetime") -> dt.datetime:
    """Parse ``YYYYMMDDHHmmSS`` in China time into an aware datetime."""
    if len(text) != 14 or not text.isascii() or not text.isdigit():
        raise DecodeError("not a time of the form YYYYMMDDHHmmSS", field=field)
    try:
        return dt.datetime(
            int(text[:4]),
            int(text[4:6]),
            int(text[6:8]),
            int(text[8:10]),
            int(text[10:12]),
            int(text[12:]),
            tzinfo=CHINA_TZ,
        )
    except ValueError:
        raise DecodeError("not a valid date and time", field=field) from None


# amtItem's one form (sections 7.2, 8.2): every documented part once, in the documented
# order, each a canonical decimal of fen. Nothing else parses: a second spelling of the same
# parts would let characters move across the field's ends and keep the signature.
_FEN = "(0|[1-9][0-9]*)"
_CANONICAL_AMT_ITEM = re.compile("#".join(f"{key}={_FEN}" for key in AMT_ITEM_PARTS))
_AMT_ITEM_FORM = "#".join(f"{key}=<fen>" for key in AMT_ITEM_PARTS)
_CANONICAL_FEN = re.compile(_FEN)


def parse_amount_items(text: str, *, field: str = "amtItem") -> AmountItems:
    """Parse ``CNY_AMT=100#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0`` into int fen parts."""
    canonical = _CANONICAL_AMT_ITEM.fullmatch(text)
    if canonical is None:
        raise DecodeError(_amount_items_problem(text), field=field)
    cash, top_up_card, e_coupon, voucher, points = map(int, canonical.groups())
    return AmountItems(
        cash=cash, top_up_card=top_up_card, e_coupon=e_coupon, voucher=voucher, points=points
    )


def _amount_items_problem(text: str) -> str:
    """Why ``text`` is not amtItem's one form, as precisely as can be said."""
    parts = text.split("#")
    if len(parts) == len(AMT_ITEM_PARTS):
        for part, key in zip(parts, AMT_ITEM_PARTS, strict=True):
            name, _, value = part.partition("=")
            if name != key:
                return f"part {name[:20]!r} where {key} belongs (the form is {_AMT_ITEM_FORM})"
            if not _CANONICAL_FEN.fullmatch(value):
                return f"part {key!r} is not KEY=<fen> (digits, no sign, no leading zero)"
    return f"not of the form {_AMT_ITEM_FORM}"


def format_amount_items(items: AmountItems) -> str:
    """Write ``AmountItems`` as the gateway does: ``CNY_AMT=100#CMY_AMT=0#...``."""
    parts = [f"{key}={getattr(items, attr)}" for key, attr in AMT_ITEM_PARTS.items()]
    parts.extend(f"{key}={value}" for key, value in items.extra.items())
    return "#".join(parts)


_PAYURL_SEP = "<hi:$$>"
_PAYURL_EQ = "<hi:=>"


#: The token as the gateway writes it: its three keys in order, no blank around a value, no
#: marker inside one. Any other token takes the general reading below.
_USUAL_PAY_URL = re.compile(
    r"url<hi:=>(https?://[^<\s]+)<hi:\$\$>method<hi:=>([^<\s]*)<hi:\$\$>sessionId<hi:=>([^<\s]+)"
)


def parse_pay_url(token: str, *, field: str = "payUrl") -> PayUrl:
    """Parse the ``url<hi:=>...<hi:$$>method<hi:=>post<hi:$$>sessionId<hi:=>...`` token."""
    usual = _USUAL_PAY_URL.fullmatch(token)
    if usual is not None:  # what the general reading gives for it, in one C-level match
        url, method, session_id = usual.groups()
        return _make_pay_url(url, method or "post", session_id, (), token)
    return read_pay_url_generally(token, field=field)


def read_pay_url_generally(token: str, *, field: str = "payUrl") -> PayUrl:
    """``parse_pay_url`` for any token: keys in any order, blanks around values, extra keys."""
    # Split on the literal markers: the vendor's regex ``[<hi:$$>]{7}`` is a character class
    # and eats URLs that end in "h", "i" or ":".
    known: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    for part in token.split(_PAYURL_SEP):
        if not part.strip():
            continue
        key, sep, value = part.partition(_PAYURL_EQ)
        if not sep:
            raise DecodeError(f"token part {key[:40]!r} has no <hi:=>", field=field)
        key, value = key.strip(), value.strip()
        if key in ("url", "method", "sessionId") and key not in known:
            known[key] = value
        else:
            extra.append((key, value))
    url = known.get("url", "")
    if not url.startswith(("https://", "http://")):
        raise DecodeError("token has no http(s) url", field=field)
    if not known.get("sessionId"):
        raise DecodeError("token has no sessionId", field=field)
    # Every value is a str this function just cut out of a str: nothing left to type-check.
    method = known.get("method") or "post"
    return _make_pay_url(url, method, known["sessionId"], tuple(extra), token)


_make_pay_url = unchecked(PayUrl)
