"""Validation before any I/O: every problem of an order reported together, by field and rule."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from cmpay_async import (
    CharacterSet,
    EncodingError,
    Md5Signer,
    Order,
    PeriodUnit,
    Problem,
    ValidationError,
    build_payment_request,
    yuan_to_fen,
)
from cmpay_async._protocol import build_order_request
from tests.support.helpers import TEST_KEY, TEST_MERCHANT, TODAY, valid_order


def build(order: Order, **kw: Any) -> Any:
    """Build a request with sensible protocol values."""
    args: dict[str, Any] = {
        "merchant_id": TEST_MERCHANT,
        "request_id": "R1",
        "ip_address": "10.9.26.2",
        "signer": Md5Signer(TEST_KEY),
        "today": TODAY,
    }
    args.update(kw)
    return build_payment_request(order, **args)


def test_valid_order_builds() -> None:
    """A valid order yields a signed UTF-8 form body."""
    request = build(valid_order())

    assert "application/x-www-form-urlencoded; charset=UTF-8" == request.content_type
    assert request.body.endswith(b"&hmac=" + request.fields["hmac"].encode())
    assert "20261126" == request.fields["orderDate"] == request.fields["merAcDate"]


def test_ten_invalid_fields_are_all_named_in_one_error() -> None:
    """Ten different broken rules come back together, each naming its field."""
    order = valid_order(
        amount=0,  # below one fen
        product_name="",  # required
        period=1000,  # longer than 3 digits
        merchant_abbr="商" * 51,  # too long
        bank_abbr="NOPE",  # not in appendix 9.1
        product_desc="x" * 257,  # too long
        callback_url="ftp://shop.example/",  # not http(s)
        notify_url="not a url",  # not a URL at all
        show_url="javascript:alert(1)",  # not http(s)
        product_num=-1,  # not digits
    )

    with pytest.raises(ValidationError) as info:
        build(order)

    assert {
        "amount",
        "productName",
        "period",
        "merchantAbbr",
        "bankAbbr",
        "productDesc",
        "callbackUrl",
        "notifyUrl",
        "showUrl",
        "productNum",
    } == set(info.value.fields)
    assert str(info.value).startswith("10 problems: ")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("overrides", "kw", "expected"),
    [
        ({"product_name": "长" * 51}, {}, "productName: longer than 50 characters"),
        ({"amount": 10**10}, {}, "amount: longer than 10 characters"),
        ({"order_id": ""}, {}, "orderId: required"),
        ({}, {"ip_address": "256.1.1.1"}, "ipAddress: must be an IPv4 address"),
        ({}, {"ip_address": "::1"}, "ipAddress: must be an IPv4 address"),
        ({}, {"merchant_id": ""}, "merchantId: required"),
        ({"period": 0}, {}, "period: must be at least 1"),
        ({"amount": -5}, {}, "amount: must be at least 1"),
    ],
)
def test_single_problem_messages(
    overrides: dict[str, Any], kw: dict[str, Any], expected: str
) -> None:
    """Each rule produces a message naming the field and the rule."""
    with pytest.raises(ValidationError) as info:
        build(valid_order(**overrides), **kw)

    assert expected == str(info.value)


def test_unknown_bank_code_can_be_allowed() -> None:
    """A bank code newer than the 2011 table passes when the merchant allows it."""
    with pytest.raises(ValidationError, match="bankAbbr: unknown bank code 'WEBANK'"):
        build(valid_order(bank_abbr="WEBANK"))

    request = build(valid_order(bank_abbr="WEBANK"), extra_bank_codes={"WEBANK"})
    assert "WEBANK" == request.fields["bankAbbr"]


def test_charset_problem_names_field_and_character() -> None:
    """A GBK order with an emoji is refused before sending, naming the field."""
    with pytest.raises(EncodingError) as info:
        build(valid_order(product_name="咖啡☕"), character_set=CharacterSet.GB2312)

    assert ("productName",) == info.value.fields
    assert [("productName", "character '☕' (U+2615) cannot be encoded in GB2312", "charset")] == [
        (p.field, p.rule, p.code) for p in info.value.problems
    ]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"amount": 12.5}, "amount: must be an int, not float"),
        ({"amount": True}, "amount: must be an int, not bool"),
        ({"amount": "1250"}, "amount: must be an int, not str"),
        ({"period_unit": "01"}, "period_unit: must be PeriodUnit, not str"),
        ({"currency": "00"}, "currency: must be Currency, not str"),
        ({"coupons_flag": "50"}, "coupons_flag: must be CouponsFlag, not str"),
        (
            {"order_date": dt.datetime(2026, 1, 1)},
            "order_date: must be a datetime.date, not datetime",
        ),
        ({"product_num": "3"}, "product_num: must be an int, not str"),
    ],
)
def test_order_refuses_wrong_types_on_construction(
    overrides: dict[str, Any], expected: str
) -> None:
    """A str where an enum or an int belongs raises when the Order is made, naming the field."""
    with pytest.raises(ValidationError) as info:
        valid_order(**overrides)

    assert expected == str(info.value)
    assert ("type",) == tuple(p.code for p in info.value.problems)


def test_order_names_every_wrong_type_at_once() -> None:
    """Two wrong types come back in one ValidationError."""
    with pytest.raises(ValidationError) as info:
        valid_order(amount="1", period_unit="01")

    assert ("amount", "period_unit") == info.value.fields


def test_enum_members_give_the_wire_values() -> None:
    """PeriodUnit.HOURS is sent as the document's code 01."""
    request = build(valid_order(period_unit=PeriodUnit.HOURS))

    assert "01" == request.fields["periodUnit"]


