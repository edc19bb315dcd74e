"""The gateway's side of a notification (build and encode), and verify_notification's refusals,
with every message exact. Expected bodies are parsed with the standard library, not the
library's own decoder.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qsl, quote

import pytest

from cmpay_async import (
    CharacterSet,
    ConfigurationError,
    Md5Signer,
    RsaSigner,
    RsaVerifier,
    UnexpectedMessageError,
    ValidationError,
    signing_source,
    verify_notification,
)
from cmpay_async._notify import build_notification, encode_notification
from cmpay_async.testing import (
    PUBLIC_TEST_KEY,
    PUBLIC_TEST_MERCHANT,
    notification_defaults,
    sign_notification,
)
from tests.support.helpers import load_vectors, reference_hmac, rsa_key

ORDERS = load_vectors("field_orders.json")["orders"]  # PROTOCOL.md's table, as data

MD5 = Md5Signer(PUBLIC_TEST_KEY)
VALUES = {
    "merchant_id": PUBLIC_TEST_MERCHANT,
    "pay_no": "PN1",
    "return_code": "000000",
    "message": "支付成功",
    "amount": 100,
    "bank_abbr": "ICBC",
    "mobile": "151****0263",
    "order_id": "B1",
    "reserved1": "备注",
    "status": "SUCCESS",
}


def _fields(body: bytes, encoding: str = "utf-8") -> dict[str, str]:
    return dict(parse_qsl(body.decode("ascii"), keep_blank_values=True, encoding=encoding))


@pytest.mark.parametrize("kind", ["PageNotify", "OfflineNotify"])
def test_a_built_notification_is_signed_over_its_fields(kind: str) -> None:
    """type and version filled in, the hmac over the values in order, no certificate (MD5)."""
    fields = build_notification(kind, VALUES, signer=MD5)

    assert (kind, "2.0.0", "MD5") == (fields["type"], fields["version"], fields["signType"])
    assert reference_hmac(signing_source(kind, fields).encode()) == fields["hmac"]
    assert "" == fields.get("serverCert", "")


def test_an_rsa_notification_carries_the_signers_certificate() -> None:
    """serverCert is the signer's certificate ("此项必输"), and the signature verifies."""
    signer = RsaSigner(rsa_key(), merchant_cert="CERT-HEX")
    fields = build_notification("OfflineNotify", VALUES, signer=signer)

    assert "CERT-HEX" == fields["serverCert"]
    RsaVerifier(signer.public_key).verify(signing_source("OfflineNotify", fields), fields["hmac"])


def test_escape_chinese_signs_the_escaped_text_of_chinese_fields_only() -> None:
    """message and reserved1 are escaped (UTF-8) before signing; other fields are not."""
    values = {**VALUES, "reserved1": "备注/1"}
    fields = build_notification("OfflineNotify", values, signer=MD5, escape_chinese=True)

    assert "%E6%94%AF%E4%BB%98%E6%88%90%E5%8A%9F" == fields["message"]
    assert "%E5%A4%87%E6%B3%A8%2F1" == fields["reserved1"]  # "/" is escaped too
    assert ("", "151****0263") == (fields["reserved2"], fields["mobile"])
    assert reference_hmac(signing_source("OfflineNotify", fields).encode()) == fields["hmac"]


def test_a_certificate_given_is_kept() -> None:
    """A serverCert passed in the values is sent as given, not replaced by the signer's."""
    signer = RsaSigner(rsa_key(), merchant_cert="SIGNERS")
    fields = build_notification("PageNotify", {**VALUES, "server_cert": "GIVEN"}, signer=signer)

    assert "GIVEN" == fields["serverCert"]


def test_missing_fields_are_encoded_empty() -> None:
    """encode_notification writes every schema field; those not given are empty."""
    body = encode_notification("PageNotify", {"merchantId": "M1", "orderId": "O1"})

    sent = dict(parse_qsl(body.decode("ascii"), keep_blank_values=True))
    assert ("M1", "O1", "", "") == (
        sent["merchantId"],
        sent["orderId"],
        sent["payNo"],
        sent["hmac"],
    )
    assert [*ORDERS["PageNotify"], "serverCert", "hmac"] == list(sent)


def test_only_notifications_are_built() -> None:
    """Another kind is a ConfigurationError naming it."""
    with pytest.raises(ConfigurationError) as caught:
        build_notification("DirectPayConfirm", VALUES, signer=MD5)

    assert "kind must be PageNotify or OfflineNotify, not 'DirectPayConfirm'" == str(caught.value)


def test_values_the_wire_cannot_carry_are_refused_when_building() -> None:
    """A float amount is a ValidationError naming the field, not a notification."""
    with pytest.raises(ValidationError) as caught:
        build_notification("OfflineNotify", {**VALUES, "amount": 1.5}, signer=MD5)

    assert ("amount",) == caught.value.fields


