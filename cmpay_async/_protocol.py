"""Build signed requests and read signed answers: pure functions over the registry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping
from typing import Any

import attrs

from ._appendix import BANK_CODES, CONTEXT_HINTS, SUCCESS_CODES, explain_return_code
from ._binding import reader, typed_values, wire_plan
from ._codec import content_type, decode_payload, encode_fields, form_plan
from ._enums import CharacterSet, SignType
from ._exceptions import (
    DecodeError,
    EncodingError,
    GatewayError,
    Problem,
    SignatureError,
    UnexpectedMessageError,
    ValidationError,
)
from ._models import ORDER_NOT_FOUND, Order, OrderQueryResult, PaymentResponse, RefundResult
from ._redact import redact_untrusted
from ._schema import Field, Kind, Schema, schema_for
from ._signing import Signer, Verifier, source_of
from ._validate import Check, check_plan, inline_tests
from ._values import wire_value
from ._verify import escaped_readings, verify_fields

__all__ = [
    "PreparedRequest",
    "build_order_request",
    "build_payment_request",
    "gateway_error",
    "parse_order_query_response",
    "parse_payment_response",
    "parse_refund_response",
    "read_answer",
    "verify_fields",
]


@attrs.frozen(kw_only=True)
class PreparedRequest:
    """A validated, signed request, ready to post."""

    message: str
    request_id: str
    order_id: str
    content_type: str
    #: The form body; holds the hmac, so it is kept out of repr.
    body: bytes = attrs.field(repr=False)
    #: Every wire field including ``hmac``; kept out of repr for the same reason.
    fields: Mapping[str, str] = attrs.field(repr=False)


_ORDER_ATTRS = tuple(a.name for a in attrs.fields(Order))


def _convert_and_check(
    schema: Schema, values: Mapping[str, object], extra_bank_codes: Collection[str]
) -> tuple[dict[str, str], list[Problem]]:
    """``wire_fields`` and ``check_fields`` in one pass: the order path is hot."""
    plan = schema.plan("convert_and_check", _convert_and_check_plan)
    fields: dict[str, str] = {}
    problems: list[Problem] = []
    get = values.get
    for field, fixed, check, number in plan:
        value = get(field.attr)
        if number and type(value) is str:
            # Money and counts are ints in the API: "1250" is a caller's mistake, not fen.
            problems.append(Problem(field.wire, "must be an int, not str", "type"))
            fields[field.wire] = ""
            continue
        if type(value) is not str:
            if value is None:
                value = fixed
            else:
                converted = wire_value(field, value)
                if isinstance(converted, Problem):  # a type problem: no further rule applies
                    problems.append(converted)
                    fields[field.wire] = ""
                    continue
                value = converted
        fields[field.wire] = value
        if check is not None:
            problem = check(value, extra_bank_codes)
            if problem is not None:
                problems.append(problem)
    return fields, problems


def _convert_and_check_plan(
    schema: Schema,
) -> tuple[tuple[Field, str, Check | None, bool], ...]:
    checks = {wire: check for wire, check, signed in check_plan(schema) if signed}
    return tuple(
        (field, fixed or "", checks.get(field.wire), field.kind is Kind.NUMBER)
        for field, fixed in wire_plan(schema)
    )


# -- the order path, planned once per schema --------------------------------------------------
#
# ``_convert_and_check`` walks the plan above for every request; ``_converter`` compiles the
# same plan into one straight-line function per schema (generated from the registry, as
# ``_binding.reader`` is for notifications). Each field's block takes the common case in a few
# operations (a str for a text field, an int for a number, the field's own enum member, a
# date, None for a field with one allowed value), with the field's rules inlined; any other
# value, and any value the inlined rules do not accept, goes through the plan's own step, so
# the fields and problems are always those of ``_convert_and_check``.


def _slow_step(
    field: Field,
    fixed: str,
    check: Check | None,
    number: bool,
    value: object,
    extra_bank_codes: Collection[str],
    problems: list[Problem],
) -> str:
    """One field of ``_convert_and_check``: its wire text, its problems appended."""
    if number and type(value) is str:
        problems.append(Problem(field.wire, "must be an int, not str", "type"))
        return ""
    if type(value) is not str:
        if value is None:
            value = fixed
        else:
            converted = wire_value(field, value)
            if isinstance(converted, Problem):
                problems.append(converted)
                return ""
            value = converted
    if check is not None:
        problem = check(value, extra_bank_codes)
        if problem is not None:
            problems.append(problem)
    return value


def _check_into(
    check: Check, text: str, extra_bank_codes: Collection[str], problems: list[Problem]
) -> None:
    problem = check(text, extra_bank_codes)
    if problem is not None:
        problems.append(problem)


def _check_and_keep(
    check: Check,
    good: set[str],
    text: str,
    extra_bank_codes: Collection[str],
    problems: list[Problem],
) -> None:
    problem = check(text, extra_bank_codes)
    if problem is not None:
        problems.append(problem)
    elif len(good) < 256:  # bounded: texts from callers are not all repeats
        good.add(text)


#: Wire text of recent dates (an order's date is mostly today's). Bounded.
_DATE_TEXT: dict[dt.date, str] = {}


def _date_text(value: dt.date) -> str:
    text = _DATE_TEXT.get(value)
    if text is None:
        if len(_DATE_TEXT) >= 1024:
            _DATE_TEXT.clear()
        text = _DATE_TEXT[value] = value.isoformat().replace("-", "")
    return text


_Checked = tuple[dict[str, str], list[Problem]]
_Converter = Callable[[Callable[[str], object], Collection[str]], _Checked]


def _converter(schema: Schema) -> _Converter:
    """``_convert_and_check`` of ``schema`` as one generated function, built once."""
    return schema.plan("converter", _compile_converter)


#: The values ``build_payment_request`` gives beside the ``Order``'s own, in this order.
_PAYMENT_PARAMS = (
    "character_set", "merchant_id", "request_id", "ip_address", "sign_type", "merchant_cert",
    "callback_url", "notify_url", "order_date", "mer_ac_date",
)  # fmt: skip


def _order_converter(schema: Schema) -> Callable[..., _Checked]:
    """The converter of a payment request that reads the ``Order``'s attributes directly and
    takes ``_PAYMENT_PARAMS`` as arguments: no dict of values is built on the way."""
    return schema.plan("order-converter", lambda s: _compile_converter(s, _PAYMENT_PARAMS))


def converter_source(schema: Schema, params: tuple[str, ...] | None = None) -> str:
    """The Python source ``_converter`` (or, with ``params``, ``_order_converter``) compiles
    for ``schema`` (for reading)."""
    return _converter_code(schema, params)[0]


def _compile_converter(schema: Schema, params: tuple[str, ...] | None = None) -> _Converter:
    source, namespace = _converter_code(schema, params)
    exec(compile(source, f"<converter {schema.name}>", "exec"), namespace)  # noqa: S102
    return namespace[f"convert_{schema.name}"]  # type: ignore[no-any-return]


def _value_of(attr: str, params: tuple[str, ...] | None) -> str:
    """Where the generated converter reads ``attr``: ``get``, an argument, or the order."""
    if params is None:
        return f"get({attr!r})"
    if attr in params:
        return attr
    return f"order.{attr}" if attr in _ORDER_ATTRS else "None"


def _converter_code(
    schema: Schema, params: tuple[str, ...] | None = None
) -> tuple[str, dict[str, Any]]:
    ns: dict[str, Any] = {
        "_slow": _slow_step,
        "_check_into": _check_into,
        "_check_and_keep": _check_and_keep,
        "_date_text": _date_text,
        "_date": dt.date,
        "_BANK_CODES": BANK_CODES,
    }
    args = "get" if params is None else ", ".join(("order", *params))
    lines = [f"def convert_{schema.name}({args}, extra_bank_codes):", "    problems = []"]
    texts = []
    for i, (field, fixed, check, number) in enumerate(
        schema.plan("convert_and_check", _convert_and_check_plan)
    ):
        var = f"t{i}"
        texts.append(f"{field.wire!r}: {var}")
        ns[f"step{i}"] = (field, fixed, check, number)
        slow = f"{var} = _slow(*step{i}, value, extra_bank_codes, problems)"
        lines += [
            f"    # {field.wire}: {field.kind.value}",
            f"    value = {_value_of(field.attr, params)}",
        ]
        if check is not None:
            ns[f"check{i}"] = check
            # None takes the only allowed value, or "": its verdict is known now.
            verdict = check(fixed, ())
            if verdict is None:
                lines += ["    if value is None:", f"        {var} = {fixed!r}"]
            else:
                ns[f"none{i}"] = verdict
                lines += [
                    "    if value is None:",
                    f"        {var} = {fixed!r}",
                    f"        problems.append(none{i})",
                ]
        else:
            lines += ["    if value is None:", f"        {var} = {fixed!r}"]
        lines += _fast_case_lines(field, i, ns, check)
        lines += ["    else:", f"        {slow}"]
    lines.append(f"    return {{{', '.join(texts)}}}, problems")
    return "\n".join(lines) + "\n", ns


def _fast_case_lines(field: Field, i: int, ns: dict[str, Any], check: Check | None) -> list[str]:
    """The converter's ``elif`` branches of field ``i``: each common case of its value, and
    the inlined rules (or the compiled check) its text then passes."""
    var = f"t{i}"
    lines: list[str] = []
    for kind_test, text, rules in _fast_cases(field, i, ns):
        lines += [f"    elif {kind_test}:", f"        {var} = {text}"]
        if check is None or rules == "True":
            continue
        if rules == "False":
            # No inlined rule (a URL, an address): the compiled check decides, and the
            # texts it accepted recently (the merchant's URLs repeat) pass at once.
            ns[f"good{i}"] = set()
            accepted = f"{var} in good{i}"
            if field.optional:
                accepted = f"not {var} or {accepted}"
            lines += [
                f"        if not ({accepted}):",
                f"            _check_and_keep(check{i}, good{i}, {var}, extra_bank_codes, "
                "problems)",
            ]
        else:
            lines += [
                f"        if not ({rules}):",
                f"            _check_into(check{i}, {var}, extra_bank_codes, problems)",
            ]
    return lines


def _fast_cases(field: Field, i: int, ns: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(test of the value, its wire text, the inlined rules its text obeys) per common case."""
    text_rules = _text_rules(field, i, ns)
    if field.kind is Kind.NUMBER:
        minimum = field.min_value if field.min_value is not None else 0
        rules = f"value >= {minimum}"
        if field.max_length is not None:
            rules += f" and len(t{i}) <= {field.max_length}"
        return [("type(value) is int", "str(value)", rules)]
    if field.kind is Kind.DATE:
        # A date object's text is always 8 digits of a real date: only the length is left.
        rules = f"len(t{i}) <= {field.max_length}" if field.max_length is not None else "True"
        return [("type(value) is _date", "_date_text(value)", rules)]
    cases = [("type(value) is str", "value", text_rules)]
    if field.enum is not None:
        ns[f"enum{i}"] = field.enum
        values = [m.value for m in field.enum]
        fits = all(
            isinstance(v, str) and v and (field.max_length is None or len(v) <= field.max_length)
            for v in values
        ) and set(values) <= set(field.choices or ())
        cases.append((f"type(value) is enum{i}", "value._value_", "True" if fits else text_rules))
    return cases


