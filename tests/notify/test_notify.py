"""verify_notification(), ack() and sign_notification(): the security boundary."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qsl, quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmpay_async import (
    CHINA_TZ,
    AmountItems,
    CharacterSet,
    CmpayError,
    DecodeError,
    DuplicateFieldError,
    Md5Signer,
    OfflineNotify,
    PageNotify,
    PayloadTooLargeError,
    PaymentStatus,
    RsaSigner,
    RsaVerifier,
    SignatureError,
    SignType,
    SignTypeMismatchError,
    UnexpectedMessageError,
    ack,
    nack,
    verify_notification,
)
from cmpay_async._schema import REGISTRY
from cmpay_async.testing import sign_notification
from tests.support.helpers import NOTIFY_BODY, TEST_KEY, TEST_MERCHANT, fuzz_examples, rsa_key

VERIFIER = Md5Signer(TEST_KEY)


def _pairs(body: str) -> list[tuple[str, str]]:
    return parse_qsl(body, keep_blank_values=True)


def test_section_8_3_notification_verifies_from_bytes_str_and_dict() -> None:
    """The document's sample verifies from bytes, str and a framework-style dict."""
    as_dict = dict(_pairs(NOTIFY_BODY))
    results = [
        verify_notification(NOTIFY_BODY.encode(), verifier=VERIFIER, merchant_id=TEST_MERCHANT),
        verify_notification(NOTIFY_BODY, verifier=VERIFIER),
        verify_notification(as_dict, verifier=VERIFIER),
    ]

    first = results[0]
    assert isinstance(first, PageNotify)
    assert all(first == r for r in results)
    assert "201901310005378468" == first.pay_no
    assert 100 == first.amount
    assert AmountItems(cash=100) == first.amount_items
    assert dt.datetime(2019, 1, 31, 10, 27, 35, tzinfo=CHINA_TZ) == first.pay_date
    assert dt.date(2019, 1, 31) == first.account_date
    assert PaymentStatus.SUCCESS is first.status
    assert SignType.MD5 is first.sign_type
    assert first.paid
    assert dict(_pairs(NOTIFY_BODY)) == as_dict  # not mutated


SIGNED = [name for name in REGISTRY["PageNotify"].signed_names]


@pytest.mark.parametrize("name", SIGNED)
def test_changing_any_signed_field_is_rejected(name: str) -> None:
    """Altering any one field of the sample makes it fail with a CmpayError, never data."""
    pairs = _pairs(NOTIFY_BODY)
    changed = [(k, (v + "1") if k == name else v) for k, v in pairs]

    with pytest.raises(CmpayError):
        verify_notification(dict(changed), verifier=VERIFIER)


def test_changing_the_hmac_or_the_sign_type_is_rejected() -> None:
    """A changed hmac is a SignatureError; a changed signType a downgrade refusal."""
    fields = dict(_pairs(NOTIFY_BODY))
    with pytest.raises(SignatureError):
        verify_notification({**fields, "hmac": "0" * 32}, verifier=VERIFIER)
    with pytest.raises(SignTypeMismatchError, match=r"^signType: "):
        verify_notification({**fields, "signType": "RSA"}, verifier=VERIFIER)


def test_md5_payload_is_refused_by_rsa_verifier_and_vice_versa() -> None:
    """No downgrade in either direction."""
    gateway = RsaSigner(rsa_key())
    rsa_body = sign_notification(signer=gateway)

    verify_notification(rsa_body, verifier=RsaVerifier(gateway.public_key))
    with pytest.raises(SignTypeMismatchError):
        verify_notification(NOTIFY_BODY, verifier=RsaVerifier(gateway.public_key))
    with pytest.raises(SignTypeMismatchError):
        verify_notification(rsa_body, verifier=VERIFIER)


def test_carried_server_cert_is_never_used() -> None:
    """A forger's own certificate inside the payload does not make its signature valid."""
    gateway, forger = RsaSigner(rsa_key()), RsaSigner(rsa_key(2048))
    forged = sign_notification(signer=forger)

    assert forger.merchant_cert.encode() in forged
    with pytest.raises(SignatureError):
        verify_notification(forged, verifier=RsaVerifier(gateway.public_key))


@pytest.mark.parametrize(
    ("change", "error", "field"),
    [
        ({"type": "DirectPayConfirm"}, UnexpectedMessageError, "type"),
        ({"type": ""}, UnexpectedMessageError, "type"),
    ],
)
def test_wrong_type_is_rejected(change: dict[str, str], error: type[Exception], field: str) -> None:
    """Only PageNotify and OfflineNotify are notifications."""
    with pytest.raises(error, match=f"^{field}: "):
        verify_notification({**dict(_pairs(NOTIFY_BODY)), **change}, verifier=VERIFIER)


