"""Which reading of received wire fields their signature covers. Pure: no I/O, no clock.

A Chinese-capable field is signed over its decoded text but may arrive percent-encoded (once
or twice): each reading is tried in turn, the verified one returned. The step between the
fields (``_codec``) and the typed result (``_binding``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, unquote_plus

from ._exceptions import SignatureError, SignTypeMismatchError
from ._schema import Schema
from ._signing import Verifier, source_of

__all__ = ["escaped_readings", "has_escapes", "readable", "verify_fields"]


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


def verify_fields(schema: Schema, fields: Mapping[str, str], verifier: Verifier) -> dict[str, str]:
    """Verify received wire fields and return the reading the signature covers.

    The payload's ``signType`` must be the verifier's own: an MD5 payload is never accepted by
    an RSA verifier, nor the reverse. A certificate carried in the payload is never used.
    """
    sign_type = fields.get("signType", "")
    if sign_type != verifier.sign_type:  # a str enum: equal to its value
        raise SignTypeMismatchError(
            f"is {sign_type[:10]!r} but the configured verifier checks {verifier.sign_type.value}",
            field="signType",
        )
    wire = schema.signature_field.wire
    signature = fields.get(wire)
    if not signature:
        raise SignatureError("missing", field=wire)
    if not has_escapes(schema, fields):
        # The common case: one reading, the text as received, and nothing left to decode.
        try:
            verifier.verify(source_of(schema, fields), signature)
        except SignatureError:
            raise SignatureError("signature does not match", field=wire) from None
        return fields  # type: ignore[return-value]  # the callers only read it
    for reading in escaped_readings(schema, fields):
        try:
            verifier.verify(source_of(schema, reading), signature)
        except SignatureError:
            continue
        return readable(schema, reading)
    raise SignatureError("signature does not match", field=schema.signature_field.wire)
