"""RSA key material in every form a merchant's files come in, and every way it can be wrong.

Expectations come from cryptography directly (the test serialises and verifies with it), never
from the library: a signature must verify under the test's own public key, a default
``merchantCert`` must equal the test's own hex of DER.
"""

from __future__ import annotations

import base64
import pickle
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from cmpay_async import ConfigurationError, Md5Signer, RsaSigner, RsaVerifier, SignatureError
from cmpay_async.testing import PUBLIC_TEST_KEY
from tests.support.helpers import rsa_key

from .test_signing import _cert_for

KEY = rsa_key()
PUBLIC_DER = KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
)
PRIVATE_DER = KEY.private_bytes(
    serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
PRIVATE_PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
CERT_DER = _cert_for(KEY).public_bytes(serialization.Encoding.DER)


def _lines(text: str, width: int = 64, end: str = "\n") -> str:
    return end.join(text[i : i + width] for i in range(0, len(text), width))


def _b64(der: bytes) -> str:
    return base64.b64encode(der).decode()


PRIVATE_FORMS: dict[str, Any] = {
    "pem-padded-str": "\n  " + PRIVATE_PEM.decode() + "\n\n",
    "pem-padded-bytes": b"\r\n" + PRIVATE_PEM + b"  \n",
    "der-pkcs8": PRIVATE_DER,
    "hex-wrapped-str": _lines(PRIVATE_DER.hex()),
    "hex-crlf-upper-bytes": _lines(PRIVATE_DER.hex().upper(), end="\r\n").encode(),
    "hex-spaced-bytes": " ".join(_lines(PRIVATE_DER.hex(), 2).split()).encode(),
    "base64-str": _b64(PRIVATE_DER),
    "base64-wrapped-str": _lines(_b64(PRIVATE_DER)),
}

PUBLIC_FORMS: dict[str, Any] = {
    "der-bytes": PUBLIC_DER,
    "hex-wrapped-str": _lines(PUBLIC_DER.hex()),
    "hex-upper-bytes": PUBLIC_DER.hex().upper().encode(),
    "base64-str": _b64(PUBLIC_DER),
    "cert-base64-str": _lines(_b64(CERT_DER)),
    "cert-hex-bytes": CERT_DER.hex().encode(),
    "cert-der-bytes": CERT_DER,
}


def _verifies_under_the_key(signature: str, source: bytes) -> None:
    KEY.public_key().verify(bytes.fromhex(signature), source, padding.PKCS1v15(), hashes.SHA1())


@pytest.mark.parametrize("form", PRIVATE_FORMS.values(), ids=PRIVATE_FORMS.keys())
def test_every_private_form_signs_with_that_key(form: Any) -> None:
    """Every private form signs with that key."""
    signature = RsaSigner(form).sign("商户订单")

    _verifies_under_the_key(signature, "商户订单".encode())


@pytest.mark.parametrize("form", PUBLIC_FORMS.values(), ids=PUBLIC_FORMS.keys())
def test_every_public_form_verifies_that_keys_signatures(form: Any) -> None:
    """Every public form verifies that keys signatures."""
    signature = KEY.sign("支付".encode(), padding.PKCS1v15(), hashes.SHA1()).hex()
    verifier = RsaVerifier(form)

    verifier.verify("支付", signature)
    with pytest.raises(SignatureError):
        verifier.verify("支付!", signature)


def test_an_encrypted_pem_needs_its_password() -> None:
    """An encrypted pem needs its password."""
    pem = KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret-pass"),
    )

    _verifies_under_the_key(RsaSigner(pem, password=b"s3cret-pass").sign("x"), b"x")
    for wrong in (None, b"wrong-pass"):
        with pytest.raises(ConfigurationError) as caught:
            RsaSigner(pem, password=wrong)
        assert "private_key is not a loadable RSA private key (PEM, DER or hex)" == str(
            caught.value
        )


@pytest.mark.parametrize("encode", [bytes, bytes.hex], ids=["der", "hex-of-der"])
def test_an_encrypted_der_needs_its_password_too(encode: Any) -> None:
    """PKCS#8 DER encrypted with a password loads with it, in DER or hex of DER."""
    der = KEY.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"der-pass-123"),
    )

    signer = RsaSigner(encode(der), password=b"der-pass-123")

    _verifies_under_the_key(signer.sign("x"), b"x")


def test_the_default_merchant_cert_is_the_hex_of_the_public_der() -> None:
    """The default merchant cert is the hex of the public der."""
    assert PUBLIC_DER.hex() == RsaSigner(KEY).merchant_cert
    assert PUBLIC_DER.hex() == RsaSigner(PRIVATE_PEM).merchant_cert
    assert "MY-ISSUED-CERT" == RsaSigner(KEY, merchant_cert="MY-ISSUED-CERT").merchant_cert


def test_the_public_half_is_the_keys() -> None:
    """The public half is the keys."""
    public = RsaSigner(PRIVATE_DER).public_key
    assert KEY.public_key().public_numbers() == public.public_numbers()
    assert KEY.public_key().public_numbers() == RsaVerifier(CERT_DER).public_key.public_numbers()


