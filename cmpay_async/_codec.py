"""Bytes <-> wire fields: the form body in its declared charset. Pure: no I/O, no clock.

- Requests are ``application/x-www-form-urlencoded`` in the charset ``characterSet`` names.
- Answers are ``k=v&k=v`` text split on ``&`` then on the first ``=``; only the fields that may
  hold Chinese arrive percent-encoded (PROTOCOL.md section 4).
- Notifications are real form posts; after the form decode a Chinese field may still be
  percent-encoded (``_verify.escaped_readings`` offers both readings to the verifier).

What the fields mean is not known here: typed values are ``_values``, whole models
``_binding``, signatures ``_verify``.
"""

from __future__ import annotations

import re
from binascii import a2b_qp
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from ._enums import CharacterSet
from ._exceptions import (
    DecodeError,
    DuplicateFieldError,
    EncodingError,
    PayloadTooLargeError,
    Problem,
)
from ._schema import REGISTRY, Field, Kind, Schema

__all__ = [
    "MAX_PAYLOAD",
    "Payload",
    "content_type",
    "decode_payload",
    "encode_answer",
    "encode_fields",
    "encode_form",
    "form_plan",
]

#: Largest answer or notification body accepted, in bytes.
MAX_PAYLOAD = 64 * 1024

Payload = bytes | bytearray | memoryview | str | Mapping[str, Any]

# -- wire strings -> bytes ---------------------------------------------------------------------


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
    reason = ""
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
    parts = text.split("&")
    if not form:  # an answer: values stay as sent
        raw: dict[str, str] = {}
        for part in parts:
            name, _, value = part.partition("=")
            raw[name] = value
        if len(raw) == len(parts) and _KNOWN_NAMES.issuperset(raw):
            return raw
        return _split_slowly(_pairs(text), codec, form=form)
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
    lists: Callable[[], Iterable[tuple[Any, list[Any]]]] | None
    lists = getattr(mapping, "lists", None)  # Django QueryDict
    multi: Callable[[], Iterable[tuple[Any, Any]]] | None
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
