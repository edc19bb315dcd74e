"""Building signed requests and reading signed gateway answers, end to end in memory."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmpay_async import (
    CharacterSet,
    CmpayError,
    DecodeError,
    GatewayError,
    Md5Signer,
    OrderState,
    RsaSigner,
    RsaVerifier,
    SignatureError,
    SignType,
    SignTypeMismatchError,
    UnexpectedMessageError,
    build_payment_request,
    decode_payload,
    parse_payment_response,
    signing_source,
)
from cmpay_async._codec import encode_answer
from cmpay_async._protocol import parse_order_query_response
from cmpay_async._schema import REGISTRY
from tests.support.helpers import (
    TEST_KEY,
    TEST_MERCHANT,
    TODAY,
    fuzz_examples,
    rsa_key,
    valid_order,
)

TOKEN = (
    "url<hi:=>https://ipos.10086.cn/ips/FormTrans3<hi:$$>method<hi:=>post<hi:$$>sessionId<hi:=>S1"
)


def answer(signer: Any = None, **overrides: str) -> bytes:
    """A gateway answer signed like the gateway signs it."""
    signer = signer or Md5Signer(TEST_KEY)
    fields = {
        "merchantId": TEST_MERCHANT,
        "requestId": "R1",
        "signType": signer.sign_type.value,
        "type": "DirectPayConfirm",
        "version": "2.0.0",
        "returnCode": "000000",
        "message": "成功",
        "payUrl": TOKEN,
    }
    fields.update(overrides)
    fields["hmac"] = signer.sign(signing_source("DirectPayConfirmResponse", fields))
    return encode_answer(REGISTRY["DirectPayConfirmResponse"], fields)


@pytest.mark.parametrize("charset", list(CharacterSet))
def test_request_body_decodes_in_its_charset_and_verifies_over_utf8(charset: CharacterSet) -> None:
    """The gateway side decodes the body in the declared charset; the hmac covers UTF-8."""
    signer = Md5Signer(TEST_KEY)
    request = build_payment_request(
        valid_order(product_name="中文商品"),
        merchant_id=TEST_MERCHANT,
        request_id="R1",
        ip_address="10.0.0.1",
        signer=signer,
        today=TODAY,
        character_set=charset,
    )

    fields = decode_payload(request.body, form=True, charset=charset.codec)

    assert "中文商品" == fields["productName"]
    assert charset.value == fields["characterSet"]
    signer.verify(signing_source("DirectPayConfirm", fields), fields["hmac"])
    assert list(fields) == [
        f.wire for f in REGISTRY["DirectPayConfirm"].fields if f.wire != "merchantCert"
    ]


def test_rsa_request_carries_merchant_cert_and_verifies() -> None:
    """An RSA request sends merchantCert (unsigned) and a SHA1withRSA hmac."""
    signer = RsaSigner(rsa_key())
    request = build_payment_request(
        valid_order(),
        merchant_id=TEST_MERCHANT,
        request_id="R1",
        ip_address="10.0.0.1",
        signer=signer,
        today=TODAY,
    )

    fields = decode_payload(request.body, form=True)
    assert "RSA" == fields["signType"]
    assert signer.merchant_cert == fields["merchantCert"]
    RsaVerifier(signer.public_key).verify(
        signing_source("DirectPayConfirm", fields), fields["hmac"]
    )


def test_success_answer_parses_to_typed_response() -> None:
    """A signed success answer gives the decoded message and payUrl."""
    response = parse_payment_response(
        answer(), verifier=Md5Signer(TEST_KEY), merchant_id=TEST_MERCHANT, request_id="R1"
    )

    assert "成功" == response.message
    assert "S1" == response.pay_url.session_id
    assert SignType.MD5 is response.sign_type


def test_tampered_answer_is_refused() -> None:
    """Changing the payUrl after signing raises SignatureError; no content is returned."""
    body = answer().replace(b"sessionId<hi:=>S1", b"sessionId<hi:=>S2")

    with pytest.raises(SignatureError):
        parse_payment_response(body, verifier=Md5Signer(TEST_KEY))


def test_failure_code_raises_gateway_error_with_explanation() -> None:
    """A signed failure answer raises GatewayError with code, message and hint."""
    body = answer(returnCode="IPS0008", message="签名不符", payUrl="")

    with pytest.raises(GatewayError) as info:
        parse_payment_response(body, verifier=Md5Signer(TEST_KEY))

    assert "IPS0008" == info.value.code
    assert "签名不符" == info.value.gateway_message
    assert info.value.verified is True
    assert info.value.hint is not None
    assert "UTF-8" in info.value.hint


def test_unsigned_failure_answer_is_still_a_gateway_error() -> None:
    """An unsigned failure answer can only ever raise, so it raises the gateway's code."""
    body = b"merchantId=X&returnCode=IPS0001&message=%E5%95%86%E6%88%B7"

    with pytest.raises(GatewayError, match="IPS0001") as info:
        parse_payment_response(body, verifier=Md5Signer(TEST_KEY))
    assert "商户" == info.value.gateway_message
    assert info.value.verified is False


