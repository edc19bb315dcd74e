"""verify_notification's less common paths: each payload form read in every charset, bytes
that are text in no charset, and the careful verification of escaped or incomplete payloads,
each refused word for word."""

from __future__ import annotations

import re

import pytest

from cmpay_async import (
    CharacterSet,
    DecodeError,
    Md5Signer,
    SignatureError,
    SignTypeMismatchError,
    verify_notification,
)
from cmpay_async.testing import sign_notification
from tests.support.helpers import TEST_KEY

VERIFIER = Md5Signer(TEST_KEY)

#: 一 in GBK is D2 BB, which is also UTF-8 (the Cyrillic һ): a GBK body that reads as UTF-8.
AMBIGUOUS = "一"
assert AMBIGUOUS.encode("gbk").decode("utf-8") != AMBIGUOUS


def _gbk_body() -> bytes:
    return sign_notification(message=AMBIGUOUS, charset=CharacterSet.GBK, order_id="G1")


@pytest.mark.parametrize(
    "form",
    [bytes, bytearray, memoryview, lambda body: body.decode("ascii")],
    ids=["bytes", "bytearray", "memoryview", "str"],
)
def test_a_gbk_body_that_also_reads_as_utf8_is_read_in_gbk_whatever_its_form(form: object) -> None:
    """Without a declared charset, each charset is tried and the signature picks GBK's
    reading, for every form a body may take (a str carries GBK percent-escapes)."""
    body = _gbk_body()
    assert b"message=%D2%BB&" in body  # the escape both charsets can read

    note = verify_notification(form(body), verifier=VERIFIER)  # type: ignore[operator]

    assert (AMBIGUOUS, "G1") == (note.message, note.order_id)


def test_the_same_body_declared_utf8_does_not_verify() -> None:
    """The control of the test above: read as UTF-8 the message is another text, whose
    signature the gateway never made."""
    with pytest.raises(SignatureError) as caught:
        verify_notification(_gbk_body(), verifier=VERIFIER, charset="utf-8")

    assert "hmac: signature does not match" == str(caught.value)


@pytest.mark.parametrize(
    "raw",
    [b"message=\xff", b"reserved1=%FF"],
    ids=["raw byte", "escaped byte"],
)
def test_bytes_that_are_text_in_no_charset_are_a_decode_error_naming_the_first(
    raw: bytes,
) -> None:
    """A body (or an escape in it) that no candidate charset reads is a DecodeError, the
    first charset's reason word for word: never a signature check of a raw reading."""
    body = re.sub(rb"message=[^&]*", raw, sign_notification(order_id="D1"))

    with pytest.raises(DecodeError) as caught:
        verify_notification(body, verifier=VERIFIER)

    assert "payload is not valid utf-8: invalid start byte" == str(caught.value)
    assert not isinstance(caught.value, SignatureError)


def test_an_escaped_chinese_field_under_a_wrong_signature_is_refused_on_hmac() -> None:
    """Each reading of an escaped Chinese field tried, none verifying: a SignatureError on
    the signature's field, word for word."""
    body = sign_notification(message="支付成功", escape_chinese=True)
    forged = re.sub(rb"hmac=[0-9a-f]{32}", b"hmac=" + b"0" * 32, body)
    assert b"message=%25" in forged  # still escaped after the form is decoded

    with pytest.raises(SignatureError) as caught:
        verify_notification(forged, verifier=VERIFIER)

    assert ("hmac", "hmac: signature does not match") == (caught.value.field, str(caught.value))


def test_a_payload_missing_a_signed_field_under_a_wrong_signature_is_refused_on_hmac() -> None:
    """A signed field left out signs as empty; the careful path then refuses a wrong
    signature exactly as the usual one does."""
    body = sign_notification(order_id="M1").replace(b"&reserved2=", b"")
    forged = re.sub(rb"hmac=[0-9a-f]{32}", b"hmac=" + b"1" * 32, body)

    with pytest.raises(SignatureError) as caught:
        verify_notification(forged, verifier=VERIFIER)

    assert ("hmac", "hmac: signature does not match") == (caught.value.field, str(caught.value))


def test_a_long_foreign_sign_type_is_named_by_its_first_ten_characters() -> None:
    """The received signType is echoed in the error cut to ten characters, so a hostile
    value cannot fill a log line."""
    body = sign_notification(order_id="T1").replace(b"signType=MD5", b"signType=ABCDEFGHIJKLMNOP")

    with pytest.raises(SignTypeMismatchError) as caught:
        verify_notification(body, verifier=VERIFIER)

    assert "signType: is 'ABCDEFGHIJ' but the configured verifier checks MD5" == str(caught.value)


def test_a_raw_equals_sign_beside_a_malformed_escape_is_read_as_sent() -> None:
    """A value posted with a raw '=' and a '%' that starts no escape ("=41%zz") is read as
    the standard library reads it, character for character: '=41' is not an escape of
    'A', whatever shortcut the decoder takes."""
    body = sign_notification(reserved1="=41%zz", order_id="Q1")
    raw = re.sub(rb"reserved1=[^&]*", b"reserved1==41%zz", body)

    note = verify_notification(raw, verifier=VERIFIER)

    assert "=41%zz" == note.reserved1
