"""Every rule of every notification field, from the document's tables written as data
(tests/vectors/notification_grammar.json): what verifies and parses, what is refused and why."""

from __future__ import annotations

from typing import Any

import pytest

from cmpay_async import CmpayError, Md5Signer, verify_notification
from cmpay_async._appendix import BANK_CODES, SUCCESS_CODES
from tests.core.test_protocol import _query, query_answer
from tests.support.helpers import TEST_KEY, TEST_MERCHANT
from tests.support.notify_grammar_support import GRAMMAR, section_8_3, signed_body

VERIFIER = Md5Signer(TEST_KEY)
FIELDS: dict[str, Any] = GRAMMAR["fields"]


def _with(name: str, value: str) -> dict[str, str]:
    fields = section_8_3() | {name: value}
    if name == "amount" and value.isdigit() and value.isascii():
        # Keep the breakdown true to the new amount, so that only the amount is tested.
        fields["amtItem"] = f"CNY_AMT={value}#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0"
    return fields


def _verify(fields: dict[str, str], charset: str = "utf-8") -> Any:
    return verify_notification(
        signed_body(fields, charset), verifier=VERIFIER, merchant_id=TEST_MERCHANT
    )


VALID = [(name, v) for name, rule in FIELDS.items() for v in rule["valid"]]
INVALID = [(name, v) for name, rule in FIELDS.items() for v in rule["invalid"]]


@pytest.mark.parametrize(("name", "value"), VALID)
def test_what_the_document_allows_verifies(name: str, value: str) -> None:
    """A signed notification whose field holds a value the document allows is accepted."""
    note = _verify(_with(name, value))

    assert TEST_MERCHANT == note.merchant_id


@pytest.mark.parametrize(("name", "value"), INVALID)
def test_what_the_document_does_not_allow_is_refused_naming_the_field(
    name: str, value: str
) -> None:
    """A correctly signed notification whose field breaks its rule is refused, and the error
    names that field: a value that merely verifies is not enough."""
    with pytest.raises(CmpayError) as caught:
        _verify(_with(name, value))

    assert name == caught.value.field  # type: ignore[attr-defined]


@pytest.mark.parametrize("code", GRAMMAR["bank_codes"])
def test_every_bank_code_of_appendix_9_1_is_accepted(code: str) -> None:
    """Each code of the document's bank table is a valid bankAbbr."""
    assert code == _verify(_with("bankAbbr", code)).bank_abbr


def test_the_library_knows_exactly_appendix_9_1s_bank_codes() -> None:
    """The library's table holds the document's codes, no more and no fewer."""
    assert sorted(set(GRAMMAR["bank_codes"])) == sorted(BANK_CODES)


def test_a_bank_code_newer_than_the_appendix_is_admitted_when_declared() -> None:
    """A code the merchant declares in extra_bank_codes verifies; undeclared it is refused."""
    body = signed_body(_with("bankAbbr", "NEWBANK"))
    with pytest.raises(CmpayError, match=r"^bankAbbr: unknown bank code 'NEWBANK'"):
        verify_notification(body, verifier=VERIFIER, merchant_id=TEST_MERCHANT)

    note = verify_notification(
        body, verifier=VERIFIER, merchant_id=TEST_MERCHANT, extra_bank_codes={"NEWBANK"}
    )

    assert "NEWBANK" == note.bank_abbr


@pytest.mark.parametrize("code", GRAMMAR["return_codes"])
def test_every_return_code_of_appendix_9_2_is_accepted_and_none_of_its_pieces(code: str) -> None:
    """Each code of the appendix is a valid returnCode; none of its proper prefixes or
    suffixes is one (which fixes both ends of the field in the signed string)."""
    assert code == _verify(_with("returnCode", code)).return_code
    pieces = {code[:i] for i in range(1, len(code))} | {code[i:] for i in range(1, len(code))}
    for piece in sorted(pieces):
        with pytest.raises(CmpayError) as caught:
            _verify(_with("returnCode", piece))
        assert "returnCode" == caught.value.field  # type: ignore[attr-defined]


@pytest.mark.parametrize(("status", "code", "paid"), GRAMMAR["paid"]["cases"])
def test_paid_means_status_success_and_a_success_code(status: str, code: str, paid: bool) -> None:
    """SUCCESS with a failure returnCode is not paid, nor FAILED with a success code."""
    note = _verify(section_8_3() | {"status": status, "returnCode": code})

    assert (paid, status) == (note.paid, note.status.value)