def _text_rules(field: Field, i: int, ns: dict[str, Any]) -> str:
    """The field's rules on a text ``t{i}``, inlined where they are simple; else "False" (the
    compiled check decides)."""
    if field.kind in (Kind.URL, Kind.IPV4, Kind.DATE, Kind.DATETIME, Kind.AMT_ITEM):
        return "False"
    rules = inline_tests(field, f"t{i}", ns, i)
    if field.kind is Kind.BANK:
        rules.append(f"(t{i} in _BANK_CODES or t{i} in extra_bank_codes)")
    body = " and ".join(rules) or "True"
    return f"not t{i} or ({body})" if field.optional else f"t{i} and ({body})"


def build_payment_request(
    order: Order,
    *,
    merchant_id: str,
    request_id: str,
    ip_address: str,
    signer: Signer,
    today: dt.date,
    character_set: CharacterSet = CharacterSet.UTF8,
    callback_url: str = "",
    notify_url: str = "",
    extra_bank_codes: Collection[str] = (),
    message: str = "DirectPayConfirm",
) -> PreparedRequest:
    """Validate ``order`` with the protocol fields, sign it and encode the form body.

    ``today`` (China time) fills ``orderDate`` and ``merAcDate`` when the order leaves them
    empty. Every problem is reported together in one ``ValidationError``.
    """
    if not isinstance(order, Order):
        raise TypeError(f"order must be an Order, not {type(order).__name__}")
    schema = schema_for(message)
    # The order's attributes and these values (_PAYMENT_PARAMS), converted and checked in one
    # generated pass.
    checked = _order_converter(schema)(
        order,
        character_set,
        merchant_id,
        request_id,
        ip_address,
        signer.sign_type,
        signer.merchant_cert,
        order.callback_url or callback_url,
        order.notify_url or notify_url,
        order.order_date or today,
        order.mer_ac_date or today,
        extra_bank_codes,
    )
    return _finish(
        schema,
        *checked,
        signer=signer,
        character_set=character_set,
        request_id=request_id,
        order_id=order.order_id,
    )


