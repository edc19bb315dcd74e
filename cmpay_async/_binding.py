"""A message's wire fields <-> a model's attributes, driven by the registry. Pure.

``wire_fields`` writes typed values keyed by attribute as wire strings keyed by wire name;
``typed_values`` and ``reader`` read verified wire strings back into a model's values, every
field checked against its grammar in the registry on the way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import attrs

from ._appendix import BANK_CODES
from ._exceptions import DecodeError, Problem
from ._models import (
    _NO_EXTRA,
    CHINA_TZ,
    AmountItems,
    M,
    Notification,
    Order,
    OrderQueryResult,
    PaymentResponse,
    RefundResult,
    unchecked,
)
from ._schema import AMT_ITEM_PARTS, REGISTRY, Field, Kind, Schema
from ._validate import check_plan, inline_tests
from ._values import (
    _CANONICAL_AMT_ITEM,
    parse_amount_items,
    parse_date,
    parse_datetime,
    parse_pay_url,
    wire_value,
)

__all__ = ["reader", "reader_source", "typed_values", "values_reader", "wire_fields", "wire_plan"]

# -- typed values -> wire strings -----------------------------------------------------------------


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


# -- verified wire strings -> typed values ----------------------------------------------------


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


def values_reader(schema: Schema, model: type[M]) -> Callable[[Sequence[str], Collection[str]], M]:
    """``reader`` taking the text of every field of ``schema`` in its order (``""`` for one
    absent) instead of a mapping: for a decoder that found the fields in that order."""
    return schema.plan(
        f"values-reader:{model.__qualname__}", lambda s: _compile_reader(s, model, by_position=True)
    )


def reader_source(schema: Schema, model: type, *, by_position: bool = False) -> str:
    """The Python source ``reader`` (or ``values_reader``) compiles for ``schema`` and
    ``model`` (for reading)."""
    return _reader_code(schema, model, by_position)[0]


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


def _reader_code(schema: Schema, model: type, by_position: bool) -> tuple[str, dict[str, Any]]:
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
        "_make": unchecked(model),
    }
    if by_position:
        # One unpacking: the sequence holds every field of the schema, in its order.
        lines = [
            f"def read_{schema.name}(values, extra_bank_codes):",
            "    " + "".join(f"t{j}, " for j in range(len(schema.fields))) + "= values",
        ]
    else:
        lines = [f"def read_{schema.name}(fields, extra_bank_codes):"]
    variables: dict[str, str] = {}
    for i, f in enumerate(f for f in schema.fields if f.attr in names):
        var, wire = f"v{i}", repr(f.wire)
        variables[f.attr] = var
        ns[f"check{i}"] = checks[f.wire]
        refuse = f"_refuse(check{i}, text, extra_bank_codes, {wire})"
        lines += _fetch_code(schema, f, by_position)
        body = _field_code(f, i, ns, refuse)
        lines += [f"        {line}" for line in body]
        lines.append("    else:")
        if f.optional:
            lines.append(f"        {var} = {'None' if f.kind in _NONE_WHEN_EMPTY else repr('')}")
        else:
            lines.append(f"        raise DecodeError('missing or empty', field={wire})")
    lines += _sum_checks(schema, names, variables)
    missing = [a.name for a in attrs.fields(model) if a.name not in variables]
    if missing:
        raise RuntimeError(f"{model.__name__}: no field of {schema.name} for {missing}")
    args = ", ".join(variables[a.name] for a in attrs.fields(model))
    lines.append(f"    return _make({args})")
    return "\n".join(lines) + "\n", ns


def _fetch_code(schema: Schema, f: Field, by_position: bool) -> list[str]:
    """The reader's lines that put the text of ``f`` in ``text`` and test it is not empty."""
    if by_position:
        fetch = [f"    text = t{schema.fields.index(f)}"]
    else:
        # A subscript, not .get(): far cheaper, and free of cost when the field is there.
        fetch = ["    try:", f"        text = fields[{f.wire!r}]", "    except KeyError:",
                 "        text = ''"]  # fmt: skip
    return [f"    # {f.wire}: {f.kind.value}", *fetch, "    if text:"]


def _sum_checks(schema: Schema, names: frozenset[str], variables: dict[str, str]) -> list[str]:
    """The reader's lines that check each amtItem against the amount its parts add up to."""
    lines: list[str] = []
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
    return lines


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
        return _amt_item_code(f, i, " and ".join(tests) or "True", refuse)
    # URL, IPV4, PAY_URL, CERT, SIGNATURE: no inlined test; the compiled check decides.
    convert = _converter(f)
    lines = [refuse]
    if convert is None:
        return [*lines, f"{var} = text"]
    ns[f"convert{i}"] = convert
    return [*lines, f"{var} = convert{i}(text)"]


def _amt_item_code(f: Field, i: int, guard: str, refuse: str) -> list[str]:
    """The lines that read an amtItem ``text`` that passed ``guard`` into ``v{i}`` and
    ``total{i}`` (the sum of its parts)."""
    var = f"v{i}"
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


def _compile_reader(schema: Schema, model: type, by_position: bool = False) -> Callable[..., Any]:
    source, namespace = _reader_code(schema, model, by_position)
    exec(compile(source, f"<reader {schema.name} {model.__qualname__}>", "exec"), namespace)  # noqa: S102
    return namespace[f"read_{schema.name}"]  # type: ignore[no-any-return]
