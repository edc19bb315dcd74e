"""The registry is the only field list: models, signing order and parsing all derive from it."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import attrs
import pytest

from cmpay_async import (
    CHINA_TZ,
    REGISTRY,
    ConfigurationError,
    DecodeError,
    Kind,
    Notification,
    OfflineNotify,
    Order,
    PageNotify,
    PaymentResponse,
    signing_source,
)
from cmpay_async._binding import _MODEL_SCHEMAS, typed_values
from cmpay_async._codec import encode_form
from cmpay_async._enums import CharacterSet
from cmpay_async._schema import Field, Schema
from cmpay_async._validate import check_fields
from cmpay_async.testing import notification_defaults
from tests.support.helpers import IN_MUTMUT_TREE, load_vectors

PACKAGE = Path(__file__).parents[2] / "cmpay_async"
WIRE_NAMES = frozenset(f.wire for s in REGISTRY.values() for f in s.fields)


def _displays_with_field_names(tree: ast.AST) -> list[tuple[int, list[str]]]:
    found = []
    for node in ast.walk(tree):
        elements: list[ast.expr | None] = []
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            elements = list(node.elts)
        elif isinstance(node, ast.Dict):
            elements = list(node.keys) + list(node.values)
        names = [
            e.value
            for e in elements
            if isinstance(e, ast.Constant) and isinstance(e.value, str) and e.value in WIRE_NAMES
        ]
        if len(names) >= 3:
            found.append((node.lineno, names))
    return found


@pytest.mark.skipif(
    IN_MUTMUT_TREE,
    reason="mutmut's tree holds a copy of each function per mutant: scanning it takes minutes",
)
def test_no_field_list_outside_the_registry() -> None:
    """No module but _schema.py writes a list, tuple, set or dict of three or more wire names."""
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_schema.py":
            continue
        found = _displays_with_field_names(ast.parse(path.read_text("utf-8")))
        if found:
            offenders[path.name] = found

    assert {} == offenders


def test_the_scan_finds_a_planted_field_list() -> None:
    """The scan above is not vacuous: it flags a field list when one is written."""
    planted = ast.parse('ORDER = ("merchantId", "requestId", "signType")')

    assert [(1, ["merchantId", "requestId", "signType"])] == _displays_with_field_names(planted)


@pytest.mark.parametrize("model", [Order, PaymentResponse, PageNotify, OfflineNotify])
def test_model_attributes_are_registry_attributes(model: type) -> None:
    """Every model attribute is a field of its message, under the registry's attr name."""
    messages = _MODEL_SCHEMAS[model if model in _MODEL_SCHEMAS else Notification]

    for message in messages:
        assert {a.name for a in attrs.fields(model)} <= set(REGISTRY[message].by_attr)


def test_notification_model_holds_every_signed_field() -> None:
    """A notification model carries every signed field of PageNotify (nothing dropped)."""
    signed_attrs = {f.attr for f in REGISTRY["PageNotify"].fields if f.signed}

    assert signed_attrs == {a.name for a in attrs.fields(PageNotify)}


@pytest.mark.parametrize("message", sorted(load_vectors("field_orders.json")["orders"]))
def test_signed_field_order_is_protocol_mds(message: str) -> None:
    """Each message signs its fields in PROTOCOL.md's order, written down as data (a swap of
    two optional fields changes every real signature, so it must fail here)."""
    expected = load_vectors("field_orders.json")["orders"][message]

    assert expected == list(REGISTRY[message].signed_names)


def test_signing_order_is_the_registry_order() -> None:
    """The signing source places each field where the registry puts it."""
    for name, schema in REGISTRY.items():
        fields = {f.wire: f"<{i}>" for i, f in enumerate(schema.fields)}
        expected = "".join(f"<{i}>" for i, f in enumerate(schema.fields) if f.signed)

        assert expected == signing_source(name, fields), name


def test_wire_order_and_parser_follow_the_registry() -> None:
    """Encoding walks the registry order; the parser reads exactly the registry's fields."""
    schema = REGISTRY["PageNotify"]
    body = encode_form(((f.wire, "1") for f in schema.fields), CharacterSet.UTF8).decode()

    assert [f.wire for f in schema.fields] == [pair.split("=")[0] for pair in body.split("&")]
    with pytest.raises(DecodeError, match=r"^payNo: missing or empty$") as caught:
        typed_values(schema, {"merchantId": "M"}, PageNotify)
    assert "payNo" == caught.value.field
    # A required field with a conversion (an enum here) is refused the same way.
    given = {"merchantId": "M", "payNo": "P", "returnCode": "000000"}
    with pytest.raises(DecodeError, match=r"^signType: missing or empty$") as caught:
        typed_values(schema, given, PageNotify)
    assert "signType" == caught.value.field


def test_request_schema_has_the_documented_27_fields_plus_cert_and_hmac() -> None:
    """DirectPayConfirm: 27 signed fields, then merchantCert and hmac (section 6.1.3)."""
    schema = REGISTRY["DirectPayConfirm"]

    assert 27 == len(schema.signed_names)
    assert ("merchantCert", "hmac") == tuple(f.wire for f in schema.fields[27:])
    assert ("characterSet", "couponsFlag") == (schema.signed_names[0], schema.signed_names[-1])


def test_wap_request_differs_only_in_type() -> None:
    """WAPDirectPayConfirm is data alone: the same fields, another type value."""
    pc, wap = REGISTRY["DirectPayConfirm"], REGISTRY["WAPDirectPayConfirm"]

    assert pc.signed_names == wap.signed_names
    assert ("WAPDirectPayConfirm",) == wap.by_wire["type"].choices


