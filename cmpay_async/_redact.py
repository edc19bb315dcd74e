"""Redaction: the one place that blanks secrets and personal data in text the library shows.

Every excerpt of a payload that goes into an exception message or a log line passes through
``redact``. The names come from the registry (fields marked ``sensitive``, the signature and
the certificates) plus the merchant's key under the names people give it; the shapes are a
form or query string (``hmac=...``), the same percent-encoded once (``hmac%3D...``, as in a
URL inside a URL), JSON (``"hmac": "..."``) and an HTML form field
(``name="hmac" value="..."``).
"""

from __future__ import annotations

import functools
import re

from ._schema import REGISTRY, Kind

__all__ = ["MASK", "redact", "sensitive_names"]

#: What a blanked value reads as.
MASK = "[redacted]"

#: Names that are not registry fields but hold the key in configs and dumps.
_KEY_NAMES = ("signKey", "sign_key", "privateKey", "private_key")


@functools.cache
def sensitive_names() -> frozenset[str]:
    """Wire names whose values never appear in clear: personal data, signatures, keys."""
    names = set(_KEY_NAMES)
    for schema in REGISTRY.values():
        for field in schema.fields:
            if field.sensitive or field.kind in (Kind.SIGNATURE, Kind.CERT):
                names.update((field.wire, field.attr))
    return frozenset(names)


@functools.cache
def _pattern() -> re.Pattern[str]:
    names = "|".join(sorted((re.escape(n) for n in sensitive_names()), key=len, reverse=True))
    edge = r"(?<![A-Za-z0-9_])"
    shapes = [
        # JSON: "name": "value" (escaped quotes inside), or a bare number/literal.
        rf'(?P<j>{edge}"(?:{names})"\s*:\s*)(?:"(?:[^"\\]|\\.)*"|[^\s,}}\]]+)',
        # HTML form field: name="hmac" value="..."
        rf'(?P<h>{edge}name=["\'](?:{names})["\']\s+value=)(?:"[^"]*"|\'[^\']*\')',
        # Percent-encoded once: name%3Dvalue up to %26 or a delimiter.
        rf"(?P<p>(?:{edge}|(?<=%26)|(?<=%3F))(?:{names})%3D)(?:(?!%26)[^&\s\"'<>])*",
        # Form or query string: name=value up to & or a delimiter.
        rf"(?P<f>{edge}(?:{names})=)[^&\s\"'<>]*",
    ]
    return re.compile("|".join(shapes), re.IGNORECASE)


def _mask(match: re.Match[str]) -> str:
    quoted = match.group("j") or match.group("h")
    if quoted is not None:
        return f'{quoted}"{MASK}"'
    return (match.group("p") or match.group("f")) + MASK


def redact(text: str) -> str:
    """``text`` with the value of every sensitive field blanked, in any of the shapes above."""
    if not text:
        return text
    return _pattern().sub(_mask, text)
