"""Signature sources and the two signature schemes: double HMAC-MD5 and SHA1withRSA.

See PROTOCOL.md sections 1 and 2. Signers sign a source string; verifiers raise
:class:`SignatureError` on mismatch and never return a bool. No signer shows its key.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import hmac
import operator
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ._enums import SignType
from ._exceptions import ConfigurationError, SignatureError
from ._schema import Schema, schema_for

__all__ = [
    "Md5Signer",
    "RsaSigner",
    "RsaVerifier",
    "Signer",
    "Verifier",
    "inner_digest",
    "signing_source",
    "source_of",
]


def signing_source(message: str, fields: Mapping[str, str]) -> str:
    """Concatenate the signed field values of ``message`` in schema order; absent is empty."""
    return source_of(schema_for(message), fields)


def source_of(schema: Schema, fields: Mapping[str, str]) -> str:
    """``signing_source`` for an already looked-up schema."""
    try:
        # One C-level call when every signed field is present as text (a received message).
        return "".join(schema.plan("signed_values", _signed_values)(fields))
    except (KeyError, TypeError):  # an absent field, or None, signs as empty
        get = fields.get
        return "".join([get(name) or "" for name in schema.signed_names])


def _signed_values(schema: Schema) -> Callable[[Mapping[str, str]], tuple[str, ...]]:
    names = schema.signed_names
    if len(names) == 1:  # itemgetter of one name returns the value, not a tuple
        return lambda fields: (fields[names[0]],)
    return operator.itemgetter(*names)


@runtime_checkable
class Signer(Protocol):
    """Signs a source string for outgoing requests."""

    @property
    def sign_type(self) -> SignType:
        """The ``signType`` this signer produces."""
        ...

    @property
    def merchant_cert(self) -> str:
        """The ``merchantCert`` value to send with requests ("" for MD5)."""
        ...

    def sign(self, source: str) -> str:
        """Return the signature of ``source`` as lowercase hex."""
        ...


@runtime_checkable
class Verifier(Protocol):
    """Checks the signature of a received source string."""

    @property
    def sign_type(self) -> SignType:
        """The ``signType`` this verifier accepts."""
        ...

    def verify(self, source: str, signature: str) -> None:
        """Return if ``signature`` is valid for ``source``, else raise ``SignatureError``."""


_BLOCK = 64
# Stateless parameter objects: made once, not on every signature.
_PKCS1V15 = padding.PKCS1v15()
_SHA1 = hashes.SHA1()
_TRANS_36 = bytes(b ^ 0x36 for b in range(256))
_TRANS_5C = bytes(b ^ 0x5C for b in range(256))


def _pads(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    # HMAC's two MD5 states, precomputed once: each signature then copies them instead of
    # re-hashing the padded key, which roughly halves the cost (PROTOCOL.md section 1).
    padded = key.ljust(_BLOCK, b"\0")
    return hashlib.md5(padded.translate(_TRANS_36)), hashlib.md5(padded.translate(_TRANS_5C))


_EMPTY_INNER, _EMPTY_OUTER = _pads(b"")


# str.encode() is UTF-8: the signed bytes always are, whatever characterSet says (PROTOCOL.md 1).


def inner_digest(source: str) -> str:
    """The first, keyless HMAC-MD5 of the UTF-8 ``source``, as lowercase hex."""
    h = _EMPTY_INNER.copy()
    h.update(source.encode())
    o = _EMPTY_OUTER.copy()
    o.update(h.digest())
    return o.hexdigest()


#: The shortest signKey accepted: the gateway issues 64 characters; anything this short is a
#: placeholder or a truncated paste.
_MIN_KEY = 16


class Md5Signer:
    """The ``MD5`` scheme: HMAC-MD5 with an empty key, then HMAC-MD5 with the signKey.

    It serves as both signer and verifier, since the gateway signs with the same key.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, sign_key: str) -> None:
        if not isinstance(sign_key, str):
            raise ConfigurationError("sign_key must be a str")
        key = sign_key.encode()
        if not sign_key.strip():
            raise ConfigurationError("sign_key is empty or only whitespace")
        if sign_key != sign_key.strip():
            # A key read from a file keeps its newline: every hmac would be wrong (IPS0008).
            raise ConfigurationError(
                "sign_key starts or ends with whitespace (a newline from a key file?); "
                "strip it: no CMPay signKey has any"
            )
        if len(sign_key) < _MIN_KEY:
            raise ConfigurationError(
                f"sign_key has {len(sign_key)} characters; a CMPay signKey has 64 (at least "
                f"{_MIN_KEY} accepted): is this the merchant's signKey?"
            )
        if len(key) > _BLOCK:
            raise ConfigurationError(
                f"sign_key is {len(key)} bytes long; a CMPay signKey has at most {_BLOCK}"
            )
        self._inner, self._outer = _pads(key)

    def __repr__(self) -> str:
        return "Md5Signer(sign_key=<hidden>)"

    def __reduce__(self) -> str:
        # Pickling would carry the key's pad states into queues and caches.
        raise TypeError("Md5Signer cannot be pickled: it holds a secret key")

    @property
    def sign_type(self) -> SignType:
        """Always ``SignType.MD5``."""
        return SignType.MD5

    @property
    def merchant_cert(self) -> str:
        """MD5 requests carry no certificate."""
        return ""

    def sign(self, source: str) -> str:
        """Return the lowercase hex ``hmac`` of ``source``."""
        return self.sign_bytes(source.encode())

    def sign_bytes(self, source: bytes) -> str:
        """The ``hmac`` of a source already encoded (the debugger tries GBK bytes with it)."""
        h = _EMPTY_INNER.copy()
        h.update(source)
        o = _EMPTY_OUTER.copy()
        o.update(h.digest())
        h = self._inner.copy()
        h.update(o.hexdigest().encode())
        o = self._outer.copy()
        o.update(h.digest())
        return o.hexdigest()

    def verify(self, source: str, signature: str) -> None:
        """Raise ``SignatureError`` unless ``signature`` (either hex case) signs ``source``."""
        if _hex_ok(signature, 32):
            # sign_bytes inlined: verification is the hot path of every notification.
            h = _EMPTY_INNER.copy()
            h.update(source.encode())
            o = _EMPTY_OUTER.copy()
            o.update(h.digest())
            h = self._inner.copy()
            h.update(o.hexdigest().encode())
            o = self._outer.copy()
            o.update(h.digest())
            if hmac.compare_digest(o.hexdigest(), signature.lower()):
                return
        raise SignatureError("signature does not match", field="hmac")


