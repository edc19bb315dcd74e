"""No key material in any repr, str, pickle or exception message."""

from __future__ import annotations

import pickle

import pytest
from cryptography.hazmat.primitives import serialization

from cmpay_async import (
    ConfigurationError,
    Md5Signer,
    RsaSigner,
    RsaVerifier,
    SignatureError,
    ValidationError,
    build_payment_request,
)
from tests.support.helpers import TEST_KEY, TEST_MERCHANT, TODAY, rsa_key, valid_order


def _pem() -> bytes:
    return rsa_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_md5_signer_repr_and_str_hide_the_key() -> None:
    """Neither repr nor str shows any part of the signKey."""
    signer = Md5Signer(TEST_KEY)

    for text in (repr(signer), str(signer), f"{signer!r}"):
        assert TEST_KEY[:8] not in text
        assert "hidden" in text


def test_rsa_signer_repr_hides_the_key() -> None:
    """The RSA signer's repr shows the key size, never the key."""
    signer = RsaSigner(_pem())
    body = b"".join(_pem().split(b"\n")[1:3]).decode()

    assert body[:16] not in repr(signer)
    assert "1024" in repr(signer)
    assert "RsaVerifier(key_size=1024)" == repr(RsaVerifier(rsa_key().public_key()))


def test_signers_refuse_to_be_pickled() -> None:
    """A signer cannot leak its key into a queue or cache by pickling."""
    for signer in (Md5Signer(TEST_KEY), RsaSigner(_pem())):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(signer)


def test_key_errors_do_not_echo_the_key() -> None:
    """A refused key is never quoted in the error."""
    too_long = "S3CRET" * 20
    with pytest.raises(ConfigurationError) as info:
        Md5Signer(too_long)
    assert "S3CRET" not in str(info.value)

    broken = _pem().replace(b"MI", b"XX", 1)
    with pytest.raises(ConfigurationError) as info2:
        RsaSigner(broken)
    assert broken.decode()[40:60] not in str(info2.value)


def test_signature_and_validation_errors_do_not_show_keys_or_hmac() -> None:
    """Errors name fields and rules, not the key or the computed hmac."""
    signer = Md5Signer(TEST_KEY)
    expected = signer.sign("abc")
    with pytest.raises(SignatureError) as info:
        signer.verify("abc", "0" * 32)
    assert expected not in str(info.value)
    assert TEST_KEY not in str(info.value)

    with pytest.raises(ValidationError) as info2:
        build_payment_request(
            valid_order(amount=0, user_token="13800138000"),
            merchant_id=TEST_MERCHANT,
            request_id="R",
            ip_address="1.2.3.4",
            signer=signer,
            today=TODAY,
        )
    assert "13800138000" not in str(info2.value)


def test_prepared_request_and_order_repr_hide_hmac_and_user_token() -> None:
    """The prepared request's repr omits the body and hmac; the order's omits userToken."""
    order = valid_order(user_token="13800138000")
    request = build_payment_request(
        order,
        merchant_id=TEST_MERCHANT,
        request_id="R",
        ip_address="1.2.3.4",
        signer=Md5Signer(TEST_KEY),
        today=TODAY,
    )

    assert request.fields["hmac"] not in repr(request)
    assert "13800138000" not in repr(order)
    assert "13800138000" not in repr(request)