def test_signed_but_wrong_version_merchant_or_values_are_rejected() -> None:
    """Correctly signed payloads with a wrong version, merchant, number or date still fail."""
    with pytest.raises(UnexpectedMessageError, match=r"^version: "):
        verify_notification(sign_notification(version="1.0.0"), verifier=VERIFIER)
    with pytest.raises(UnexpectedMessageError, match=r"^merchantId: "):
        verify_notification(sign_notification(), verifier=VERIFIER, merchant_id="OTHER")
    with pytest.raises(DecodeError, match=r"^amount: must be digits"):
        verify_notification(sign_notification(amount="1.5"), verifier=VERIFIER)
    with pytest.raises(DecodeError, match=r"^payDate: "):
        verify_notification(sign_notification(pay_date="20191341102735"), verifier=VERIFIER)
    with pytest.raises(DecodeError, match=r"^orderId: missing"):
        verify_notification(sign_notification(order_id=""), verifier=VERIFIER)


def test_duplicate_keys_and_huge_bodies_are_rejected() -> None:
    """A field given twice, or a body over 64 KiB, is refused before verification."""
    with pytest.raises(DuplicateFieldError, match=r"^amount: "):
        verify_notification(NOTIFY_BODY + "&amount=1", verifier=VERIFIER)
    with pytest.raises(PayloadTooLargeError):
        verify_notification(NOTIFY_BODY + "&x=" + "a" * 70_000, verifier=VERIFIER)


def test_offline_notify_is_typed_as_such() -> None:
    """type=OfflineNotify gives an OfflineNotify; a failed payment is not paid."""
    note = verify_notification(
        sign_notification(kind="OfflineNotify", status="FAILED", order_id="A1"),
        verifier=VERIFIER,
    )

    assert isinstance(note, OfflineNotify)
    assert "A1" == note.order_id
    assert not note.paid


@pytest.mark.parametrize("charset", [CharacterSet.UTF8, CharacterSet.GBK])
@pytest.mark.parametrize("escape", [False, True])
def test_chinese_fields_verify_once_or_twice_encoded(charset: CharacterSet, escape: bool) -> None:
    """Chinese message/reserved fields verify in UTF-8 and GBK bodies, escaped once or twice."""
    body = sign_notification(
        message="支付成功",
        reserved1="订单 #1 & 备注=好",
        reserved2="100%",
        charset=charset,
        escape_chinese=escape,
    )

    note = verify_notification(body, verifier=VERIFIER)

    assert ("支付成功", "订单 #1 & 备注=好", "100%") == (
        note.message,
        note.reserved1,
        note.reserved2,
    )


def test_literal_percent_text_falls_back_to_value_as_received() -> None:
    """A signed value that is a strict UTF-8 escape reads decoded: the gateway's escaping.

    With ``escape_chinese`` the gateway signs the escaped text (the vendor's demos verify
    it so), so a signed ``%E4%B8%AD`` is the gateway's escape of 中; any other signed text
    that merely contains '%' stays as received.
    """
    body = sign_notification(reserved1="%E4%B8%AD", reserved2="100%")

    note = verify_notification(body, verifier=VERIFIER)
    assert ("中", "100%") == (note.reserved1, note.reserved2)


@pytest.mark.parametrize("escaped", ["%25FF%25FE", "%25E4%25B8", "%2", "%%41"])
def test_undecodable_escapes_in_chinese_fields_are_errors_not_crashes(escaped: str) -> None:
    """Escapes that are not UTF-8 inside a Chinese field end in a CmpayError, never another."""
    body = sign_notification(message="abc").replace(b"message=abc", f"message={escaped}".encode())

    with pytest.raises(SignatureError):
        verify_notification(body, verifier=VERIFIER)


def test_signed_literal_invalid_escape_verifies_as_received() -> None:
    """A signed value that looks like a broken escape verifies, as received."""
    body = sign_notification(reserved2="%FF%FE")

    assert "%FF%FE" == verify_notification(body, verifier=VERIFIER).reserved2


def test_sign_notification_defaults_are_realistic_and_unique() -> None:
    """Defaults verify, carry today's date and a fresh payNo every time."""
    before = dt.datetime.now(CHINA_TZ).date()
    a = verify_notification(sign_notification(), verifier=VERIFIER)
    b = verify_notification(sign_notification(amount=1250), verifier=VERIFIER)
    after = dt.datetime.now(CHINA_TZ).date()

    assert a.pay_no != b.pay_no
    assert a.account_date in {before, after}  # both sides: the run may cross midnight
    assert 1250 == b.amount == b.amount_items.cash