def _hex_ok(signature: object, length: int) -> bool:
    return isinstance(signature, str) and signature.isascii() and len(signature) == length


KeyInput = bytes | str


def _key_bytes(data: KeyInput) -> tuple[bytes | None, list[bytes]]:
    """The key as PEM, or else the DER it may be: the bytes themselves, hex or base64 of DER."""
    # Only ASCII can be a key; anything else just has to fail to load (never to encode).
    raw = data.encode(errors="replace") if isinstance(data, str) else bytes(data)
    stripped = raw.strip()
    if stripped.startswith(b"-----BEGIN"):
        return stripped, []
    ders: list[bytes] = []
    with contextlib.suppress(ValueError):  # binascii.Error is a ValueError
        ders.append(binascii.unhexlify(b"".join(stripped.split())))
    if isinstance(data, str):
        with contextlib.suppress(ValueError):
            ders.append(binascii.a2b_base64(stripped))
    else:
        ders.append(raw)
    return None, ders


class RsaSigner:
    """The ``RSA`` scheme for requests: SHA1withRSA (PKCS#1 v1.5) with the merchant's key."""

    __slots__ = ("_cert", "_key")

    def __init__(
        self,
        private_key: KeyInput | rsa.RSAPrivateKey,
        *,
        password: bytes | None = None,
        merchant_cert: str | None = None,
    ) -> None:
        self._key = _load_private(private_key, password)
        if merchant_cert is None:
            # Without an issued certificate, send the public key (hex of DER), which is what
            # the field holds ("商户证书公钥").
            merchant_cert = (
                self._key.public_key()
                .public_bytes(
                    serialization.Encoding.DER,
                    serialization.PublicFormat.SubjectPublicKeyInfo,
                )
                .hex()
            )
        self._cert = merchant_cert

    def __repr__(self) -> str:
        return f"RsaSigner(key_size={self._key.key_size}, private_key=<hidden>)"

    def __reduce__(self) -> str:
        raise TypeError("RsaSigner cannot be pickled: it holds a private key")

    @property
    def sign_type(self) -> SignType:
        """Always ``SignType.RSA``."""
        return SignType.RSA

    @property
    def merchant_cert(self) -> str:
        """The ``merchantCert`` value sent with requests."""
        return self._cert

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        """The public half, e.g. to configure a test gateway."""
        return self._key.public_key()

    def sign(self, source: str) -> str:
        """Return the lowercase hex SHA1withRSA signature of the UTF-8 ``source``."""
        return self._key.sign(source.encode(), _PKCS1V15, _SHA1).hex()