def test_unsigned_success_answer_is_refused() -> None:
    """A success answer without hmac is a SignatureError, never a payUrl."""
    body = answer().split(b"&hmac=")[0]

    with pytest.raises(SignatureError, match="hmac: missing"):
        parse_payment_response(body, verifier=Md5Signer(TEST_KEY))


def test_answer_for_another_request_is_refused() -> None:
    """A verified answer for another requestId is not taken as ours."""
    with pytest.raises(UnexpectedMessageError) as caught:
        parse_payment_response(answer(), verifier=Md5Signer(TEST_KEY), request_id="R2")

    assert "requestId: the verified answer is not for this request" == str(caught.value)


def test_md5_answer_is_refused_by_rsa_verifier() -> None:
    """No downgrade: an MD5-signed answer does not pass an RSA verifier."""
    with pytest.raises(SignTypeMismatchError):
        parse_payment_response(answer(), verifier=RsaVerifier(rsa_key().public_key()))


def test_rsa_answer_verifies_with_configured_key_only() -> None:
    """An RSA answer verifies with the configured key; a carried serverCert is ignored."""
    gateway = RsaSigner(rsa_key())
    forger = RsaSigner(rsa_key(2048))
    forged = answer(forger, serverCert=forger.merchant_cert)

    parse_payment_response(answer(gateway), verifier=RsaVerifier(gateway.public_key))
    with pytest.raises(SignatureError):
        parse_payment_response(forged, verifier=RsaVerifier(gateway.public_key))


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "payload is empty"),
        (b"<html><body>502</body></html>", "returnCode: missing or empty"),
        (b"returnCode=", "returnCode: missing or empty"),
        (b"merchantId=1&message=x", "returnCode: missing or empty"),
    ],
)
def test_malformed_answers_raise_decode_errors(body: bytes, why: str) -> None:
    """Empty, HTML and code-less answers are protocol errors that say so."""
    with pytest.raises(DecodeError) as caught:
        parse_payment_response(body, verifier=Md5Signer(TEST_KEY))

    assert why == str(caught.value)


def test_an_unsigned_failure_without_a_message_has_an_empty_one() -> None:
    """A failure code alone still raises GatewayError; its gateway message is empty."""
    with pytest.raises(GatewayError) as caught:
        parse_payment_response(b"merchantId=X&returnCode=IPS0001", verifier=Md5Signer(TEST_KEY))

    assert ("IPS0001", "", False) == (
        caught.value.code,
        caught.value.gateway_message,
        caught.value.verified,
    )


def test_answers_are_read_raw_not_form_decoded() -> None:
    """An answer's values are taken as sent: a '+' or '%2F' in the payUrl stays as it is."""
    token = "url<hi:=>https://a.example/p?q=1+2%2F3<hi:$$>sessionId<hi:=>S1"

    response = parse_payment_response(answer(payUrl=token), verifier=Md5Signer(TEST_KEY))

    assert "https://a.example/p?q=1+2%2F3" == response.pay_url.url


ORIGINAL_ANSWER = answer()


@st.composite
def mutated_answers(draw: st.DrawFn) -> bytes:
    """The signed answer, or damage done to it."""
    body = ORIGINAL_ANSWER
    how = draw(st.integers(0, 5))
    if how == 0:
        return draw(st.binary(max_size=300))
    if how == 1:
        return body[: draw(st.integers(0, len(body)))]
    if how == 2:
        i = draw(st.integers(0, len(body) - 1))
        return body[:i] + bytes([draw(st.integers(0, 255))]) + body[i + 1 :]
    if how == 3:
        junk = draw(st.sampled_from([b"%FF", b"%25FF", b"%", b"<hi:$$>", b"<hi:=>", b"&&", b"="]))
        i = draw(st.integers(0, len(body)))
        return body[:i] + junk + body[i:]
    if how == 4:
        return body + b"&" + draw(st.sampled_from(body.split(b"&")))
    return body


@settings(max_examples=fuzz_examples(3000), deadline=None, database=None)
@given(mutated_answers())
def test_fuzz_answers_yield_the_original_or_cmpay_errors(body: bytes) -> None:
    """Any damaged answer gives the verified original or a CmpayError, nothing else."""
    try:
        response = parse_payment_response(body, verifier=Md5Signer(TEST_KEY))
    except CmpayError:
        return
    assert parse_payment_response(ORIGINAL_ANSWER, verifier=Md5Signer(TEST_KEY)) == response