def test_validation_reads_rules_from_the_registry() -> None:
    """Changing a max length in the registry changes what validation accepts."""
    schema = REGISTRY["DirectPayConfirm"]
    shorter = attrs.evolve(
        schema,
        fields=tuple(
            attrs.evolve(f, max_length=2) if f.wire == "productName" else f for f in schema.fields
        ),
    )

    assert [] == [
        p for p in check_fields(schema, {"productName": "abc"}) if p.field == "productName"
    ]
    assert ["productName"] == [
        p.field for p in check_fields(shorter, {"productName": "abc"}) if p.field == "productName"
    ]


def test_every_schema_ends_with_its_signature_field() -> None:
    """Each message carries hmac last, after its unsigned certificate field."""
    for schema in REGISTRY.values():
        assert Kind.SIGNATURE is schema.fields[-1].kind
        assert schema.cert_field is not None


def _documented_rules(message: str) -> list[tuple[Any, ...]]:
    """What the document's tables (plus the deviations written beside them) say of a message."""
    data = load_vectors("field_rules.json")
    table = data["tables"][data["same_as"].get(message, message)]
    emptied = set(data["may_be_empty_beyond_the_document"].get(message, ()))
    remarks, library = data["remarks"], data["library_rules"]
    rows = []
    for wire, max_length, kind, empty in table:
        if wire == "bankAbbr" and message in remarks["bank_code_in"]:
            form = "bank"
        else:
            form = remarks["forms"].get(wire, "number" if kind == "Number" else "string")
        choices = remarks["choices"].get(wire)
        if wire == "status" and message in remarks["status_choices_in"]:
            choices = remarks["status_choices"]
        if wire == "type" and message in remarks["type_is_checked_in"]:
            choices = [message]
        rows.append(
            (
                wire,
                max_length,
                "是" if wire in emptied else empty,
                form,
                choices,
                1 if wire in library["at_least_one"].get(message, ()) else None,
                wire in library["sensitive"],
                wire in library["utf8_escaped"],
            )
        )
    return rows


@pytest.mark.parametrize("message", sorted(REGISTRY))
def test_every_field_rule_is_the_documents(message: str) -> None:
    """Each field's length, emptiness, form, vocabulary and the library's own rules are those
    of the document's tables, written down as data (tests/vectors/field_rules.json)."""
    actual = [
        (
            f.wire,
            f.max_length,
            "是" if f.optional else "否",
            f.kind.value,
            list(f.choices) if f.choices is not None else None,
            f.min_value,
            f.sensitive,
            f.utf8_escaped,
        )
        for f in REGISTRY[message].fields
    ]

    assert _documented_rules(message) == actual


@pytest.mark.parametrize("message", ["PageNotify", "OfflineNotify"])
def test_notification_examples_are_the_documents_sample(message: str) -> None:
    """The registry's examples (testing.notification_defaults) are section 8.3's sample values;
    the dates come from ``when``, the merchant's reserved fields and the signType stay empty."""
    sample = next(
        v for v in load_vectors("md5.json")["vectors"] if v["name"].startswith("section 8.3")
    )
    wire = dict(parse_qsl(sample["body"], keep_blank_values=True))
    when = dt.datetime(2019, 1, 31, 10, 27, 35, tzinfo=CHINA_TZ)
    expected: dict[str, Any] = {
        REGISTRY[message].by_wire[name].attr: value
        for name, value in wire.items()
        if name not in {"serverCert", "hmac", "payDate", "accountDate", "orderDate"}
    }
    expected.update(type=message, pay_date=when, account_date=when.date(), order_date=when.date())
    # Left empty: the reserved fields are the merchant's own, signType is the signer's.
    expected.update(reserved1="", reserved2="", sign_type="")

    assert expected == notification_defaults(message, when=when)


def test_a_schema_refuses_duplicates_and_needs_one_signature_field() -> None:
    """A message definition with a repeated wire or attribute name, or without exactly one
    signature field, is refused when defined; one without a certificate field has none."""
    hmac = Field("hmac", "hmac", kind=Kind.SIGNATURE)
    first = Field("a", "a", 5)
    for repeated in (Field("a", "b", 5), Field("b", "a", 5)):  # same wire name; same attribute
        with pytest.raises(ConfigurationError, match=r"^schema T: duplicate field$"):
            Schema("T", "T", (first, repeated, hmac))
    for signatures in ((), (hmac, Field("sig2", "sig2", kind=Kind.SIGNATURE))):
        with pytest.raises(ConfigurationError, match=r"^schema T: needs exactly one signature"):
            Schema("T", "T", (first, *signatures))

    assert None is Schema("T", "T", (first, hmac)).cert_field


@pytest.mark.parametrize("message", sorted(REGISTRY))
def test_every_message_is_named_and_typed_as_the_document_says(message: str) -> None:
    """A message's registry name is its own; its wire type is the request's type, which an
    answer repeats (PROTOCOL.md section 3)."""
    schema = REGISTRY[message]

    assert (message, message.removesuffix("Response")) == (schema.name, schema.wire_type)


@pytest.mark.parametrize("message", ["PageNotify", "OfflineNotify"])
def test_every_notification_example_is_section_8_3s_value(message: str) -> None:
    """Field.example holds the document's sample value for each field the sample fills in,
    dates included (the merchant's reserved fields and the signType have none)."""
    sample = next(
        v for v in load_vectors("md5.json")["vectors"] if v["name"].startswith("section 8.3")
    )
    wire = dict(parse_qsl(sample["body"], keep_blank_values=True))
    left_out = {"reserved1", "reserved2", "signType", "serverCert", "hmac"}
    expected = {name: value for name, value in wire.items() if name not in left_out}
    expected["type"] = message  # the sample says PageNotify under both headings

    assert expected == {f.wire: f.example for f in REGISTRY[message].fields if f.example}