class RsaVerifier:
    """Verifies SHA1withRSA signatures with the gateway public key the merchant configured."""

    __slots__ = ("_key",)

    def __init__(self, public_key: KeyInput | rsa.RSAPublicKey | x509.Certificate) -> None:
        self._key = _load_public(public_key)

    def __repr__(self) -> str:
        return f"RsaVerifier(key_size={self._key.key_size})"

    @property
    def sign_type(self) -> SignType:
        """Always ``SignType.RSA``."""
        return SignType.RSA

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        """The configured gateway public key."""
        return self._key

    def verify(self, source: str, signature: str) -> None:
        """Raise ``SignatureError`` unless ``signature`` (hex) signs ``source``."""
        self.verify_bytes(source.encode(), signature)

    def verify_bytes(self, source: bytes, signature: str) -> None:
        """``verify`` over a source already encoded (the debugger tries GBK bytes with it)."""
        try:
            # fromhex refuses anything but hex digits (and spaces) with ValueError, and a
            # non-str with TypeError: no separate pre-check on this path.
            raw = bytes.fromhex(signature)
            self._key.verify(raw, source, _PKCS1V15, _SHA1)
        except (InvalidSignature, ValueError, TypeError):
            raise SignatureError("signature does not match", field="hmac") from None


def _load_private(key: KeyInput | rsa.RSAPrivateKey, password: bytes | None) -> rsa.RSAPrivateKey:
    if isinstance(key, rsa.RSAPrivateKey):
        return key
    # Untyped callers may pass anything: refuse it plainly rather than fail inside cryptography.
    if not isinstance(key, (bytes, str)) or not key:  # type: ignore[redundant-expr]
        raise ConfigurationError("private_key must be a non-empty PEM, DER or hex-of-DER")
    pem, ders = _key_bytes(key)
    for data in [pem] if pem is not None else ders:
        try:
            if pem is not None:
                loaded = serialization.load_pem_private_key(data, password)
            else:
                loaded = serialization.load_der_private_key(data, password)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ConfigurationError("private_key is not an RSA key")
        return loaded
    # Never echo the input: it is a secret.
    raise ConfigurationError("private_key is not a loadable RSA private key (PEM, DER or hex)")


def _load_public(key: KeyInput | rsa.RSAPublicKey | x509.Certificate) -> rsa.RSAPublicKey:
    if isinstance(key, x509.Certificate):
        key = key.public_key()  # type: ignore[assignment]
    if isinstance(key, rsa.RSAPublicKey):
        return key
    if not isinstance(key, (bytes, str)) or not key:
        raise ConfigurationError("public_key must be a non-empty PEM, DER or hex-of-DER")
    pem, ders = _key_bytes(key)
    loaders = (
        (serialization.load_pem_public_key, x509.load_pem_x509_certificate)
        if pem is not None
        else (serialization.load_der_public_key, x509.load_der_x509_certificate)
    )
    for data in [pem] if pem is not None else ders:
        for loader in loaders:
            try:
                loaded = loader(data)
            except (ValueError, TypeError, UnsupportedAlgorithm):
                continue
            public = loaded.public_key() if isinstance(loaded, x509.Certificate) else loaded
            if not isinstance(public, rsa.RSAPublicKey):
                raise ConfigurationError("public_key is not an RSA key")
            return public
    raise ConfigurationError(
        "public_key is not a loadable RSA public key or certificate (PEM, DER or hex)"
    )