def test_order_rejects_non_order() -> None:
    """Passing a dict where an Order belongs is a TypeError, not a silent request."""
    with pytest.raises(TypeError) as caught:
        build({"amount": 1})  # type: ignore[arg-type]

    assert "order must be an Order, not dict" == str(caught.value)


@pytest.mark.parametrize(
    ("yuan", "fen"),
    [("12.50", 1250), (Decimal("0.01"), 1), (3, 300), (" 1.1 ", 110), ("100", 10000)],
)
def test_yuan_to_fen_is_exact(yuan: Any, fen: int) -> None:
    """Yuan as str, Decimal or int convert to exact fen."""
    assert fen == yuan_to_fen(yuan)


@pytest.mark.parametrize(
    ("yuan", "why"),
    [
        (12.5, "give yuan as Decimal or str, not float"),
        (True, "give yuan as Decimal or str, not float"),
        ("0.001", "finer than one fen"),
        (Decimal("1.005"), "finer than one fen"),
        ("abc", "not a decimal number of yuan"),
        ("", "not a decimal number of yuan"),
        (None, "not a decimal number of yuan"),
        ([1], "not a decimal number of yuan"),
        ("NaN", "not a finite amount"),
        ("-Infinity", "not a finite amount"),
    ],
)
def test_yuan_to_fen_refuses_floats_and_sub_fen(yuan: Any, why: str) -> None:
    """Floats, sub-fen amounts and non-numbers are refused, naming amount and the reason."""
    with pytest.raises(ValidationError) as caught:
        yuan_to_fen(yuan)

    assert f"amount: {why}" == str(caught.value)
    assert ("amount",) == caught.value.fields


def test_verdicts_stay_right_beyond_the_memo() -> None:
    """Checks remember verdicts of repeated values; a thousand distinct ones are still judged."""
    from cmpay_async._schema import REGISTRY
    from cmpay_async._validate import check_fields

    schema = REGISTRY["DirectPayConfirm"]
    for i in range(1000):
        good = f"ok{i:05d}"
        bad = "y" * 51 + str(i)
        assert [] == [
            p for p in check_fields(schema, {"productName": good}) if p.field == "productName"
        ]
        assert ["productName"] == [
            p.field for p in check_fields(schema, {"productName": bad}) if p.field == "productName"
        ]


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("500", "amount: must be an int, not str"),
        (-5, "amount: must be at least 1"),
        (0, "amount: must be at least 1"),
    ],
)
def test_refund_amount_must_be_a_positive_int(amount: Any, expected: str) -> None:
    """A refund of "500" (a str) or of a negative amount is refused with the real rule."""
    with pytest.raises(ValidationError) as info:
        build_order_request(
            "OrderRefund",
            "A1001",
            merchant_id=TEST_MERCHANT,
            request_id="R1",
            signer=Md5Signer(TEST_KEY),
            amount=amount,
        )

    assert expected == str(info.value)


def test_an_rsa_request_needs_a_merchant_certificate() -> None:
    """An RSA signer with an empty certificate: merchantCert is named, with the rule."""
    from cmpay_async import RsaSigner
    from tests.support.helpers import rsa_key

    with pytest.raises(ValidationError) as caught:
        build(valid_order(), signer=RsaSigner(rsa_key(), merchant_cert=""))

    assert [("merchantCert", "required when signType is RSA", "required")] == [
        (p.field, p.rule, p.code) for p in caught.value.problems
    ]


def test_return_addresses_are_required_when_nobody_gives_them() -> None:
    """build_payment_request without callback or notify URL, from the order or the caller."""
    bare = valid_order(callback_url="", notify_url="")

    with pytest.raises(ValidationError) as caught:
        build(bare)

    assert [("callbackUrl", "required"), ("notifyUrl", "required")] == [
        (p.field, p.rule) for p in caught.value.problems
    ]


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("amount", "0100", ("must not start with 0 (a canonical decimal)", "digits")),
        ("amount", "1e3", ("must be digits", "digits")),
        ("mobile", "15100000263", ("must be 3 digits, '****' and 4 digits", "pattern")),
    ],
)
def test_a_received_field_that_breaks_its_form_is_named_with_the_rule_and_its_code(
    name: str, value: str, problem: tuple[str, str]
) -> None:
    """Each form rule of a received field says what is wrong in words, and under a stable
    code (Problem.code): a number's one spelling, a masked mobile."""
    from cmpay_async._schema import REGISTRY
    from cmpay_async._validate import check_fields

    found = [p for p in check_fields(REGISTRY["OfflineNotify"], {name: value}) if p.field == name]

    assert [Problem(name, *problem)] == found


def test_bodies_with_and_without_a_certificate_alternate_correctly() -> None:
    """An MD5 body leaves merchantCert out, an RSA body carries it; built one after the
    other for the same message, in any order, each is written by its own field list."""
    from urllib.parse import parse_qsl

    from cmpay_async import RsaSigner
    from tests.support.helpers import rsa_key

    rsa = RsaSigner(rsa_key(), merchant_cert="CERTHEX01")
    bodies = [
        build(valid_order(), signer=signer).body.decode()
        for signer in (Md5Signer(TEST_KEY), rsa, Md5Signer(TEST_KEY), rsa)
    ]

    sent = [dict(parse_qsl(body, keep_blank_values=True)) for body in bodies]
    assert [None, "CERTHEX01", None, "CERTHEX01"] == [s.get("merchantCert") for s in sent]
    assert ["MD5", "RSA", "MD5", "RSA"] == [s["signType"] for s in sent]