def test_ack_and_nack() -> None:
    """ack() is exactly SUCCESS as text/plain; nack() is anything else."""
    answer = ack()

    assert 200 == answer.status_code
    assert b"SUCCESS" == answer.body
    assert "text/plain; charset=utf-8" == answer.headers["content-type"]
    assert b"SUCCESS" != nack().body


def test_mappings_of_every_framework_shape() -> None:
    """MultiDict-like objects with getall/lists/multi_items are read without mutation."""

    class QueryDictLike(dict[str, list[str]]):
        def lists(self) -> Any:
            return self.items()

    class MultiItems:
        def __init__(self, pairs: list[tuple[str, str]]) -> None:
            self.pairs = pairs

        def multi_items(self) -> list[tuple[str, str]]:
            return self.pairs

        def keys(self) -> Any:
            return dict(self.pairs).keys()

        def __getitem__(self, key: str) -> str:
            return dict(self.pairs)[key]

        def __iter__(self) -> Any:
            return iter(dict(self.pairs))

        def __len__(self) -> int:
            return len(self.pairs)

    from collections.abc import Mapping

    Mapping.register(MultiItems)
    pairs = _pairs(NOTIFY_BODY)
    qd = QueryDictLike({k: [v] for k, v in pairs})

    assert verify_notification(qd, verifier=VERIFIER).paid
    assert verify_notification(MultiItems(pairs), verifier=VERIFIER).paid  # type: ignore[arg-type]
    with pytest.raises(DuplicateFieldError):
        verify_notification(MultiItems([*pairs, ("amount", "1")]), verifier=VERIFIER)  # type: ignore[arg-type]
    with pytest.raises(DuplicateFieldError):
        verify_notification(QueryDictLike({**qd, "amount": ["100", "1"]}), verifier=VERIFIER)


# -- fuzzing: nothing unverified comes back, nothing but CmpayError escapes ---------------------

ORIGINAL_BODY = sign_notification(
    kind="OfflineNotify",
    message="支付成功",
    reserved1="备注",
    order_id="FUZZ0001",
    pay_date=dt.datetime(2026, 11, 26, 10, 0, tzinfo=CHINA_TZ),
)
ORIGINAL = verify_notification(ORIGINAL_BODY, verifier=VERIFIER)


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes | str:
    """The signed original, or one of eleven kinds of damage done to it."""
    body = ORIGINAL_BODY
    pairs = body.split(b"&")
    how = draw(st.integers(0, 10))
    if how == 0:
        return draw(st.binary(max_size=300))
    if how == 1:
        return body[: draw(st.integers(0, len(body)))]
    if how == 2:
        extra = draw(st.sampled_from(pairs))
        return body + b"&" + extra
    if how == 3:
        i = draw(st.integers(0, len(pairs) - 1))
        bad = draw(st.sampled_from([b"%", b"%G1", b"%E4%B8", b"%FF%FE", b"%0", b"+%+"]))
        pairs[i] = pairs[i] + bad
        return b"&".join(pairs)
    if how == 4:
        i = draw(st.integers(0, len(pairs) - 1))
        pairs[i] = pairs[i] + b"x" * draw(st.integers(1, 80_000))
        return b"&".join(pairs)
    if how == 5:
        return body.decode().replace("%E6%94%AF", "").encode("gbk") + "中文".encode("gbk")
    if how == 6:
        i = draw(st.integers(0, len(body) - 1))
        return body[:i] + bytes([draw(st.integers(0, 255))]) + body[i + 1 :]
    if how == 7:
        draw(st.randoms()).shuffle(pairs)
        return b"&".join(pairs)
    if how == 8:
        return draw(st.text(max_size=200))
    if how == 9:
        name = draw(st.sampled_from([b"message=", b"reserved1=", b"reserved2="]))
        junk = draw(st.sampled_from([b"%25FF", b"%25E4%25B8", b"%2525", b"%25%25", b"%2"]))
        return body.replace(name, name + junk, 1)
    return body


@settings(
    max_examples=fuzz_examples(10_000),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
@given(mutated_bodies())
def test_fuzz_only_verified_originals_or_cmpay_errors(body: bytes | str) -> None:
    """Every outcome is the verified original or a CmpayError; nothing else escapes."""
    try:
        note = verify_notification(body, verifier=VERIFIER)
    except CmpayError:
        return
    assert ORIGINAL == note


def test_quote_helper_matches_form_escaping() -> None:
    """Sanity check of the fixture: the sample's amtItem is form-escaped once."""
    assert quote("CNY_AMT=100#", safe="") in NOTIFY_BODY