@pytest.mark.parametrize(
    ("charset", "codec"),
    [(CharacterSet.GBK, "gbk"), (CharacterSet.GB2312, "gb2312"), (CharacterSet.UTF8, "utf-8")],
)
def test_an_encoded_notification_is_in_its_charset_and_schema_order(
    charset: CharacterSet, codec: str
) -> None:
    """Every field in the schema's order, Chinese escaped in the charset asked for."""
    fields = build_notification("PageNotify", VALUES, signer=MD5)

    body = encode_notification("PageNotify", fields, charset=charset)

    assert f"message={quote('支付成功', safe='', encoding=codec)}".encode() in body
    names = [name for name, _ in parse_qsl(body.decode("ascii"), keep_blank_values=True)]
    assert [*ORDERS["PageNotify"], "serverCert", "hmac"] == names
    assert fields == {k: v for k, v in _fields(body, codec).items() if k in fields}


def test_the_default_encoding_is_utf8() -> None:
    """Without a charset the body is UTF-8."""
    fields = build_notification("PageNotify", VALUES, signer=MD5)

    assert b"message=%E6%94%AF%E4%BB%98%E6%88%90%E5%8A%9F" in encode_notification(
        "PageNotify", fields
    )


def _resigned(**changes: str) -> bytes:
    fields = _fields(sign_notification(order_id="R1", amount=5))
    fields.update(changes)
    fields["hmac"] = MD5.sign(signing_source(fields.get("type", "OfflineNotify"), fields))
    return "&".join(f"{k}={quote(v, safe='')}" for k, v in fields.items()).encode()


def test_a_signed_notification_of_another_version_is_refused() -> None:
    """Even correctly signed, version 1.0.0 is not read as 2.0.0."""
    with pytest.raises(UnexpectedMessageError) as caught:
        verify_notification(_resigned(version="1.0.0"), verifier=MD5)

    assert ("version", "version: is not 2.0.0") == (caught.value.field, str(caught.value))


@pytest.mark.parametrize(
    ("kind", "shown"),
    [
        ("DirectPayConfirm", "'DirectPayConfirm'"),
        ("X" * 40, repr("X" * 20)),
        ("", "''"),
        (None, "''"),  # no type field at all
    ],
)
def test_a_payload_that_is_no_notification_is_refused_by_type(kind: str | None, shown: str) -> None:
    """The type is named (at most 20 characters of it)."""
    fields = _fields(sign_notification(order_id="T1", amount=5))
    if kind is None:
        del fields["type"]
    else:
        fields["type"] = kind
    body = "&".join(f"{k}={quote(v, safe='')}" for k, v in fields.items())

    with pytest.raises(UnexpectedMessageError) as caught:
        verify_notification(body, verifier=MD5)

    assert "type" == caught.value.field
    assert f"type: {shown} is not PageNotify or OfflineNotify" == str(caught.value)


def test_another_merchants_notification_is_refused_by_merchant_id() -> None:
    """merchant_id, when given, must be the payload's; when not given, any merchant passes."""
    body = sign_notification(order_id="M1", amount=5, merchant_id="888000000000009")

    assert "888000000000009" == verify_notification(body, verifier=MD5).merchant_id
    with pytest.raises(UnexpectedMessageError) as caught:
        verify_notification(body, verifier=MD5, merchant_id=PUBLIC_TEST_MERCHANT)
    assert "merchantId: is not this merchant's id" == str(caught.value)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"amount": True}, ("amount", "must not be a bool", "type")),
        ({"amount": 12.5}, ("amount", "must be an int of fen, not float", "type")),
        ({"mobile": ["151"]}, ("mobile", "must be a str, not list", "type")),
        (
            {"pay_date": dt.datetime(2026, 11, 26, 9, 30)},
            ("payDate", "datetime must be timezone-aware", "type"),
        ),
    ],
)
def test_a_value_the_wire_cannot_carry_is_named(
    values: dict[str, object], problem: tuple[str, str, str]
) -> None:
    """build_notification refuses a bool, a float, a list or a naive datetime by field."""
    given = {**notification_defaults("OfflineNotify"), **values}

    with pytest.raises(ValidationError) as caught:
        build_notification("OfflineNotify", given, signer=Md5Signer(PUBLIC_TEST_KEY))

    assert [problem] == [(p.field, p.rule, p.code) for p in caught.value.problems]


def test_an_aware_datetime_is_written_in_china_time() -> None:
    """17:30 UTC is 01:30 the next day in China: payDate says so."""
    given = {
        **notification_defaults("OfflineNotify"),
        "pay_date": dt.datetime(2026, 11, 26, 17, 30, tzinfo=dt.timezone.utc),
    }

    fields = build_notification("OfflineNotify", given, signer=Md5Signer(PUBLIC_TEST_KEY))

    assert "20261127013000" == fields["payDate"]


def test_an_int_subclass_is_written_as_its_number() -> None:
    """An amount of an int subclass (an IntEnum, a typed Fen) goes out as its digits."""

    class Fen(int):
        pass

    given = {**notification_defaults("OfflineNotify"), "amount": Fen(1250)}

    fields = build_notification("OfflineNotify", given, signer=Md5Signer(PUBLIC_TEST_KEY))

    assert "1250" == fields["amount"]
