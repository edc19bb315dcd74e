"""What the sandbox keeps: its merchants, their orders and every notification attempt."""

from __future__ import annotations

from typing import Any

import attrs

from cmpay_async._enums import CharacterSet
from cmpay_async._schema import REGISTRY
from cmpay_async._signing import Md5Signer, RsaSigner, Signer, Verifier
from cmpay_async._testkeys import PUBLIC_TEST_KEY

__all__ = [
    "Merchant",
    "NotifyAttempt",
    "SandboxKeyWarning",
    "SandboxOrder",
    "holds_another_md5_key",
    "mask",
]


class SandboxKeyWarning(UserWarning):
    """A sandbox was given a signKey other than the public test key: it may be a real one."""


@attrs.define(kw_only=True)
class Merchant:
    """A merchant account of the sandbox: its id and how its messages are signed."""

    merchant_id: str
    #: Signs the sandbox's answers and notifications to this merchant.
    signer: Signer = attrs.field(repr=False)
    #: Checks this merchant's requests.
    verifier: Verifier = attrs.field(repr=False)
    name: str = "Sandbox merchant"

    @classmethod
    def md5(cls, merchant_id: str, sign_key: str, **kw: Any) -> Merchant:
        """A merchant that signs with a signKey (MD5 both ways)."""
        signer = Md5Signer(sign_key)
        return cls(merchant_id=merchant_id, signer=signer, verifier=signer, **kw)

    @classmethod
    def rsa(
        cls, merchant_id: str, *, merchant_public: Verifier, gateway: RsaSigner, **kw: Any
    ) -> Merchant:
        """A merchant that signs with RSA: its public key checks requests, ``gateway`` signs."""
        return cls(merchant_id=merchant_id, signer=gateway, verifier=merchant_public, **kw)


@attrs.define(kw_only=True)
class NotifyAttempt:
    """One delivery of a notification, and what the merchant answered."""

    kind: str
    attempt: int
    #: Virtual minute of the sandbox clock when it was sent.
    minute: float
    status: int | None
    answer: str
    forged: bool = False
    duplicate: bool = False


@attrs.define(kw_only=True)
class SandboxOrder:
    """An order the sandbox accepted, with its state and notification history."""

    merchant_id: str
    order_id: str
    request_id: str
    session_id: str
    fields: dict[str, str]
    state: str = "pending"  # pending, paid, failed
    pay_no: str = ""
    pay_date: str = ""
    refunded: int = 0
    #: idle, delivering, acknowledged (SUCCESS received), exhausted (8 attempts failed)
    delivery: str = "idle"
    attempts: list[NotifyAttempt] = attrs.field(factory=list)

    @property
    def charset(self) -> CharacterSet:
        """The order's ``characterSet``: its notifications are encoded in it (GBK if empty)."""
        return CharacterSet(self.fields.get("characterSet") or CharacterSet.GBK.value)

    @property
    def amount(self) -> int:
        """Order amount in fen."""
        return int(self.fields["amount"])

    def to_json(self) -> dict[str, Any]:
        """The order as shown by ``GET /_sandbox/orders``: no hmac, personal data masked."""
        data = attrs.asdict(self)
        schema = REGISTRY[self.fields["type"]]
        hidden = {schema.signature_field.wire}
        sensitive = {f.wire for f in schema.fields if f.sensitive}
        data["fields"] = {
            k: (mask(v) or "****" if k in sensitive and v else v)
            for k, v in self.fields.items()
            if k not in hidden
        }
        data["amount"] = self.amount
        return data


def holds_another_md5_key(merchant: Merchant) -> bool:
    """True when the merchant signs with an MD5 signKey other than the public test key.

    Only MD5 keys are shared secrets: for an RSA merchant the sandbox holds the merchant's
    public key and a gateway key of the developer's own making, neither a merchant's secret.
    """
    signer = merchant.signer
    if not isinstance(signer, Md5Signer):
        return False
    # The keys are hidden inside the signers: two keys are the same when they sign alike.
    probe = "cmpay-sandbox-key-probe"
    return signer.sign(probe) != _PUBLIC_TEST_SIGNER.sign(probe)


_PUBLIC_TEST_SIGNER = Md5Signer(PUBLIC_TEST_KEY)


def mask(user_token: str) -> str:
    """The payer's phone as the gateway reports it: first three and last four digits."""
    if len(user_token) == 11 and user_token.isdigit():
        return f"{user_token[:3]}****{user_token[-4:]}"
    return ""
