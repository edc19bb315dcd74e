"""Bytes <-> fields <-> typed values, driven by the registry. Pure: no I/O, no clock.

- Requests are ``application/x-www-form-urlencoded`` in the charset ``characterSet`` names.
- Answers are ``k=v&k=v`` text split on ``&`` then on the first ``=``; only the fields that may
  hold Chinese arrive percent-encoded (PROTOCOL.md section 4).
- Notifications are real form posts; after the form decode a Chinese field may still be
  percent-encoded, so both readings are offered to the verifier (``escaped_readings``).
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import quote_plus, unquote, unquote_plus, unquote_to_bytes

import attrs

from ._enums import CharacterSet
from ._exceptions import (
    DecodeError,
    DuplicateFieldError,
    EncodingError,
    PayloadTooLargeError,
    Problem,
)
from ._models import (
    CHINA_TZ,
    AmountItems,
    Notification,
    Order,
    PaymentResponse,
    PayUrl,
)
from ._schema import AMT_ITEM_PARTS, REGISTRY, Field, Kind, Schema

__all__ = [
    "MAX_PAYLOAD",
    "Payload",
    "content_type",
    "decode_payload",
    "encode_answer",
    "encode_form",
    "escaped_readings",
    "format_amount_items",
    "parse_amount_items",
    "parse_date",
    "parse_datetime",
    "parse_pay_url",
    "typed_values",
    "wire_fields",
]

#: Largest answer or notification body accepted, in bytes.
MAX_PAYLOAD = 64 * 1024

Payload = bytes | bytearray | memoryview | str | Mapping[str, Any]

# -- Python values -> wire strings ----------------------------------------------------------------


def _wire_value(field: Field, value: object) -> str | Problem:
    if value is None:
        return ""
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
        return value.strftime("%Y%m%d")
    if isinstance(value, AmountItems):
        return format_amount_items(value)
    if isinstance(value, PayUrl):
        return value.raw
    kind = "an int of fen" if field.kind is Kind.NUMBER else "a str"
    return Problem(field.wire, f"must be {kind}, not {type(value).__name__}", "type")


def wire_fields(
    schema: Schema, values: Mapping[str, object]
) -> tuple[dict[str, str], list[Problem]]:
    """Turn typed values keyed by attribute name into wire strings keyed by wire name.

    Fields with a single allowed value (``type``, ``version``) are filled in. Values the wire
    cannot carry (a float amount, a naive datetime) become problems.
    """
    out: dict[str, str] = {}
    problems: list[Problem] = []
    for field in schema.fields:
        value = values.get(field.attr)
        if value is None and field.choices is not None and len(field.choices) == 1:
            # A field with one allowed value (type, version) needs no caller to state it.
            value = field.choices[0]
        result = _wire_value(field, value)
        if isinstance(result, Problem):
            problems.append(result)
            out[field.wire] = ""
        else:
            out[field.wire] = result
    return out, problems


def content_type(charset: CharacterSet) -> str:
    """The ``Content-Type`` of a request body encoded in ``charset``."""
    return f"application/x-www-form-urlencoded; charset={charset.http_name}"


_SAFE_RUN = re.compile(r"[A-Za-z0-9_.\-~]*")


def _quote(value: str, codec: str) -> str:
    # Most values (ids, codes, digits) need no escaping: skip quote_plus's per-call setup.
    if _SAFE_RUN.fullmatch(value):
        return value
    return quote_plus(value, safe="", encoding=codec, errors="strict")


def encode_form(pairs: Iterable[tuple[str, str]], charset: CharacterSet) -> bytes:
    """Percent-encode ``(name, value)`` pairs as a form body in ``charset``.

    Raises ``EncodingError`` naming every field holding a character the charset lacks.
    """
    codec = charset.codec
    parts: list[str] = []
    problems: list[Problem] = []
    for name, value in pairs:
        try:
            parts.append(f"{name}={_quote(value, codec)}")
        except UnicodeEncodeError as exc:
            char = exc.object[exc.start : exc.end]
            problems.append(
                Problem(
                    name,
                    f"character {char!r} (U+{ord(char[0]):04X}) cannot be encoded in "
                    f"{charset.http_name}",
                    "charset",
                )
            )
    if problems:
        raise EncodingError(problems)
    return "&".join(parts).encode("ascii")


def encode_answer(schema: Schema, fields: Mapping[str, str]) -> bytes:
    """Encode fields the way the gateway answers: raw, but Chinese-capable fields escaped."""
    parts = []
    for field in schema.fields:
        value = fields.get(field.wire, "")
        if field.kind is Kind.CERT and not value:
            continue
        if field.utf8_escaped:
            value = quote_plus(value, safe="")
        parts.append(f"{field.wire}={value}")
    return "&".join(parts).encode("utf-8")


# -- bytes / str / mapping -> wire strings -------------------------------------------------------


def decode_payload(
    payload: Payload,
    *,
    form: bool,
    charset: str | None = None,
    max_size: int = MAX_PAYLOAD,
) -> dict[str, str]:
    """Split a received payload into fields, never mutating it.

    ``form=True`` percent-decodes names and values (a posted form); ``form=False`` keeps
    values raw (a gateway answer). Bytes are decoded as ``charset`` or, when none is given,
    as UTF-8 with a fallback to GBK. Duplicate fields and oversize payloads are refused.
    """
    if isinstance(payload, Mapping):
        return _from_mapping(payload)
    if isinstance(payload, (bytearray, memoryview)):
        payload = bytes(payload)
    if isinstance(payload, str):
        # A str is already text: only its percent-escapes are bytes in the charset.
        size = len(payload) if payload.isascii() else len(payload.encode("utf-8"))
    elif isinstance(payload, bytes):
        size = len(payload)
    else:
        raise DecodeError(f"payload must be bytes, str or a mapping, not {type(payload).__name__}")
    if size > max_size:
        raise PayloadTooLargeError(f"payload of {size} bytes is over {max_size} bytes")
    if not payload.strip():
        raise DecodeError("payload is empty")
    codecs = [charset] if charset else ["utf-8", "gbk"]
    for codec in codecs:
        try:
            return _split(payload, codec, form=form)
        except UnicodeDecodeError as exc:
            reason = exc.reason
        except LookupError:
            raise DecodeError(f"unknown charset {codec!r}") from None
    raise DecodeError(f"payload is not valid {' or '.join(codecs)}: {reason}")


def _split(data: bytes | str, codec: str, *, form: bool) -> dict[str, str]:
    pairs: Iterable[tuple[str, str]]
    if isinstance(data, str):
        if form:
            pairs = (
                (_unform_str(n, codec), _unform_str(v, codec))
                for n, v in (_pair(p) for p in data.split("&") if p)
            )
        else:
            pairs = (_pair(part) for part in data.split("&") if part)
    elif form:
        pairs = (
            (_unform(name, codec), _unform(value, codec))
            for name, value in (_bpair(part) for part in data.split(b"&") if part)
        )
    else:
        pairs = (_pair(part) for part in data.decode(codec).split("&") if part)
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:
            raise DuplicateFieldError("given more than once", field=name)
        out[name] = value
    return out


def _pair(part: str) -> tuple[str, str]:
    name, _, value = part.partition("=")
    return name.strip(), value


def _bpair(part: bytes) -> tuple[bytes, bytes]:
    name, _, value = part.partition(b"=")
    return name.strip(), value


def _unform_str(raw: str, codec: str) -> str:
    if "%" not in raw and "+" not in raw:
        return raw
    return unquote_plus(raw, encoding=codec, errors="strict")


def _unform(raw: bytes, codec: str) -> str:
    if b"%" not in raw and b"+" not in raw:
        return raw.decode(codec)
    return unquote_to_bytes(raw.replace(b"+", b" ")).decode(codec)


def _from_mapping(mapping: Mapping[str, Any]) -> dict[str, str]:
    lists = getattr(mapping, "lists", None)  # Django QueryDict
    multi = getattr(mapping, "multi_items", None)  # Starlette FormData
    if callable(lists):
        items: Iterable[tuple[Any, Any]] = [(k, v) for k, vs in lists() for v in vs]
    elif callable(multi):
        items = multi()
    else:
        # A plain dict, or aiohttp's MultiDict whose items() include repeated keys.
        items = mapping.items()
    out: dict[str, str] = {}
    for name, value in items:
        if not isinstance(name, str):
            raise DecodeError(f"field name {name!r} is not a str")
        if isinstance(value, (list, tuple)):
            if len(value) != 1:
                raise DuplicateFieldError("given more than once", field=name)
            value = value[0]
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError("not valid UTF-8", field=name) from None
        if not isinstance(value, str):
            raise DecodeError(f"not text ({type(value).__name__})", field=name)
        if name in out:
            raise DuplicateFieldError("given more than once", field=name)
        out[name] = value
    return out


def escaped_readings(schema: Schema, fields: Mapping[str, str]) -> list[dict[str, str]]:
    """The readings of ``fields`` to try in turn when verifying a received payload.

    Chinese-capable fields are signed over their decoded text but may arrive percent-encoded
    (once or twice); the fully decoded reading comes first, the value as received last.
    """
    escaped = [f.wire for f in schema.fields if f.utf8_escaped and "%" in fields.get(f.wire, "")]
    readings = []
    for decode in (_fully_unquote_plus, _fully_unquote):
        reading = dict(fields)
        for name in escaped:
            reading[name] = decode(fields[name])
        if reading not in readings and reading != fields:
            readings.append(reading)
    readings.append(dict(fields))
    return readings


def _fully_unquote_plus(value: str) -> str:
    return _fully(value, unquote_plus)


def _fully_unquote(value: str) -> str:
    return _fully(value, unquote)


def _fully(value: str, decode: Any) -> str:
    # Bounded: three layers of escaping is more than any real gateway produces.
    for _ in range(3):
        decoded: str = decode(value, errors="strict") if "%" in value else value
        if decoded == value:
            break
        value = decoded
    return value


# -- wire strings -> typed values -----------------------------------------------------------------


def parse_date(text: str, *, field: str = "date") -> dt.date:
    """Parse ``YYYYMMDD``."""
    if len(text) != 8 or not text.isascii() or not text.isdigit():
        raise DecodeError("not a date of the form YYYYMMDD", field=field)
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise DecodeError("not a valid calendar date", field=field) from None


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


def parse_amount_items(text: str, *, field: str = "amtItem") -> AmountItems:
    """Parse ``CNY_AMT=100#CMY_AMT=0#...`` into int fen parts."""
    known: dict[str, int] = {}
    extra: dict[str, int] = {}
    for part in text.split("#"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        value = value.strip()
        if not sep or not value.isascii() or not value.isdigit():
            raise DecodeError(f"part {key!r} is not KEY=<fen>", field=field)
        target = AMT_ITEM_PARTS.get(key)
        bucket, name = (known, target) if target else (extra, key)
        if name in bucket:
            raise DecodeError(f"part {key!r} given twice", field=field)
        bucket[name] = int(value)
    return AmountItems(**known, extra=MappingProxyType(extra))


def format_amount_items(items: AmountItems) -> str:
    """Write ``AmountItems`` as the gateway does: ``CNY_AMT=100#CMY_AMT=0#...``."""
    parts = [f"{key}={getattr(items, attr)}" for key, attr in AMT_ITEM_PARTS.items()]
    parts.extend(f"{key}={value}" for key, value in items.extra.items())
    return "#".join(parts)


_PAYURL_SEP = "<hi:$$>"
_PAYURL_EQ = "<hi:=>"


def parse_pay_url(token: str, *, field: str = "payUrl") -> PayUrl:
    """Parse the ``url<hi:=>...<hi:$$>method<hi:=>post<hi:$$>sessionId<hi:=>...`` token."""
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
    return PayUrl(
        url=url,
        method=known.get("method") or "post",
        session_id=known["sessionId"],
        extra=tuple(extra),
        raw=token,
    )


def _typed(field: Field, text: str) -> object:
    if not text:
        if not field.optional:
            raise DecodeError("missing or empty", field=field.wire)
        if field.kind in (Kind.NUMBER, Kind.PAY_URL, Kind.DATE, Kind.DATETIME):
            return None
    if field.enum is not None:
        try:
            return field.enum(text)
        except ValueError:
            allowed = ", ".join(field.choices or ())
            raise DecodeError(f"{text[:20]!r} is not one of {allowed}", field=field.wire) from None
    kind = field.kind
    if kind is Kind.NUMBER:
        if not text.isascii() or not text.isdigit():
            raise DecodeError("must be digits", field=field.wire)
        return int(text)
    if kind is Kind.DATE:
        return parse_date(text, field=field.wire)
    if kind is Kind.DATETIME:
        return parse_datetime(text, field=field.wire)
    if kind is Kind.AMT_ITEM:
        return parse_amount_items(text, field=field.wire)
    if kind is Kind.PAY_URL:
        return parse_pay_url(text, field=field.wire)
    return text


def typed_values(schema: Schema, fields: Mapping[str, str], model: type) -> dict[str, Any]:
    """Convert the wire fields a model holds into its typed attribute values.

    Raises ``DecodeError`` naming the field for a missing required field or a bad value.
    """
    names = _MODEL_ATTRS[model]
    return {f.attr: _typed(f, fields.get(f.wire, "")) for f in schema.fields if f.attr in names}


# Each model's attributes must be registry attribute names of the messages it represents;
# checked once at import so a renamed field cannot drift silently.
_MODEL_SCHEMAS: Mapping[type, tuple[str, ...]] = {
    Order: ("DirectPayConfirm",),
    PaymentResponse: ("DirectPayConfirmResponse",),
    Notification: ("PageNotify", "OfflineNotify"),
}


def _model_attrs() -> dict[type, frozenset[str]]:
    out: dict[type, frozenset[str]] = {}
    for model, messages in _MODEL_SCHEMAS.items():
        names = frozenset(a.name for a in attrs.fields(model))
        for message in messages:
            unknown = names - REGISTRY[message].by_attr.keys()
            if unknown:
                raise RuntimeError(
                    f"{model.__name__} has fields {sorted(unknown)} not in {message}"
                )
        out[model] = names
    for sub in Notification.__subclasses__():
        out[sub] = out[Notification]
    return out


_MODEL_ATTRS = _model_attrs()