def build_order_request(
    message: str,
    order_id: str,
    *,
    merchant_id: str,
    request_id: str,
    signer: Signer,
    amount: int | None = None,
    character_set: CharacterSet = CharacterSet.UTF8,
) -> PreparedRequest:
    """Validate, sign and encode an OrderQuery (``amount`` None) or OrderRefund request."""
    schema = schema_for(message)
    values: dict[str, object] = {
        "merchant_id": merchant_id,
        "request_id": request_id,
        "sign_type": signer.sign_type,
        "merchant_cert": signer.merchant_cert,
        "order_id": order_id,
        "amount": amount,
    }
    return _prepare(
        schema,
        values,
        signer=signer,
        character_set=character_set,
        extra_bank_codes=(),
        request_id=request_id,
        order_id=order_id,
    )


def _prepare(
    schema: Schema,
    values: Mapping[str, object],
    *,
    signer: Signer,
    character_set: CharacterSet,
    extra_bank_codes: Collection[str],
    request_id: str,
    order_id: str,
) -> PreparedRequest:
    """Check every field, then sign and encode: the one path of every request."""
    fields, problems = _converter(schema)(values.get, extra_bank_codes)
    return _finish(
        schema,
        fields,
        problems,
        signer=signer,
        character_set=character_set,
        request_id=request_id,
        order_id=order_id,
    )


