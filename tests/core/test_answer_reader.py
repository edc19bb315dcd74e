"""The gateway's payment and refund answers are bound by the reader compiled per schema: the
same model, or the same error word for word, as the checked constructor over typed_values."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmpay_async import CmpayError, PaymentResponse, RefundResult
from cmpay_async._binding import reader, typed_values
from cmpay_async._schema import REGISTRY
from tests.support.helpers import fuzz_examples

PAY_URL = "url<hi:=>https://pay.example/c<hi:$$>method<hi:=>post<hi:$$>sessionId<hi:=>S1"
ANSWERS: dict[str, tuple[type, dict[str, str]]] = {
    "DirectPayConfirmResponse": (
        PaymentResponse,
        {
            "merchantId": "888009990000001",
            "requestId": "20261126093000abc",
            "signType": "MD5",
            "type": "DirectPayConfirm",
            "version": "2.0.0",
            "returnCode": "000000",
            "message": "SUCCESS",
            "payUrl": PAY_URL,
            "hmac": "0" * 32,
        },
    ),
    "OrderRefundResponse": (
        RefundResult,
        {
            "merchantId": "888009990000001",
            "payNo": "P123",
            "returnCode": "000000",
            "message": "SUCCESS",
            "signType": "MD5",
            "type": "OrderRefund",
            "version": "2.0.0",
            "amount": "1250",
            "orderId": "ORDER1",
            "status": "SUCCESS",
            "hmac": "0" * 32,
        },
    ),
}
#: Values on the edge of a rule, for any field.
EDGES = ["", "0", "01", "-5", "1.0", "１２", " 12", "9" * 11, "x" * 257, "*", "md5", "2.0",
         "url<hi:=>", "url<hi:=>http://x", "url<hi:=>https://pay.example/c<hi:$$>method",
         "000000", "IPS0008", "交易成功", "\x00"]  # fmt: skip


def _outcome(read: Any) -> Any:
    try:
        return read()
    except CmpayError as exc:
        return type(exc), getattr(exc, "field", None), str(exc)


def _both(message: str, fields: dict[str, str]) -> tuple[Any, Any]:
    model, _ = ANSWERS[message]
    if model is PaymentResponse and not fields.get("payUrl"):
        # parse_payment_response refuses a success answer without payUrl before binding it
        # (the model holds no pay link then, which only its checked constructor refuses).
        return None, None
    schema = REGISTRY[message]
    checked = _outcome(lambda: model(**typed_values(schema, fields, model)))
    compiled = _outcome(lambda: reader(schema, model)(fields, ()))
    return checked, compiled


@pytest.mark.parametrize("message", sorted(ANSWERS))
def test_a_valid_answer_binds_to_the_same_model(message: str) -> None:
    """The success answer as the gateway sends it: equal models, not errors."""
    checked, compiled = _both(message, ANSWERS[message][1])

    assert isinstance(checked, ANSWERS[message][0])
    assert checked == compiled


@pytest.mark.parametrize("message", sorted(ANSWERS))
@pytest.mark.parametrize("edge", EDGES)
def test_an_edge_value_in_any_field_gives_the_same_outcome(message: str, edge: str) -> None:
    """Each field in turn holds a value on a rule's edge: the same model or the same error."""
    for name in ANSWERS[message][1]:
        fields = {**ANSWERS[message][1], name: edge}
        checked, compiled = _both(message, fields)
        assert checked == compiled, (name, edge)


@settings(max_examples=fuzz_examples(200), deadline=None)
@given(
    message=st.sampled_from(sorted(ANSWERS)),
    slot=st.integers(min_value=0, max_value=11),
    text=st.text(),
)
def test_any_text_in_any_field_gives_the_same_outcome(message: str, slot: int, text: str) -> None:
    """Any text at all in one field (or the field missing): the same model or the same error."""
    fields = dict(ANSWERS[message][1])
    name = list(fields)[slot % len(fields)]
    if text == "\x00":
        del fields[name]
    else:
        fields[name] = text

    checked, compiled = _both(message, fields)

    assert checked == compiled
