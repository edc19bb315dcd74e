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
import functools
import re
from binascii import a2b_qp
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any
from urllib.parse import quote_plus, unquote, unquote_plus

import attrs

from ._appendix import BANK_CODES
from ._enums import CharacterSet
from ._exceptions import (
    DecodeError,
    DuplicateFieldError,
    EncodingError,
    PayloadTooLargeError,
    Problem,
)
from ._models import (
    _NO_EXTRA,
    CHINA_TZ,
    AmountItems,
    M,
    Notification,
    Order,
    OrderQueryResult,
    PaymentResponse,
    PayUrl,
    RefundResult,
    unchecked,
)
from ._schema import AMT_ITEM_PARTS, REGISTRY, Field, Kind, Schema
from ._validate import check_plan, date_problem, inline_tests

__all__ = [
    "MAX_PAYLOAD",
    "Payload",
    "content_type",
    "decode_payload",
    "encode_answer",
    "encode_fields",
    "encode_form",
    "escaped_readings",
    "form_plan",
    "format_amount_items",
    "has_escapes",
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


def wire_fields(
    schema: Schema, values: Mapping[str, object]
) -> tuple[dict[str, str], list[Problem]]:
    """Turn typed values keyed by attribute name into wire strings keyed by wire name.

    Fields with a single allowed value (``type``, ``version``) are filled in. Values the wire
    cannot carry (a float amount, a naive datetime) become problems.
    """
    out: dict[str, str] = {}
    problems: list[Problem] = []
    get = values.get
    for field, fixed in wire_plan(schema):
        value = get(field.attr)
        if type(value) is str:
            out[field.wire] = value
            continue
        if value is None:
            value = fixed
        result = wire_value(field, value)
        if type(result) is str:
            out[field.wire] = result
        else:
            problems.append(result)  # type: ignore[arg-type]
            out[field.wire] = ""
    return out, problems


def wire_plan(schema: Schema) -> tuple[tuple[Field, str | None], ...]:
    """Each field with the value it takes when none is given (its only allowed value)."""
    return schema.plan("wire", _build_wire_plan)


def _build_wire_plan(schema: Schema) -> tuple[tuple[Field, str | None], ...]:
    # A field with one allowed value (type, version) needs no caller to state it.
    return tuple(
        (f, f.choices[0] if f.choices is not None and len(f.choices) == 1 else None)
        for f in schema.fields
    )


def content_type(charset: CharacterSet) -> str:
    """The ``Content-Type`` of a request body encoded in ``charset``."""
    return _CONTENT_TYPES[charset]


_CONTENT_TYPES = {
    charset: f"application/x-www-form-urlencoded; charset={charset.http_name}"
    for charset in CharacterSet
}


# Form escaping as quote_plus(safe="") does it: of each ASCII character (for str.translate)
# and of each byte (for the bytes of non-ASCII text in the body's charset).
_ASCII_ESCAPES = {i: ("+" if i == 0x20 else quote_plus(chr(i), safe="")) for i in range(128)}
_BYTE_ESCAPES = [("+" if i == 0x20 else quote_plus(bytes([i]), safe="")) for i in range(256)]
_escape_byte = _BYTE_ESCAPES.__getitem__


def _quote(value: str, codec: str) -> str:
    # Byte-for-byte quote_plus(value, safe="", encoding=codec), in C-level calls: translate
    # for ASCII (ids, digits, URLs: the common case), a byte table for the rest. A character
    # the charset lacks raises UnicodeEncodeError, as quote_plus does.
    if value.isascii():
        return value.translate(_ASCII_ESCAPES)
    return "".join(map(_escape_byte, value.encode(codec)))


# Escaped forms of recent values, per charset: most values repeat from request to request
# (merchant id, URLs, codes, product names). Bounded; cleared when full.
_ESCAPED: dict[CharacterSet, dict[str, str]] = {charset: {} for charset in CharacterSet}
_ESCAPED_MAX = 1024


def _remember(escaped: dict[str, str], value: str, codec: str) -> str:
    result = _quote(value, codec)
    if len(escaped) >= _ESCAPED_MAX:
        escaped.clear()
    escaped[value] = result
    return result


def encode_form(pairs: Iterable[tuple[str, str]], charset: CharacterSet) -> bytes:
    """Percent-encode ``(name, value)`` pairs as a form body in ``charset``.

    Raises ``EncodingError`` naming every field holding a character the charset lacks.
    """
    codec = charset.codec
    pairs = list(pairs)
    memo = _ESCAPED[charset]
    known = memo.get
    try:
        return "&".join(
            [
                f"{name}={e if (e := known(value)) is not None else _remember(memo, value, codec)}"
                for name, value in pairs
            ]
        ).encode("ascii")
    except UnicodeEncodeError:
        pass
    problems = []
    for name, value in pairs:
        try:
            _quote(value, codec)
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
    raise EncodingError(problems)


#: Text quote_plus leaves as it is.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def form_plan(schema: Schema, names: tuple[str, ...]) -> tuple[str, tuple[int, ...]]:
    """How ``encode_fields`` writes ``names`` of ``schema``: a ``%`` template of the body,
    and the positions of the values that may need escaping. A checked number or date, or a
    value of a closed vocabulary that needs no escape, is written as it is."""

    def plain(field: Field) -> bool:
        if field.kind in (Kind.NUMBER, Kind.DATE):
            return True  # checked: ASCII digits
        return field.choices is not None and all(map(_UNRESERVED.fullmatch, field.choices))

    fields = [schema.by_wire[name] for name in names]
    template = "&".join(f"{name}=%s" for name in names)
    return template, tuple(i for i, f in enumerate(fields) if not plain(f))


def encode_fields(
    fields: Mapping[str, str], charset: CharacterSet, plan: tuple[str, tuple[int, ...]]
) -> bytes:
    """``encode_form(fields.items(), charset)`` for fields that passed their checks, by the
    ``form_plan`` of their names: only text values are escaped (most of them from a memo of
    recent values), then the body is one ``%`` formatting."""
    template, text = plan
    values = list(fields.values())
    memo = _ESCAPED[charset]
    known = memo.get
    codec = charset.codec
    try:
        for i in text:
            value = values[i]
            escaped = known(value)
            values[i] = escaped if escaped is not None else _remember(memo, value, codec)
    except UnicodeEncodeError:
        return encode_form(fields.items(), charset)  # raises, naming every such field
    return (template % tuple(values)).encode("ascii")


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
    return "&".join(parts).encode()


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
    if isinstance(payload, (bytes, bytearray, memoryview)):  # the common case, tested first
        if type(payload) is not bytes:
            payload = bytes(payload)
        size = len(payload)
    elif isinstance(payload, str):
        # A str is already text: only its percent-escapes are bytes in the charset.
        size = len(payload) if payload.isascii() else _utf8_size(payload, None)
    elif isinstance(payload, Mapping):
        return _from_mapping(payload, max_size)
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


def _unquote_plus(value: str, codec: str) -> str:
    """``unquote_plus(value, codec, "strict")``, in C-level calls when the value allows it.

    Percent-escapes are quoted-printable's ``=XX`` with another marker, so ``a2b_qp`` decodes
    them in one call once ``%`` is swapped for ``=``. It is exact only where quoted-printable
    and form encoding agree: ASCII text with no ``=`` of its own and no line break (which
    quoted-printable would read as a soft break), and every escape well formed (each decoded
    escape shortens the text by two; a malformed one, left as is by ``unquote``, does not).
    Anything else takes the standard library's path.
    """
    text = value.replace("+", " ") if "+" in value else value
    if text.isascii() and "=" not in text and "\n" not in text and "\r" not in text:
        raw = a2b_qp(text.replace("%", "="))
        if len(text) - len(raw) == 2 * text.count("%"):
            return raw.decode(codec)  # strict: bytes not of the charset raise, as unquote does
    return unquote_plus(value, encoding=codec, errors="strict")


#: Every field name of every message: a name found here needs no decoding or stripping.
_KNOWN_NAMES = frozenset(f.wire for schema in REGISTRY.values() for f in schema.fields)


def _split(data: bytes | str, codec: str, *, form: bool) -> dict[str, str]:
    # Decoding the whole body first is equivalent to decoding each part (the separators are
    # ASCII in every supported charset) and much cheaper; percent-escapes are then decoded
    # from bytes in the same charset. One pass over the parts: a name that is not a known
    # field, or a repeated one, sends the whole body to the careful path.
    text = data if isinstance(data, str) else data.decode(codec)
    if not form:
        return _split_slowly(_pairs(text), codec, form=form)
    parts = text.split("&")
    out: dict[str, str] = {}
    try:
        if "+" in text:
            for part in parts:
                name, _, value = part.partition("=")
                if "%" in value or "+" in value:
                    value = _unquote_plus(value, codec)
                out[name] = value
        else:  # the usual body: no '+' anywhere, one test per value
            for part in parts:
                name, _, value = part.partition("=")
                if "%" in value:
                    value = _unquote_plus(value, codec)
                out[name] = value
    except UnicodeDecodeError:
        pass  # raised again by the careful path, after any earlier field's own problem
    else:
        # Every name a known field (none to decode or strip, no empty part) and none twice.
        if len(out) == len(parts) and _KNOWN_NAMES.issuperset(out):
            return out
    return _split_slowly(_pairs(text), codec, form=form)


def _pairs(text: str) -> list[tuple[str, str, str]]:
    return [part.partition("=") for part in text.split("&") if part]


def _split_slowly(pairs: list[tuple[str, str, str]], codec: str, *, form: bool) -> dict[str, str]:
    """Field by field: names to decode or strip, and the first duplicate to name."""
    out: dict[str, str] = {}
    for name, _, value in pairs:
        if form:
            if "%" in value or "+" in value:
                value = unquote_plus(value, encoding=codec, errors="strict")
            if "%" in name or "+" in name:
                name = unquote_plus(name, encoding=codec, errors="strict")
        name = name.strip()
        if name in out:
            raise DuplicateFieldError("given more than once", field=name)
        out[name] = value
    return out


def _utf8_size(text: str, field: str | None) -> int:
    """Size of ``text`` in UTF-8; a lone surrogate (e.g. from ``json.loads``) is refused."""
    try:
        return len(text.encode())
    except UnicodeEncodeError as exc:
        char = exc.object[exc.start]
        raise DecodeError(
            f"character U+{ord(char):04X} is a lone surrogate, not text", field=field
        ) from None


def _from_mapping(mapping: Mapping[str, Any], max_size: int) -> dict[str, str]:
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
    size = 0
    for name, value in items:
        if not isinstance(name, str):
            raise DecodeError(f"field name {name!r} is not a str")
        if isinstance(value, (list, tuple)):
            if len(value) != 1:
                raise DuplicateFieldError("given more than once", field=name)
            value = value[0]
        if isinstance(value, bytes):
            try:
                value = value.decode()
            except UnicodeDecodeError:
                raise DecodeError("not valid UTF-8", field=name) from None
        if not isinstance(value, str):
            raise DecodeError(f"not text ({type(value).__name__})", field=name)
        if name in out:
            raise DuplicateFieldError("given more than once", field=name)
        # The same cap as a body: the mapping's fields as they would be sent (name=value&).
        size += len(name) if name.isascii() else _utf8_size(name, name)
        size += 2 + (len(value) if value.isascii() else _utf8_size(value, name))
        if size > max_size:
            raise PayloadTooLargeError(f"payload of over {max_size} bytes")
        out[name] = value
    return out


def has_escapes(schema: Schema, fields: Mapping[str, str]) -> bool:
    """Whether a Chinese-capable field of ``fields`` still holds a percent-escape (then
    ``escaped_readings`` has more than one reading to offer)."""
    get = fields.get
    for name in _escaped_names(schema):  # noqa: SIM110 - a generator costs more, per call
        if "%" in (get(name) or ""):
            return True
    return False


def escaped_readings(schema: Schema, fields: Mapping[str, str]) -> list[dict[str, str]]:
    """The readings of ``fields`` to try in turn when verifying a received payload.

    Chinese-capable fields are signed over their decoded text but may arrive percent-encoded
    (once or twice); the fully decoded reading comes first, the value as received last.
    """
    escaped = [name for name in _escaped_names(schema) if "%" in fields.get(name, "")]
    if not escaped:
        return [fields]  # type: ignore[list-item]  # the callers only read it
    readings = []
    for decode in (_fully_unquote_plus, _fully_unquote):
        reading = dict(fields)
        for name in escaped:
            reading[name] = decode(fields[name])
        if reading not in readings and reading != fields:
            readings.append(reading)
    readings.append(dict(fields))
    return readings


#: What ``quote(text, safe="")`` makes of text that needed escaping: escapes and unreserved
#: ASCII only, at least one escape.
_STRICT_ESCAPE = re.compile(r"[A-Za-z0-9_.~-]*(?:%[0-9A-Fa-f]{2}[A-Za-z0-9_.~-]*)+")


def readable(schema: Schema, reading: dict[str, str]) -> dict[str, str]:
    """The verified ``reading`` with each Chinese-capable field that is still a strict
    percent-encoding of UTF-8 text decoded (the gateway escaped it and signed the escaped
    text, which is how the vendor's demos verify it): a function of the signed text alone."""
    out = reading
    for name in _escaped_names(schema):
        value = reading.get(name, "")
        if "%" not in value or not _STRICT_ESCAPE.fullmatch(value):
            continue  # not escaped as quote() escapes: the text as signed
        try:
            decoded = unquote(value, errors="strict")
        except UnicodeDecodeError:
            continue
        if out is reading:
            out = dict(reading)
        out[name] = decoded
    return out


def _escaped_names(schema: Schema) -> tuple[str, ...]:
    return schema.plan("escaped", lambda s: tuple(f.wire for f in s.fields if f.utf8_escaped))


def _fully_unquote_plus(value: str) -> str:
    return _fully(value, unquote_plus)


def _fully_unquote(value: str) -> str:
    return _fully(value, unquote)


def _fully(value: str, decode: Any) -> str:
    # Bounded: three layers of escaping is more than any real gateway produces. Escapes that
    # are not UTF-8 end the decoding: that reading is what was decoded so far (and the value
    # as received is always tried too), never an exception.
    for _ in range(3):
        if "%" not in value:
            break
        try:
            decoded: str = decode(value, errors="strict")
        except UnicodeDecodeError:
            break
        if decoded == value:
            break
        value = decoded
    return value


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


# Kinds whose Python value is not text: an empty optional field reads as None.
_NONE_WHEN_EMPTY = frozenset({Kind.NUMBER, Kind.PAY_URL, Kind.DATE, Kind.DATETIME, Kind.AMT_ITEM})

#: One field's step of a typed plan: attribute, wire name, whether it may be empty, its value
#: when empty, the registry's check of its text (None: the conversion checks it all) and the
#: conversion of checked text to its Python value (None: the text itself).
_Step = tuple[
    str,
    str,
    bool,
    object,
    Callable[[str, Collection[str]], Problem | None] | None,
    Callable[[str], object] | None,
]


def _converter(field: Field) -> Callable[[str], object] | None:
    """One field's conversion from checked wire text to its Python value, compiled once."""
    wire, kind, enum_type = field.wire, field.kind, field.enum
    if enum_type is not None:
        allowed = ", ".join(field.choices or ())
        members: dict[str, object] = {m.value: m for m in enum_type}

        def member(text: str) -> object:
            found = members.get(text)
            if found is None:
                raise DecodeError(f"{text[:20]!r} is not one of {allowed}", field=wire)
            return found

        return member
    if kind is Kind.NUMBER:
        return int  # the registry's check has proved it canonical ASCII digits
    if kind in _STRUCTURED:
        structured = _STRUCTURED[kind]

        def convert(text: str) -> object:
            return structured(text, field=wire)

        return convert
    return None


def typed_values(
    schema: Schema,
    fields: Mapping[str, str],
    model: type,
    *,
    extra_bank_codes: Collection[str] = (),
) -> dict[str, Any]:
    """Convert the wire fields a model holds into its typed attribute values.

    Every value must obey its field's grammar in the registry (form, length, vocabulary, bank
    code of appendix 9.1 or ``extra_bank_codes``), and amtItem's parts must add up to the
    amount. Raises ``DecodeError`` naming the field and the rule otherwise.
    """
    steps, sums = schema.plan(f"typed:{model.__qualname__}", lambda s: _typed_plan(s, model))
    get = fields.get
    out: dict[str, Any] = {}
    for attr, wire, optional, empty, check, convert in steps:
        text = get(wire) or ""
        if not text:
            if not optional:
                raise DecodeError("missing or empty", field=wire)
            out[attr] = empty
            continue
        if check is not None:
            problem = check(text, extra_bank_codes)
            if problem is not None:
                raise DecodeError(problem.rule, field=wire)
        out[attr] = text if convert is None else convert(text)
    for items_attr, total_attr, wire in sums:
        items, total = out[items_attr], out[total_attr]
        if items is not None and total is not None and items.total not in (total, 0):
            raise DecodeError(
                f"its parts add up to {items.total} fen, not the amount of {total} fen",
                field=wire,
            )
    return out


def _typed_plan(
    schema: Schema, model: type
) -> tuple[tuple[_Step, ...], tuple[tuple[str, str, str], ...]]:
    names = _MODEL_ATTRS[model]
    checks = {wire: check for wire, check, _ in check_plan(schema)}
    steps: list[_Step] = []
    for f in schema.fields:
        if f.attr in names:
            empty: object = None if f.kind in _NONE_WHEN_EMPTY else ""
            # An enum's conversion says which values it allows; every other text is checked
            # by the same compiled rule that validates requests.
            check = None if f.enum is not None else checks[f.wire]
            steps.append((f.attr, f.wire, f.optional, empty, check, _converter(f)))
    sums = tuple(
        (f.attr, schema.by_wire[f.sums_to].attr, f.wire)
        for f in schema.fields
        if f.sums_to is not None and f.attr in names and schema.by_wire[f.sums_to].attr in names
    )
    return tuple(steps), sums


_STRUCTURED: Mapping[Kind, Callable[..., object]] = {
    Kind.DATE: parse_date,
    Kind.DATETIME: parse_datetime,
    Kind.AMT_ITEM: parse_amount_items,
    Kind.PAY_URL: parse_pay_url,
}


# Each model's attributes must be registry attribute names of the messages it represents;
# checked once at import so a renamed field cannot drift silently.
_MODEL_SCHEMAS: Mapping[type, tuple[str, ...]] = {
    Order: ("DirectPayConfirm",),
    PaymentResponse: ("DirectPayConfirmResponse", "WAPDirectPayConfirmResponse"),
    Notification: ("PageNotify", "OfflineNotify"),
    OrderQueryResult: ("OrderQueryResponse",),
    RefundResult: ("OrderRefundResponse",),
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


# -- verified wire strings -> a model, planned once per schema ------------------------------------
#
# ``typed_values`` walks a table of steps for every message; the notification path, the hot
# one, instead runs a function generated once per (schema, model) from the same registry: one
# straight-line block per field that tests the value with the field's rules inlined, converts
# it, and builds the model through ``unchecked`` (every value was just produced by the
# converters below, so the constructor's type checks would prove nothing new). A value the
# inlined test does not accept is handed to the field's compiled check, which names the rule
# broken (the same ``DecodeError``, word for word, as ``typed_values``): the inlined tests only
# decide how fast a good value passes, never what the error says.


def reader(schema: Schema, model: type[M]) -> Callable[[Mapping[str, str], Collection[str]], M]:
    """The function ``read(fields, extra_bank_codes) -> model``, built once per schema.

    It accepts and refuses exactly what ``model(**typed_values(schema, fields, model))``
    does, with the same errors, and returns an equal model.
    """
    return schema.plan(f"reader:{model.__qualname__}", lambda s: _compile_reader(s, model))


def reader_source(schema: Schema, model: type) -> str:
    """The Python source ``reader`` compiles for ``schema`` and ``model`` (for reading)."""
    return _reader_code(schema, model)[0]


def _refuse(check: Callable[[str, Collection[str]], Problem | None], text: str,
            extra_bank_codes: Collection[str], wire: str) -> None:  # fmt: skip
    # The field's own compiled check names the rule; it returns only when the inlined test
    # was stricter than the rule, and the value then goes on to its conversion.
    problem = check(text, extra_bank_codes)
    if problem is not None:
        raise DecodeError(problem.rule, field=wire)


def _not_member(text: str, allowed: str, wire: str) -> None:
    raise DecodeError(f"{text[:20]!r} is not one of {allowed}", field=wire)


#: Parsed dates of recent values: a day's notifications carry one or two accounting and
#: order dates. Small on purpose: a benchmark cycling through distinct notifications is not
#: to find its own dates here on the next pass.
_DATES: dict[str, dt.date] = {}
_CACHE_MAX = 64


def _read_date(text: str) -> dt.date | None:
    """A ``YYYYMMDD`` date, or None when ``text`` is not one (its check then says why)."""
    if len(text) != 8 or not text.isdigit() or not text.isascii():
        return None
    n = int(text)  # ASCII digits: one int, then arithmetic, beats three slices and ints
    try:
        value = dt.date(n // 10000, n // 100 % 100, n % 100)
    except ValueError:
        return None
    if len(_DATES) >= _CACHE_MAX:
        _DATES.clear()
    _DATES[text] = value
    return value


def _read_datetime(text: str) -> dt.datetime | None:
    """A ``YYYYMMDDHHmmSS`` China time, or None when ``text`` is not one."""
    if len(text) != 14 or not text.isdigit() or not text.isascii():
        return None
    n = int(text)
    try:
        # tzinfo by position: keyword arguments cost datetime() a third of its time.
        return dt.datetime(
            n // 10000000000, n // 100000000 % 100, n // 1000000 % 100,
            n // 10000 % 100, n // 100 % 100, n % 100, 0, CHINA_TZ,
        )  # fmt: skip
    except ValueError:
        return None


def _reader_code(schema: Schema, model: type) -> tuple[str, dict[str, Any]]:
    """The source of the reader of ``schema`` as ``model`` and the names it refers to."""
    names = _MODEL_ATTRS[model]
    checks = {wire: check for wire, check, _ in check_plan(schema)}
    ns: dict[str, Any] = {
        "DecodeError": DecodeError,
        "_refuse": _refuse,
        "_not_member": _not_member,
        "_DATES": _DATES,
        "_read_date": _read_date,
        "_read_datetime": _read_datetime,
        "_BANK_CODES": BANK_CODES,
        "_AMT_ITEM": _CANONICAL_AMT_ITEM.fullmatch,
        "_amount_items": unchecked(AmountItems),
        "_NO_EXTRA": _NO_EXTRA,
        "parse_datetime": parse_datetime,
        "parse_date": parse_date,
        "parse_amount_items": parse_amount_items,
        "parse_pay_url": parse_pay_url,
        "_make": unchecked(model),
    }
    lines = [f"def read_{schema.name}(fields, extra_bank_codes):"]
    variables: dict[str, str] = {}
    for i, f in enumerate(f for f in schema.fields if f.attr in names):
        var, wire = f"v{i}", repr(f.wire)
        variables[f.attr] = var
        ns[f"check{i}"] = checks[f.wire]
        refuse = f"_refuse(check{i}, text, extra_bank_codes, {wire})"
        # A subscript, not .get(): far cheaper, and free of cost when the field is there.
        lines += [
            f"    # {f.wire}: {f.kind.value}",
            "    try:",
            f"        text = fields[{wire}]",
            "    except KeyError:",
            "        text = ''",
            "    if text:",
        ]
        body = _field_code(f, i, ns, refuse)
        lines += [f"        {line}" for line in body]
        lines.append("    else:")
        if f.optional:
            lines.append(f"        {var} = {'None' if f.kind in _NONE_WHEN_EMPTY else repr('')}")
        else:
            lines.append(f"        raise DecodeError('missing or empty', field={wire})")
    for f in schema.fields:
        if f.sums_to is not None and f.attr in names and schema.by_wire[f.sums_to].attr in names:
            items, total = variables[f.attr], variables[schema.by_wire[f.sums_to].attr]
            # total{i}: the sum of the parts, set beside v{i} by the AMT_ITEM block.
            parts = "total" + items[1:]
            lines += [
                f"    # {f.wire}: its parts add up to {f.sums_to}, or are all 0",
                f"    if {items} is not None and {total} is not None:",
                f"        parts = {parts}",
                f"        if parts != {total} and parts != 0:",
                "            raise DecodeError(",
                f"                f'its parts add up to {{parts}} fen, not the amount of "
                f"{{{total}}} fen', field={f.wire!r})",
            ]
    missing = [a.name for a in attrs.fields(model) if a.name not in variables]
    if missing:
        raise RuntimeError(f"{model.__name__}: no field of {schema.name} for {missing}")
    args = ", ".join(variables[a.name] for a in attrs.fields(model))
    lines.append(f"    return _make({args})")
    return "\n".join(lines) + "\n", ns


#: A pattern that only excludes one character (orderId's ``[^*]+``).


#: amtItem of a payment all in cash: ``CNY_AMT=`` and ``#CMY_AMT=0#...#POT_CHG_AMT=0``.
_CASH_ONLY = (
    f"{next(iter(AMT_ITEM_PARTS))}=",
    "".join(f"#{key}=0" for key in list(AMT_ITEM_PARTS)[1:]),
)


def _field_code(f: Field, i: int, ns: dict[str, Any], refuse: str) -> list[str]:
    """The lines that test and convert one non-empty field value ``text`` into ``v{i}``."""
    var = f"v{i}"
    if f.enum is not None:  # typed_values checks an enum by its members alone
        ns[f"members{i}"] = {m.value: m for m in f.enum}
        allowed = ", ".join(f.choices or ())
        return [
            f"{var} = members{i}.get(text)",
            f"if {var} is None:",
            f"    _not_member(text, {allowed!r}, {f.wire!r})",
        ]
    tests = inline_tests(f, "text", ns, i)
    kind = f.kind
    if kind is Kind.NUMBER:
        tests.append("text.isdigit() and text.isascii() and (text[0] != '0' or len(text) == 1)")
        if f.min_value is not None:
            tests.append(f"int(text) >= {f.min_value}")
        return [f"if not ({' and '.join(tests)}):", f"    {refuse}", f"{var} = int(text)"]
    if kind is Kind.BANK:
        tests.append("(text in _BANK_CODES or text in extra_bank_codes)")
    if kind in (Kind.TEXT, Kind.BANK):
        lines = [f"if not ({' and '.join(tests)}):", f"    {refuse}"] if tests else []
        return [*lines, f"{var} = text"]
    if kind is Kind.DATE:
        guard = " and ".join(tests)
        return [
            f"{var} = _DATES.get(text)",
            f"if {var} is None{' or not (' + guard + ')' if guard else ''}:",
            f"    {var} = _read_date(text) if {guard or 'True'} else None",
            f"    if {var} is None:",
            f"        {refuse}",
            f"        {var} = parse_date(text, field={f.wire!r})",
        ]
    if kind is Kind.DATETIME:
        guard = " and ".join(tests) or "True"
        return [
            f"{var} = _read_datetime(text) if {guard} else None",
            f"if {var} is None:",
            f"    {refuse}",
            f"    {var} = parse_datetime(text, field={f.wire!r})",
        ]
    if kind is Kind.AMT_ITEM:
        guard = " and ".join(tests) or "True"
        head, tail = _CASH_ONLY
        return [
            # The usual payment, all in cash: the one form with the other parts 0, read
            # without the regular expression (the same canonical-decimal rule for the cash).
            f"if ({guard} and text.startswith({head!r}) and text.endswith({tail!r})",
            f"        and (cash := text[{len(head)}:{-len(tail)}]).isdigit() and cash.isascii()",
            "        and (cash[0] != '0' or len(cash) == 1)):",
            "    cash = int(cash)",
            f"    {var} = _amount_items(cash, 0, 0, 0, 0, _NO_EXTRA)",
            f"    total{i} = cash",
            f"elif (parts := _AMT_ITEM(text) if {guard} else None) is not None:",
            "    cash, card, coupon, voucher, points = map(int, parts.groups())",
            f"    {var} = _amount_items(cash, card, coupon, voucher, points, _NO_EXTRA)",
            f"    total{i} = cash + card + coupon + voucher + points",
            "else:",
            f"    {refuse}",
            f"    {var} = parse_amount_items(text, field={f.wire!r})",
            f"    total{i} = {var}.total",
        ]
    # URL, IPV4, PAY_URL, CERT, SIGNATURE: no inlined test; the compiled check decides.
    convert = _converter(f)
    lines = [refuse]
    if convert is None:
        return [*lines, f"{var} = text"]
    ns[f"convert{i}"] = convert
    return [*lines, f"{var} = convert{i}(text)"]


def _compile_reader(schema: Schema, model: type) -> Callable[..., Any]:
    source, namespace = _reader_code(schema, model)
    exec(compile(source, f"<reader {schema.name} {model.__qualname__}>", "exec"), namespace)  # noqa: S102
    return namespace[f"read_{schema.name}"]  # type: ignore[no-any-return]
