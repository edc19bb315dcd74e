"""Check wire fields against the registry's rules, reporting every problem at once.

The client runs this before any I/O; the sandbox gateway runs the same checks on what it
receives, so both sides agree on what a valid request is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from urllib.parse import urlsplit

from ._appendix import BANK_CODES
from ._codec import parse_date
from ._exceptions import DecodeError, Problem
from ._schema import Field, Kind, Schema

__all__ = ["check_fields"]


def check_fields(
    schema: Schema,
    fields: Mapping[str, str],
    *,
    extra_bank_codes: Collection[str] = (),
    signed_only: bool = True,
) -> list[Problem]:
    """Return every rule the wire ``fields`` of ``schema`` break, in schema order.

    ``signed_only`` skips the certificate and signature fields (not yet present before
    signing). ``extra_bank_codes`` admits bank codes newer than appendix 9.1.
    """
    problems: list[Problem] = []
    for field in schema.fields:
        if signed_only and not field.signed:
            continue
        problem = _check(field, fields.get(field.wire, ""), extra_bank_codes)
        if problem is not None:
            problems.append(problem)
    return problems


def _check(field: Field, value: str, extra_bank_codes: Collection[str]) -> Problem | None:
    wire = field.wire
    if not value:
        return None if field.optional else Problem(wire, "required", "required")
    if field.max_length is not None and len(value) > field.max_length:
        return Problem(wire, f"longer than {field.max_length} characters", "max_length")
    if field.choices is not None and value not in field.choices:
        allowed = ", ".join(field.choices)
        return Problem(wire, f"must be one of {allowed}", "choices")
    kind = field.kind
    if kind is Kind.NUMBER:
        if not (value.isascii() and value.isdigit()):
            return Problem(wire, "must be digits", "digits")
        if field.min_value is not None and int(value) < field.min_value:
            return Problem(wire, f"must be at least {field.min_value}", "min_value")
    elif kind is Kind.DATE:
        try:
            parse_date(value, field=wire)
        except DecodeError as exc:
            return Problem(wire, str(exc).partition(": ")[2], "date")
    elif kind is Kind.URL:
        if not _is_http_url(value):
            return Problem(wire, "must be an http(s) URL", "url")
    elif kind is Kind.IPV4:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            return Problem(wire, "must be an IPv4 address", "ipv4")
    elif kind is Kind.BANK and value not in BANK_CODES and value not in extra_bank_codes:
        return Problem(
            wire,
            f"unknown bank code {value!r} (appendix 9.1); pass extra_bank_codes to allow it",
            "bank",
        )
    return None


def _is_http_url(value: str) -> bool:
    if any(c.isspace() for c in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
