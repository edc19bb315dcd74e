"""Signing sources and the MD5 and RSA schemes, against the real vectors of PROTOCOL.md."""

from __future__ import annotations

import binascii
import datetime as dt
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.x509.oid import NameOID

from cmpay_async import (
    CharacterSet,
    ConfigurationError,
    EncodingError,
    Md5Signer,
    Order,
    RsaSigner,
    RsaVerifier,
    SignatureError,
    SignType,
    build_payment_request,
    decode_payload,
    signing_source,
)
from cmpay_async._signing import inner_digest
from tests.support.helpers import MD5_VECTORS, TEST_KEY, load_vectors, rsa_key

VECTORS = MD5_VECTORS["vectors"]


def _fields(vector: dict[str, Any]) -> dict[str, str]:
    if "body" in vector:
        return decode_payload(vector["body"].encode(), form=True)
    fields: dict[str, str] = vector["fields"]
    return fields


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_source_and_hmac(vector: dict[str, Any]) -> None:
    """Each real vector's source, inner digest and hmac are reproduced exactly."""
    source = signing_source(vector["message"], _fields(vector))
    signer = Md5Signer(TEST_KEY)

    assert vector["source"] == source
    if "inner" in vector:
        assert vector["inner"] == inner_digest(source)
    assert vector["hmac"] == signer.sign(source)
    signer.verify(source, vector["hmac"])
    signer.verify(source, vector["hmac"].upper())


def test_signing_source_joins_in_schema_order_missing_as_empty() -> None:
    """Order of the mapping does not matter, absent fields are empty, unknown ones ignored."""
    fields = {"orderId": "O1", "merchantId": "M", "unknown": "X", "type": "OrderQuery"}

    assert "MOrderQueryO1" == signing_source("OrderQuery", fields)


def test_signing_source_never_includes_hmac_or_certificates() -> None:
    """hmac, merchantCert and serverCert stay out of every source."""
    fields = {"merchantId": "M", "hmac": "H", "merchantCert": "C", "serverCert": "S"}

    assert "M" == signing_source("OrderQuery", fields)
    assert "M" == signing_source("PageNotify", fields)


def test_unknown_message_is_a_configuration_error() -> None:
    """An unknown message name is refused with the known names listed."""
    with pytest.raises(ConfigurationError) as caught:
        signing_source("DirectPay", {})

    assert (
        "unknown message 'DirectPay'; known: DirectPayConfirm, DirectPayConfirmResponse, "
        "OfflineNotify, OrderQuery, OrderQueryResponse, OrderRefund, OrderRefundResponse, "
        "PageNotify, WAPDirectPayConfirm, WAPDirectPayConfirmResponse"
    ) == str(caught.value)


def test_md5_verify_rejects_wrong_and_malformed_signatures() -> None:
    """A changed source, a changed signature or a non-hex signature fails."""
    signer = Md5Signer(TEST_KEY)
    good = signer.sign("abc")

    with pytest.raises(SignatureError):
        signer.verify("abd", good)
    with pytest.raises(SignatureError):
        signer.verify("abc", good[:-1] + ("0" if good[-1] != "0" else "1"))
    for bad in ("", good[:-2], good + "00", "é" * 32):
        with pytest.raises(SignatureError):
            signer.verify("abc", bad)


def test_md5_signature_depends_on_key() -> None:
    """Another key gives another signature for the same source."""
    assert Md5Signer("a-not-the-merchants-key").sign("x") != Md5Signer(
        "b-not-the-merchants-key"
    ).sign("x")


@pytest.mark.parametrize(
    ("key", "match"),
    [("", "empty"), ("k" * 65, "65 bytes"), ("é" * 33, "66 bytes")],
)
def test_md5_refuses_bad_keys(key: str, match: str) -> None:
    """Empty keys and keys over 64 UTF-8 bytes are refused at construction."""
    with pytest.raises(ConfigurationError, match=match):
        Md5Signer(key)


def test_md5_accepts_key_of_exactly_64_bytes() -> None:
    """The real signKey is 64 characters: the boundary is inclusive."""
    assert 64 == len(TEST_KEY.encode())
    Md5Signer(TEST_KEY).sign("x")


def _cert_for(key: Any) -> x509.Certificate:
    import datetime as dt

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway")])
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def _private_forms(key: Any) -> list[Any]:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return [key, pem, pem.decode(), der, der.hex(), der.hex().encode()]


def _public_forms(key: Any) -> list[Any]:
    pub = key.public_key()
    pem = pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cert = _cert_for(key)
    cert_der = cert.public_bytes(serialization.Encoding.DER)
    return [
        pub,
        pem,
        pem.decode(),
        der,
        der.hex(),
        cert,
        cert.public_bytes(serialization.Encoding.PEM),
        cert_der,
        cert_der.hex().upper(),
    ]


@pytest.mark.parametrize("form", range(6))
def test_rsa_signer_loads_every_private_form(form: int) -> None:
    """PEM, DER and hex-of-DER (bytes or str) and key objects all sign the same."""
    key = rsa_key()
    signer = RsaSigner(_private_forms(key)[form])
    signature = signer.sign("源字符串")

    key.public_key().verify(
        binascii.unhexlify(signature),
        "源字符串".encode(),
        padding.PKCS1v15(),
        hashes.SHA1(),
    )
    assert signature == signature.lower()
    assert SignType.RSA is signer.sign_type