def query_answer(**overrides: str) -> bytes:
    """An OrderQuery answer signed like the gateway signs it."""
    signer = Md5Signer(TEST_KEY)
    fields = {
        "merchantId": TEST_MERCHANT,
        "payNo": "201901310005378468",
        "returnCode": "000000",
        "message": "成功",
        "signType": "MD5",
        "type": "OrderQuery",
        "version": "2.0.0",
        "amount": "100",
        "amtItem": "CNY_AMT=100#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
        "bankAbbr": "ICBC",
        "mobile": "151****0263",
        "orderId": "Q1",
        "payDate": "20190131102735",
        "reserved1": "",
        "reserved2": "",
        "status": "SUCCESS",
        "orderDate": "20190131",
        "fee": "0",
    }
    fields.update(overrides)
    fields["hmac"] = signer.sign(signing_source("OrderQueryResponse", fields))
    return encode_answer(REGISTRY["OrderQueryResponse"], fields)


def _query(body: bytes, order_id: str = "Q1") -> Any:
    return parse_order_query_response(
        body, verifier=Md5Signer(TEST_KEY), merchant_id=TEST_MERCHANT, order_id=order_id
    )


def test_a_query_answer_is_for_the_order_asked_about() -> None:
    """A verified answer naming another orderId is refused; the asked one is read."""
    assert ("Q1", 100) == (_query(query_answer()).order_id, _query(query_answer()).amount)

    with pytest.raises(UnexpectedMessageError) as caught:
        _query(query_answer(orderId="Q2"))

    assert "orderId" == caught.value.field
    assert "orderId: the verified answer is for another order" == str(caught.value)


def test_an_unknown_order_answer_without_order_id_is_the_asked_order() -> None:
    """RPM22201 answers may leave orderId empty: the result is NOT_FOUND for the order asked."""
    empty = {k: "" for k in ("payNo", "amount", "amtItem", "bankAbbr", "mobile", "payDate")}
    body = query_answer(returnCode="RPM22201", message="订单不存在", orderId="", status="", **empty)

    result = _query(body, order_id="Q9")

    assert ("Q9", OrderState.NOT_FOUND) == (result.order_id, result.state)


@pytest.mark.parametrize(("message", "amount"), [("OrderQuery", None), ("OrderRefund", 5)])
def test_an_rsa_order_request_carries_the_merchant_certificate(
    message: str, amount: int | None
) -> None:
    """merchantCert is sent (outside the signature) and the source is signed with the key."""
    from cmpay_async._protocol import build_order_request

    signer = RsaSigner(rsa_key(), merchant_cert="CERTHEX01")
    request = build_order_request(
        message, "O1", merchant_id=TEST_MERCHANT, request_id="RQ1", signer=signer, amount=amount
    )

    sent = dict(parse_qsl(request.body.decode(), keep_blank_values=True))
    assert ("CERTHEX01", "RSA", message) == (sent["merchantCert"], sent["signType"], sent["type"])
    RsaVerifier(signer.public_key).verify(signing_source(message, sent), sent["hmac"])


def test_a_signed_success_without_a_pay_url_is_refused() -> None:
    """000000 with an empty payUrl is no payment: a DecodeError naming payUrl."""
    with pytest.raises(DecodeError) as caught:
        parse_payment_response(answer(payUrl=""), verifier=Md5Signer(TEST_KEY))

    assert "payUrl" == caught.value.field
    assert "payUrl: missing in a success answer" == str(caught.value)


def test_a_payload_without_sign_type_or_signature_is_refused_word_for_word() -> None:
    """No signType: named as '' against the verifier's scheme; no hmac: "missing"; a wrong
    one: "signature does not match", each on its field."""
    from cmpay_async import SignatureError, verify_notification
    from cmpay_async.testing import sign_notification

    fields = dict(parse_qsl(sign_notification(order_id="V1").decode(), keep_blank_values=True))
    verifier = Md5Signer(TEST_KEY)
    cases = [
        (
            {k: v for k, v in fields.items() if k != "signType"},
            SignTypeMismatchError,
            "signType: is '' but the configured verifier checks MD5",
        ),
        ({k: v for k, v in fields.items() if k != "hmac"}, SignatureError, "hmac: missing"),
        ({**fields, "hmac": "0" * 32}, SignatureError, "hmac: signature does not match"),
    ]
    for payload, cls, why in cases:
        with pytest.raises(cls) as caught:
            verify_notification(payload, verifier=verifier)
        assert why == str(caught.value)
