"""The baselines the library is measured against, written plainly so a reader can check them.

- crypto floor: the least work the signature itself needs (precomputed HMAC pads, hashlib).
- naive port: what the vendor's demo SDKs do, ported literally to Python.
"""

from __future__ import annotations

import hashlib
import hmac
from binascii import a2b_qp
from urllib.parse import parse_qsl, unquote_plus, urlencode

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_BLOCK = 64


class FloorMd5:
    """Double HMAC-MD5 with both keys' pad states computed once: nothing else."""

    def __init__(self, key: str) -> None:
        def pads(k: bytes) -> tuple[object, object]:
            k = k.ljust(_BLOCK, b"\0")
            return (
                hashlib.md5(bytes(b ^ 0x36 for b in k)),
                hashlib.md5(bytes(b ^ 0x5C for b in k)),
            )

        self.ei, self.eo = pads(b"")
        self.ki, self.ko = pads(key.encode())

    def sign(self, source: str) -> str:
        """The hmac of ``source``: four MD5 state copies and updates."""
        h = self.ei.copy()  # type: ignore[attr-defined]
        h.update(source.encode())
        o = self.eo.copy()  # type: ignore[attr-defined]
        o.update(h.digest())
        h = self.ki.copy()  # type: ignore[attr-defined]
        h.update(o.hexdigest().encode())
        o = self.ko.copy()  # type: ignore[attr-defined]
        o.update(h.digest())
        return str(o.hexdigest())


def floor_verify_notification(body: bytes, floor: FloorMd5, order: tuple[str, ...]) -> bool:
    """Split, unquote where needed, join, floor HMAC, constant-time compare: no decoding
    rules, no grammar, no typed result. The least any verifier of a form body must do."""
    fields = {}
    for part in body.decode().split("&"):
        name, _, value = part.partition("=")
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        fields[name] = value
    source = "".join([fields.get(name, "") for name in order])
    return hmac.compare_digest(floor.sign(source), fields["hmac"])


def floor_verify_notification_qp(body: bytes, floor: FloorMd5, order: tuple[str, ...]) -> bool:
    """The floor with the cheapest unquote known (and used by the library for well-formed
    escapes): percent-escapes as quoted-printable's, decoded by ``binascii.a2b_qp`` in C."""
    fields = {}
    for part in body.decode().split("&"):
        name, _, value = part.partition("=")
        if "%" in value or "+" in value:
            value = a2b_qp(value.replace("+", " ").replace("%", "=")).decode()
        fields[name] = value
    source = "".join([fields.get(name, "") for name in order])
    return hmac.compare_digest(floor.sign(source), fields["hmac"])


# -- naive port of the vendor demos ---------------------------------------------------------------

NAIVE_REQUEST_ORDER = [
    "characterSet", "callbackUrl", "notifyUrl", "ipAddress", "merchantId", "requestId",
    "signType", "type", "version", "amount", "bankAbbr", "currency", "orderDate", "orderId",
    "merAcDate", "period", "periodUnit", "merchantAbbr", "productDesc", "productId",
    "productName", "productNum", "reserved1", "reserved2", "userToken", "showUrl", "couponsFlag",
]  # fmt: skip

NAIVE_NOTIFY_ORDER = [
    "merchantId", "payNo", "returnCode", "message", "signType", "type", "version", "amount",
    "amtItem", "bankAbbr", "mobile", "orderId", "payDate", "accountDate", "reserved1",
    "reserved2", "status", "orderDate", "fee",
]  # fmt: skip


def naive_hmac(source: str, key: str) -> str:
    """The demos' signature: hmac.new twice, nothing precomputed."""
    inner = hmac.new(b"", source.encode("utf-8"), hashlib.md5).hexdigest()
    return hmac.new(key.encode("utf-8"), inner.encode("utf-8"), hashlib.md5).hexdigest()


def naive_build_order(values: dict[str, str], key: str) -> bytes:
    """A dict of values joined in order, signed, urlencoded: no validation at all."""
    source = "".join(values.get(name, "") for name in NAIVE_REQUEST_ORDER)
    body = dict(values)
    body["hmac"] = naive_hmac(source, key)
    return urlencode(body, encoding="utf-8").encode("ascii")


def naive_verify_notification(body: bytes, key: str) -> dict[str, str] | None:
    """parse_qsl, join, hmac.new twice, compare: the fields as a dict, or None."""
    fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    source = "".join(fields.get(name, "") for name in NAIVE_NOTIFY_ORDER)
    if naive_hmac(source, key) != fields.get("hmac"):
        return None
    return fields


def bare_rsa_sign(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    """cryptography's own call."""
    return key.sign(data, padding.PKCS1v15(), hashes.SHA1())


def bare_rsa_verify(key: rsa.RSAPublicKey, signature: bytes, data: bytes) -> None:
    """cryptography's own call."""
    key.verify(signature, data, padding.PKCS1v15(), hashes.SHA1())