def _finish(
    schema: Schema,
    fields: dict[str, str],
    problems: list[Problem],
    *,
    signer: Signer,
    character_set: CharacterSet,
    request_id: str,
    order_id: str,
) -> PreparedRequest:
    """Report the problems found, or sign the checked fields and encode the body."""
    if signer.sign_type is SignType.RSA and not signer.merchant_cert:
        cert_name = schema.cert_field.wire if schema.cert_field else "certificate"
        problems.append(Problem(cert_name, "required when signType is RSA", "required"))
    if problems:
        order_of = {f.wire: i for i, f in enumerate(schema.fields)}
        raise ValidationError(sorted(problems, key=lambda p: order_of.get(p.field, 0)))
    try:
        fields[schema.signature_field.wire] = signer.sign(source_of(schema, fields))
    except UnicodeEncodeError:  # the source is signed as UTF-8: only lone surrogates fail
        raise EncodingError(_unencodable(fields)) from None
    # ``fields`` is in schema order already; an empty certificate is left out of the body.
    cert = schema.cert_field
    if cert is not None and not fields[cert.wire]:
        plan = schema.plan("form-no-cert", lambda s: form_plan(s, tuple(fields), cert.wire))
    else:
        plan = schema.plan("form", lambda s: form_plan(s, tuple(fields)))
    body = encode_fields(fields, character_set, plan)
    return PreparedRequest(
        message=schema.name,
        request_id=request_id,
        order_id=order_id,
        content_type=content_type(character_set),
        body=body,
        fields=fields,
    )


def _unencodable(fields: Mapping[str, str]) -> list[Problem]:
    problems = []
    for name, value in fields.items():
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            char = exc.object[exc.start]
            problems.append(
                Problem(
                    name,
                    f"character U+{ord(char):04X} is a lone surrogate, not text "
                    "(decode the value with errors='strict' upstream)",
                    "charset",
                )
            )
    return problems


