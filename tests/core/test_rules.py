"""Each field rule of the registry, through check_fields, with the exact problem it reports.

The expected field, text and code are written out here (from the document's tables and the
README's promise "ValidationError: productName: longer than 50 characters"), so a rule that
changes its verdict, its text or its code fails.
"""

from __future__ import annotations

import pytest

from cmpay_async import Problem
from cmpay_async._schema import REGISTRY
from cmpay_async._validate import check_fields

SCHEMA = REGISTRY["DirectPayConfirm"]

VALID = {
    "characterSet": "02",
    "callbackUrl": "https://shop.example/r",
    "notifyUrl": "http://shop.example:8080/n?x=1",
    "ipAddress": "203.0.113.7",
    "merchantId": "888009941120001",
    "requestId": "R1",
    "signType": "MD5",
    "type": "DirectPayConfirm",
    "version": "2.0.0",
    "amount": "1",
    "bankAbbr": "ICBC",
    "currency": "00",
    "orderDate": "20240229",
    "orderId": "A1",
    "merAcDate": "20261126",
    "period": "999",
    "periodUnit": "03",
    "productName": "咖" * 50,
}


def test_a_valid_request_has_no_problem() -> None:
    """The base case: boundaries included (50 characters, a leap day, period 999, amount 1)."""
    assert [] == check_fields(SCHEMA, VALID)


@pytest.mark.parametrize(
    ("field", "value", "rule", "code"),
    [
        ("productName", "咖" * 51, "longer than 50 characters", "max_length"),
        ("productName", "", "required", "required"),
        ("orderId", "x" * 51, "longer than 50 characters", "max_length"),
        ("amount", "0", "must be at least 1", "min_value"),
        ("amount", "-5", "must be at least 1", "min_value"),
        ("amount", "1.5", "must be digits", "digits"),
        ("amount", "１２", "must be digits", "digits"),  # full-width digits are not ASCII
        ("amount", "x12", "must be digits", "digits"),  # only a leading '-' means negative
        ("amount", "-１2", "must be digits", "digits"),  # a minus, then a full-width digit
        ("period", "1000", "longer than 3 characters", "max_length"),
        ("orderDate", "2026-1-2", "not a date of the form YYYYMMDD", "date"),
        ("orderDate", "20230229", "not a valid calendar date", "date"),
        ("callbackUrl", "ftp://shop.example/r", "must be an http(s) URL", "url"),
        ("callbackUrl", "https://", "must be an http(s) URL", "url"),
        ("ipAddress", "256.1.1.1", "must be an IPv4 address", "ipv4"),
        ("ipAddress", "1.2.3", "must be an IPv4 address", "ipv4"),
        ("characterSet", "03", "must be one of 00, 01, 02", "choices"),
        ("periodUnit", "04", "must be one of 00, 01, 02, 03", "choices"),
        (
            "bankAbbr",
            "NEWBANK",
            "unknown bank code 'NEWBANK' (appendix 9.1); pass extra_bank_codes to allow it",
            "bank",
        ),
    ],
)
def test_each_rule_reports_its_exact_problem(field: str, value: str, rule: str, code: str) -> None:
    """One broken field, one problem: its wire name, the rule's text and its code."""
    assert [Problem(field, rule, code)] == check_fields(SCHEMA, {**VALID, field: value})


def test_extra_bank_codes_are_honoured_and_not_remembered() -> None:
    """A newer bank code passes when allowed, and is refused again when not."""
    fields = {**VALID, "bankAbbr": "NEWBANK"}

    assert [] == check_fields(SCHEMA, fields, extra_bank_codes={"NEWBANK"})
    assert ["bank"] == [p.code for p in check_fields(SCHEMA, fields)]


def test_problems_come_in_schema_order_and_all_at_once() -> None:
    """Every broken field is reported, in the document's order, not just the first."""
    fields = {**VALID, "productName": "", "amount": "x", "callbackUrl": "nope"}

    assert ["callbackUrl", "amount", "productName"] == [
        p.field for p in check_fields(SCHEMA, fields)
    ]


def test_unsigned_fields_are_not_checked_by_default() -> None:
    """hmac and merchantCert are filled after the check: absent, they are not problems."""
    assert "hmac" not in VALID
    assert [] == check_fields(SCHEMA, VALID)
    assert ["hmac"] == [p.field for p in check_fields(SCHEMA, VALID, signed_only=False)]


def test_a_remembered_verdict_is_the_same_verdict() -> None:
    """Checking the same values again (the verdicts are memoised) gives the same problems."""
    broken = {**VALID, "amount": "0", "ipAddress": "1.2.3"}

    first = check_fields(SCHEMA, broken)
    assert first == check_fields(SCHEMA, broken)
    assert [] == check_fields(SCHEMA, VALID)