@pytest.mark.parametrize(
    "given",
    [b"", "", 12345, None, ["pem"]],
    ids=["empty-bytes", "empty-str", "int", "None", "list"],
)
def test_what_is_not_key_material_is_refused_plainly(given: Any) -> None:
    """What is not key material is refused plainly."""
    with pytest.raises(ConfigurationError) as private:
        RsaSigner(given)
    with pytest.raises(ConfigurationError) as public:
        RsaVerifier(given)

    assert "private_key must be a non-empty PEM, DER or hex-of-DER" == str(private.value)
    assert "public_key must be a non-empty PEM, DER or hex-of-DER" == str(public.value)


@pytest.mark.parametrize(
    "given",
    [
        "not a key",
        b"\x30\x03\x02\x01\x00",
        "abcd",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n",
        "密钥30820122",
        "30\udc8082",
    ],
    ids=["words", "short-der", "short-hex", "broken-pem", "chinese", "lone-surrogate"],
)
def test_what_does_not_load_is_refused_without_echoing_it(given: Any) -> None:
    """What does not load is refused without echoing it."""
    with pytest.raises(ConfigurationError) as private:
        RsaSigner(given)
    with pytest.raises(ConfigurationError) as public:
        RsaVerifier(given)

    assert "private_key is not a loadable RSA private key (PEM, DER or hex)" == str(private.value)
    assert "public_key is not a loadable RSA public key or certificate (PEM, DER or hex)" == str(
        public.value
    )


def test_a_public_key_is_not_a_private_key() -> None:
    """A public key is not a private key."""
    with pytest.raises(ConfigurationError) as caught:
        RsaSigner(PUBLIC_DER)
    assert "private_key is not a loadable RSA private key (PEM, DER or hex)" == str(caught.value)


@pytest.mark.parametrize("encoding", ["der", "hex", "pem"])
def test_keys_of_another_algorithm_are_refused_by_name(encoding: str) -> None:
    """Keys of another algorithm are refused by name."""
    other = ec.generate_private_key(ec.SECP256R1())
    private = other.private_bytes(
        serialization.Encoding.PEM if encoding == "pem" else serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = other.public_key().public_bytes(
        serialization.Encoding.PEM if encoding == "pem" else serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    cert = _cert_for(other).public_bytes(
        serialization.Encoding.PEM if encoding == "pem" else serialization.Encoding.DER
    )
    if encoding == "hex":
        private, public, cert = private.hex().encode(), public.hex().encode(), cert.hex().encode()

    with pytest.raises(ConfigurationError) as signer:
        RsaSigner(private)
    assert "private_key is not an RSA key" == str(signer.value)
    for given in (public, cert):
        with pytest.raises(ConfigurationError) as verifier:
            RsaVerifier(given)
        assert "public_key is not an RSA key" == str(verifier.value)


def test_the_signer_hides_its_key_and_refuses_to_be_pickled() -> None:
    """The signer hides its key and refuses to be pickled."""
    signer = RsaSigner(KEY)
    secret_digits = str(KEY.private_numbers().d)[:12]

    assert "RsaSigner(key_size=1024, private_key=<hidden>)" == repr(signer)
    assert "RsaVerifier(key_size=1024)" == repr(RsaVerifier(PUBLIC_DER))
    with pytest.raises(TypeError) as caught:
        pickle.dumps(signer)
    assert "RsaSigner cannot be pickled: it holds a private key" == str(caught.value)
    assert secret_digits not in repr(signer)


@pytest.mark.parametrize(
    "signature",
    ["", "zz", "0" * 256, None, 12],
    ids=["empty", "not-hex", "zeros", "None", "int"],
)
def test_a_bad_signature_is_a_signature_error_on_hmac(signature: Any) -> None:
    """A bad signature is a signature error on hmac."""
    with pytest.raises(SignatureError) as caught:
        RsaVerifier(PUBLIC_DER).verify_bytes(b"x", signature)

    assert "hmac" == caught.value.field
    assert "hmac: signature does not match" == str(caught.value)


def test_verify_bytes_checks_the_bytes_given() -> None:
    """Verify bytes checks the bytes given."""
    gbk = "商户".encode("gbk")
    signature = KEY.sign(gbk, padding.PKCS1v15(), hashes.SHA1()).hex()
    verifier = RsaVerifier(KEY.public_key())

    verifier.verify_bytes(gbk, signature)
    with pytest.raises(SignatureError):
        verifier.verify("商户", signature)


def test_a_key_object_is_used_as_it_is() -> None:
    """A key object is used as it is."""
    other: rsa.RSAPrivateKey = rsa_key()
    signature = RsaSigner(other).sign("x")

    other.public_key().verify(bytes.fromhex(signature), b"x", padding.PKCS1v15(), hashes.SHA1())
    RsaVerifier(_cert_for(other)).verify("x", signature)


def test_the_md5_signer_hides_its_key_and_refuses_to_be_pickled() -> None:
    """The repr shows no key; pickling (into a queue, a cache) is refused with the reason."""
    signer = Md5Signer(PUBLIC_TEST_KEY)

    assert "Md5Signer(sign_key=<hidden>)" == repr(signer)
    with pytest.raises(TypeError) as caught:
        pickle.dumps(signer)
    assert "Md5Signer cannot be pickled: it holds a secret key" == str(caught.value)
