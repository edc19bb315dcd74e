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

__all__ = ["MASK", "redact", "redact_untrusted", "sensitive_names"]

#: What a blanked value reads as.
MASK = "[redacted]"

#: Names that are not registry fields but hold the key in configs and dumps.
_KEY_NAMES = ("signKey", "sign_key", "privateKey", "private_key")


@functools.cache
def sensitive_names() -> frozenset[str]:
    """Wire names whose values never appear in clear: personal data, signatures, keys."""
    names: set[str] = set(_KEY_NAMES)
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


# Shapes of secrets and personal data recognised by their value, whatever they are named:
# a URL's password, a ``...key=``/``password:``/``secret=``/``token=`` pair, a mainland mobile
# number (with or without +86/0086, grouped 3-4-4 or not) and any run of 12 digits or more
# (card and account numbers). A value already blanked is left alone. Each name and scheme is
# tried only where its run of name characters starts: tried inside the run as well, a long
# run would cost time quadratic in its length (64 KiB of "a-a-a..." took minutes).
_VALUES = re.compile(
    r"""
    (?P<url>(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?\#@:]*:)[^\s/?\#@]*(?=@)
    | (?P<pair>(?<![A-Za-z0-9_\-])[A-Za-z0-9_\-]*(?:key|password|passwd|pwd|secret|token)["']?
        (?:\s*[:=]\s*|%3D))(?!"?\[redacted\])(?P<value>"[^"]*"|'[^']*'|(?:(?!%26)[^\s&,;"'<>{}()\[\]])+)
    | (?<![\d+])(?:(?:\+|00)86[\s\-]?)?1[3-9]\d(?:[\s\-]?\d{4}){2}(?!\d)
    | (?<!\d)\d{12,}(?!\d)
    """,
    re.IGNORECASE | re.VERBOSE,
)


def _mask_value(match: re.Match[str]) -> str:
    if match.group("url") is not None:
        return match.group("url") + "***"
    pair = match.group("pair")
    if pair is not None:
        quote = match.group("value")[0]
        return pair + (f"{quote}{MASK}{quote}" if quote in "\"'" else MASK)
    return MASK


def redact_untrusted(text: str) -> str:
    """``redact`` and, in text nobody vouches for, secrets and personal data by their value.

    For excerpts of answers that did not verify and other free text from outside: it also
    blanks what matches no field name (a phone number, ``key=...``, a card number).
    """
    if not text:
        return text
    return _VALUES.sub(_mask_value, redact(text))