def test_the_success_codes_are_the_appendixs() -> None:
    """000000 and MCG00000 (交易成功) are the only success codes."""
    assert set(GRAMMAR["success_codes"]) == SUCCESS_CODES


def test_each_amt_item_part_lands_in_its_documented_attribute() -> None:
    """CNY_AMT is cash, CMY_AMT the top-up card, RED_AMT the e-coupon, VCH_AMT the voucher
    and POT_CHG_AMT the points, each in fen; they add up to the amount."""
    parts = GRAMMAR["amt_item"]["parts"]
    values = [1, 2, 3, 4, 90]
    text = "#".join(f"{key}={v}" for (key, _, _), v in zip(parts, values, strict=True))

    note = _verify(section_8_3() | {"amount": "100", "amtItem": text})

    expected = {attr: v for (_, attr, _), v in zip(parts, values, strict=True)}
    assert expected == {attr: getattr(note.amount_items, attr) for attr in expected}
    assert {} == dict(note.amount_items.extra)


@pytest.mark.parametrize(("amount", "items", "status"), GRAMMAR["all_zero_amount_items"]["valid"])
def test_a_payment_that_paid_nothing_may_report_every_part_zero(
    amount: str, items: str, status: str
) -> None:
    """All five parts 0 beside a non-zero amount is the one breakdown that need not add up."""
    note = _verify(section_8_3() | {"amount": amount, "amtItem": items, "status": status})

    assert (int(amount), 0, False) == (note.amount, note.amount_items.total, note.paid)


@pytest.mark.parametrize("rest", ["", "#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0"])
def test_an_amt_item_over_its_256_characters_is_refused_for_its_length(rest: str) -> None:
    """Max(256) is the first rule an amtItem breaks, whatever else is wrong with it: a cash
    part of 250 digits is refused for its length, not read as a sum of money."""
    items = "CNY_AMT=1" + "0" * 250 + rest

    with pytest.raises(CmpayError) as caught:
        _verify(section_8_3() | {"amtItem": items})

    assert "amtItem: longer than 256 characters" == str(caught.value)


def test_the_whole_mobile_cannot_move_into_the_order_id() -> None:
    """Eleven characters moved from mobile into orderId (mobile left empty) still join into
    the same signed string; the order id may not hold the mask's '*', so it is refused."""
    fields = section_8_3()
    hmac = signed_body(fields).rsplit(b"hmac=", 1)[1].decode()
    moved = fields | {"mobile": "", "orderId": fields["mobile"] + fields["orderId"]}

    with pytest.raises(CmpayError) as caught:
        verify_notification(
            signed_body(moved, hmac=hmac), verifier=VERIFIER, merchant_id=TEST_MERCHANT
        )

    assert "orderId" == caught.value.field  # type: ignore[attr-defined]


def test_gb2312_bodies_whose_gbk_reading_differs_are_read_as_gb2312() -> None:
    """GB2312's A1A4 and A1AA decode differently as GBK: the GB2312 reading is tried too."""
    text = "咖啡・茶―包"
    note = _verify(section_8_3() | {"reserved1": text}, "gb2312")

    assert text == note.reserved1


def test_a_declared_order_id_pattern_refuses_other_order_ids() -> None:
    """order_id_pattern is checked against the whole orderId, and the error names it."""
    body = signed_body(_with("orderId", "A1001"))
    with pytest.raises(CmpayError) as caught:
        verify_notification(
            body, verifier=VERIFIER, merchant_id=TEST_MERCHANT, order_id_pattern=r"[0-9]+"
        )

    assert "orderId" == caught.value.field  # type: ignore[attr-defined]
    note = verify_notification(
        body, verifier=VERIFIER, merchant_id=TEST_MERCHANT, order_id_pattern=r"A[0-9]+"
    )
    assert "A1001" == note.order_id


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"mobile": "15116410263"}, "mobile"),
        ({"bankAbbr": "XXBANK"}, "bankAbbr"),
        ({"amtItem": "CNY_AMT=99#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0"}, "amtItem"),
        ({"status": "success"}, "status"),
        ({"fee": "00"}, "fee"),
    ],
)
def test_order_query_answers_obey_the_same_grammar(change: dict[str, str], field: str) -> None:
    """An OrderQuery answer repeats the notification's fields and their rules."""
    with pytest.raises(CmpayError) as caught:
        _query(query_answer(**change))

    assert field == caught.value.field  # type: ignore[attr-defined]