def gateway_error(code: str, message: str, verified: bool, *, interface: str) -> GatewayError:
    """The ``GatewayError`` for a failure return code, explained from appendix 9.2.

    ``interface`` (``OrderRefund``, ...) picks a hint that fits the request, where the
    appendix's own text is about another one.
    """
    row = explain_return_code(code)
    hint = CONTEXT_HINTS.get((interface, code), row.hint)
    if not verified:
        # Anyone between us and the gateway may have written it: blank what looks secret.
        message = redact_untrusted(message)
    return GatewayError(code, message, explanation=row.english, hint=hint, verified=verified)


def read_answer(
    message: str,
    body: bytes | str,
    *,
    verifier: Verifier,
    expect: Mapping[str, str | None],
    data_codes: Collection[str] = (),
) -> dict[str, str]:
    """Verify a gateway answer and return its fields as the signature covers them.

    A return code other than success (and the ``data_codes`` that are answers, not errors)
    raises ``GatewayError``; a bad signature ``SignatureError``; a verified answer whose
    fields differ from ``expect`` (merchant, request, order) ``UnexpectedMessageError``.
    Content that does not verify is never returned.
    """
    schema = schema_for(message)
    fields = decode_payload(body, form=False)
    code = fields.get("returnCode", "")
    if not code:
        raise DecodeError("missing or empty", field="returnCode")
    if code not in SUCCESS_CODES and code not in data_codes:
        # A failure answer is only ever raised, never returned as data, so one that is unsigned
        # or signed with another key (the gateway cannot sign for a merchant it does not know;
        # after IPS0008 the merchant's own key is the wrong one) still reports its code.
        try:
            verified = verify_fields(schema, fields, verifier)
        except SignatureError:
            readable = _readable(schema, fields).get("message", "")
            raise gateway_error(code, readable, False, interface=schema.wire_type) from None
        raise gateway_error(code, verified.get("message", ""), True, interface=schema.wire_type)
    verified = verify_fields(schema, fields, verifier)
    for name, value in expect.items():
        if value is not None and verified.get(name) != value:
            raise UnexpectedMessageError("the verified answer is not for this request", field=name)
    return verified


def parse_payment_response(
    body: bytes | str,
    *,
    verifier: Verifier,
    merchant_id: str | None = None,
    request_id: str | None = None,
    message: str = "DirectPayConfirmResponse",
) -> PaymentResponse:
    """Verify and decode the gateway's answer to a payment request (see ``read_answer``)."""
    verified = read_answer(
        message,
        body,
        verifier=verifier,
        expect={"merchantId": merchant_id, "requestId": request_id},
    )
    if not verified.get("payUrl"):
        raise DecodeError("missing in a success answer", field="payUrl")
    # The reader compiled for the schema: the same values and errors as
    # PaymentResponse(**typed_values(...)), without re-checking what it just converted.
    return reader(schema_for(message), PaymentResponse)(verified, ())


def parse_order_query_response(
    body: bytes | str, *, verifier: Verifier, merchant_id: str, order_id: str
) -> OrderQueryResult:
    """Verify an OrderQuery answer; an unknown order is a result (``NOT_FOUND``), not an error."""
    message = "OrderQueryResponse"
    verified = read_answer(
        message,
        body,
        verifier=verifier,
        expect={"merchantId": merchant_id},
        data_codes={ORDER_NOT_FOUND},
    )
    if verified.get("orderId") and verified["orderId"] != order_id:
        raise UnexpectedMessageError("the verified answer is for another order", field="orderId")
    values = typed_values(schema_for(message), verified, OrderQueryResult)
    values["order_id"] = order_id
    return OrderQueryResult(**values)


def parse_refund_response(
    body: bytes | str, *, verifier: Verifier, merchant_id: str, order_id: str
) -> RefundResult:
    """Verify an OrderRefund answer; refused refunds raise ``GatewayError``."""
    message = "OrderRefundResponse"
    verified = read_answer(
        message, body, verifier=verifier, expect={"merchantId": merchant_id, "orderId": order_id}
    )
    return reader(schema_for(message), RefundResult)(verified, ())


def _readable(schema: Schema, fields: Mapping[str, str]) -> dict[str, str]:
    return escaped_readings(schema, fields)[0]