@pytest.mark.parametrize("form", range(9))
def test_rsa_verifier_loads_every_public_form(form: int) -> None:
    """Public keys and certificates in PEM, DER and hex verify the signer's signature."""
    key = rsa_key()
    verifier = RsaVerifier(_public_forms(key)[form])
    signature = RsaSigner(key).sign("abc")

    verifier.verify("abc", signature)
    verifier.verify("abc", signature.upper())
    with pytest.raises(SignatureError):
        verifier.verify("abd", signature)
    with pytest.raises(SignatureError):
        verifier.verify("abc", "zz" + signature[2:])


def test_rsa_verifier_rejects_signature_of_another_key() -> None:
    """A signature made with another key does not verify."""
    other = RsaSigner(rsa_key(2048)).sign("abc")

    with pytest.raises(SignatureError):
        RsaVerifier(rsa_key().public_key()).verify("abc", other)


def test_rsa_signer_default_merchant_cert_is_hex_der_public_key() -> None:
    """Without a certificate, merchantCert carries the public key as hex of DER."""
    key = rsa_key()
    signer = RsaSigner(key)

    RsaVerifier(signer.merchant_cert).verify("x", signer.sign("x"))


def test_non_rsa_keys_are_refused() -> None:
    """An EC key in PEM is refused with a ConfigurationError, not loaded."""
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    with pytest.raises(ConfigurationError, match="not an RSA key"):
        RsaSigner(pem)
    with pytest.raises(ConfigurationError, match="not an RSA key"):
        RsaVerifier(pub)


@pytest.mark.parametrize("garbage", [b"", "", b"not a key", "-----BEGIN PRIVATE KEY-----\nxx\n"])
def test_garbage_keys_are_refused(garbage: Any) -> None:
    """Unloadable key material is a ConfigurationError, for signer and verifier."""
    with pytest.raises(ConfigurationError):
        RsaSigner(garbage)
    with pytest.raises(ConfigurationError):
        RsaVerifier(garbage)


CHINESE = load_vectors("chinese_requests.json")


@pytest.mark.parametrize("vector", CHINESE["vectors"], ids=lambda v: v["codec"])
def test_chinese_request_matches_independent_bytes_and_hmac(vector: dict[str, Any]) -> None:
    """GBK, GB2312, UTF-8: the body's bytes are the charset's, the hmac the UTF-8 source's.

    Expected values come from tests/vectors/chinese_requests.json, computed with the standard
    library alone: a GBK body encoded as GB18030 or UTF-8, or a source hashed in GBK, fails.
    """
    fields = vector["fields"]
    order = Order(
        amount=int(fields["amount"]),
        order_id=fields["orderId"],
        product_name=fields["productName"],
        product_desc=fields["productDesc"],
        merchant_abbr=fields["merchantAbbr"],
        reserved1=fields["reserved1"],
        callback_url=fields["callbackUrl"],
        notify_url=fields["notifyUrl"],
    )
    request = build_payment_request(
        order,
        merchant_id=fields["merchantId"],
        request_id=fields["requestId"],
        ip_address=fields["ipAddress"],
        signer=Md5Signer(CHINESE["sign_key"]),
        today=dt.date(2026, 11, 26),
        character_set=CharacterSet(vector["characterSet"]),
    )

    assert vector["source"] == signing_source("DirectPayConfirm", fields)
    assert vector["body"].encode("ascii") == request.body
    label = {"gbk": "GBK", "gb2312": "GB2312", "utf-8": "UTF-8"}[vector["codec"]]
    assert f"application/x-www-form-urlencoded; charset={label}" == request.content_type


def _order_with(desc: str, charset: CharacterSet) -> bytes:
    order = Order(
        amount=100,
        order_id="CS1",
        product_name="T",
        product_desc=desc,
        callback_url="https://shop.example/r",
        notify_url="https://shop.example/n",
    )
    return build_payment_request(
        order,
        merchant_id="888009941120001",
        request_id="R1",
        ip_address="203.0.113.7",
        signer=Md5Signer(TEST_KEY),
        today=dt.date(2026, 11, 26),
        character_set=charset,
    ).body


def test_gbk_is_not_gb18030_and_gb2312_is_not_gbk() -> None:
    """Where the codecs differ: 镕 is GBK (0xE946) but not GB2312; 𠀀 (U+20000) is GB18030
    only. Bytes from urllib's quote_plus with the stdlib codecs, written out."""
    assert b"productDesc=%E9F&" in _order_with("镕", CharacterSet.GBK)
    for text, charset in (("镕", CharacterSet.GB2312), ("\U00020000", CharacterSet.GBK)):
        with pytest.raises(EncodingError) as caught:
            _order_with(text, charset)
        assert ("productDesc",) == caught.value.fields


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (b"k" * 64, "sign_key must be a str"),
        ("   ", "sign_key is empty or only whitespace"),
        (
            "k" * 64 + "\n",
            "sign_key starts or ends with whitespace (a newline from a key file?); "
            "strip it: no CMPay signKey has any",
        ),
    ],
)
def test_an_unusable_sign_key_is_refused_word_for_word(key: object, message: str) -> None:
    """A key of the wrong type, a blank one, or one with a stray newline: said plainly, and
    the key itself is never in the message."""
    with pytest.raises(ConfigurationError) as caught:
        Md5Signer(key)  # type: ignore[arg-type]

    assert message == str(caught.value)
