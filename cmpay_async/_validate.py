"""Check wire fields against the registry's rules, reporting every problem at once.

The client runs this before any I/O; the sandbox gateway runs the same checks on what it
receives, so both sides agree on what a valid request is. Each schema's rules are compiled
once into one small check per field (``check_plan``), so validating an order is a single pass.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from ._appendix import BANK_CODES
from ._exceptions import Problem
from ._schema import Field, Kind, Schema

__all__ = ["check_fields", "check_plan", "date_problem", "inline_tests"]

Check = Callable[[str, Collection[str]], "Problem | None"]

_URL = re.compile(r"https?://(?:[^\s/?#@]*@)?[^\s/?#:@]+(?::\d*)?(?:[/?#]\S*)?", re.IGNORECASE)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


@functools.lru_cache(maxsize=4096)
def date_problem(text: str) -> str | None:
    """Why ``text`` is not a ``YYYYMMDD`` date, or None; cached, as few dates recur."""
    if len(text) != 8 or not text.isascii() or not text.isdigit():
        return "not a date of the form YYYYMMDD"
    try:
        dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return "not a valid calendar date"
    return None


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
    get = fields.get
    problems = []
    for wire, check, signed in check_plan(schema):
        if signed_only and not signed:
            continue
        problem = check(get(wire) or "", extra_bank_codes)
        if problem is not None:
            problems.append(problem)
    return problems


def check_plan(schema: Schema) -> tuple[tuple[str, Check, bool], ...]:
    """Each field's wire name, compiled check and whether it is signed; built once."""
    return schema.plan("checks", lambda s: tuple((f.wire, _compile(f), f.signed) for f in s.fields))


def _compile(field: Field) -> Check:
    """One field's rules as a function of its value; problems are built once, here."""
    wire, optional, max_length = field.wire, field.optional, field.max_length
    required = Problem(wire, "required", "required")
    too_long = Problem(wire, f"longer than {max_length} characters", "max_length")
    choices = frozenset(field.choices) if field.choices is not None else None
    not_choice = Problem(wire, f"must be one of {', '.join(field.choices or ())}", "choices")
    form = re.compile(field.pattern) if field.pattern is not None else None
    not_form = Problem(wire, field.pattern_rule or f"must match {field.pattern}", "pattern")
    rule = _kind_rule(field)

    def check(value: str, extra_bank_codes: Collection[str]) -> Problem | None:
        if not value:
            return None if optional else required
        if max_length is not None and len(value) > max_length:
            return too_long
        if choices is not None and value not in choices:
            return not_choice
        if form is not None and form.fullmatch(value) is None:
            return not_form
        return None if rule is None else rule(value, extra_bank_codes)

    if field.kind is Kind.BANK:  # its verdict depends on extra_bank_codes: never memoised
        return check
    # Most values repeat from order to order (merchant id, URLs, codes, dates): remember the
    # verdict of the first _MEMO distinct values of each field. Bounded, so values chosen by
    # a peer (the sandbox checks what it receives) cannot grow it.
    memo: dict[str, Problem | None] = {}

    def memoised(value: str, extra_bank_codes: Collection[str]) -> Problem | None:
        verdict = memo.get(value, _UNKNOWN)
        if verdict is _UNKNOWN:
            verdict = check(value, extra_bank_codes)
            if len(memo) < _MEMO:
                memo[value] = verdict
        return verdict  # type: ignore[return-value]

    return memoised


_MEMO = 256
_UNKNOWN = object()


#: A pattern that only excludes one character ("[^*]+"): inlined as a membership test.
_EXCLUDING = re.compile(r"\[\^\\?([^\]\\])\]\+")


def inline_tests(field: Field, var: str, ns: dict[str, Any], i: int) -> list[str]:
    """Python expressions, all true of a non-empty ``var`` exactly when it keeps ``field``'s
    length, vocabulary and pattern: the generated readers and converters inline them (and
    leave everything else to the compiled check). Names they need go into ``ns``."""
    tests = []
    if field.max_length is not None:
        tests.append(f"len({var}) <= {field.max_length}")
    if field.choices is not None:
        ns[f"choices{i}"] = frozenset(field.choices)
        tests.append(f"{var} in choices{i}")
    if field.pattern is not None:
        excluded = _EXCLUDING.fullmatch(field.pattern)
        if excluded is not None:  # "[^x]+": the text is not empty, so x not in it is the rule
            tests.append(f"{excluded.group(1)!r} not in {var}")
        else:
            ns[f"pattern{i}"] = re.compile(field.pattern).fullmatch
            tests.append(f"pattern{i}({var}) is not None")
    return tests


def _kind_rule(field: Field) -> Check | None:
    wire, kind = field.wire, field.kind
    if kind is Kind.NUMBER:
        digits = Problem(wire, "must be digits", "digits")
        leading_zero = Problem(wire, "must not start with 0 (a canonical decimal)", "digits")
        minimum = field.min_value
        too_small = Problem(wire, f"must be at least {minimum}", "min_value")

        def number(value: str, _: Collection[str]) -> Problem | None:
            if not (value.isascii() and value.isdigit()):
                # "-5" breaks the minimum, which says more than "must be digits".
                negative = value[:1] == "-" and value[1:].isascii() and value[1:].isdigit()
                return too_small if negative and minimum is not None else digits
            if value[0] == "0" and len(value) > 1:
                # One number, one spelling: "0100" beside "100" would let a digit move across
                # a field boundary of a signed string and still parse (docs/guarantees.md).
                return leading_zero
            return too_small if minimum is not None and int(value) < minimum else None

        return number
    if kind is Kind.DATE:

        def date(value: str, _: Collection[str]) -> Problem | None:
            why = date_problem(value)
            return None if why is None else Problem(wire, why, "date")

        return date
    if kind in (Kind.URL, Kind.IPV4):
        pattern, problem = (
            (_URL, Problem(wire, "must be an http(s) URL", "url"))
            if kind is Kind.URL
            else (_IPV4, Problem(wire, "must be an IPv4 address", "ipv4"))
        )

        def matches(value: str, _: Collection[str]) -> Problem | None:
            return None if pattern.fullmatch(value) else problem

        return matches
    if kind is Kind.BANK:

        def bank(value: str, extra_bank_codes: Collection[str]) -> Problem | None:
            if value in BANK_CODES or value in extra_bank_codes:
                return None
            return Problem(
                wire,
                f"unknown bank code {value!r} (appendix 9.1); pass extra_bank_codes to allow it",
                "bank",
            )

        return bank
    return None
