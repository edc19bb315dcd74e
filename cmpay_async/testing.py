"""Test helpers for merchants: a sandbox gateway and correctly signed notifications.

Test your own handlers against these instead of mocks::

    body = sign_notification(order_id="A1", amount=1250)
    response = await http.post("/cmpay/notify", content=body)
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from ._enums import CharacterSet
from ._models import CHINA_TZ, AmountItems
from ._notify import build_notification, encode_notification
from ._sandbox import (
    CONTROL_TOKEN_HEADER,
    OFFLINE_GAPS_MINUTES,
    PUBLIC_TEST_KEY,
    PUBLIC_TEST_MERCHANT,
    Merchant,
    NotifyAttempt,
    Sandbox,
    SandboxClock,
    SandboxKeyWarning,
    SandboxOrder,
)
from ._schema import REGISTRY, Kind
from ._signing import Md5Signer, Signer

__all__ = [
    "CONTROL_TOKEN_HEADER",
    "OFFLINE_GAPS_MINUTES",
    "PUBLIC_TEST_KEY",
    "PUBLIC_TEST_MERCHANT",
    "Merchant",
    "NotifyAttempt",
    "Sandbox",
    "SandboxClock",
    "SandboxKeyWarning",
    "SandboxOrder",
    "notification_defaults",
    "sign_notification",
]


def notification_defaults(
    kind: str = "OfflineNotify", *, when: dt.datetime | None = None
) -> dict[str, Any]:
    """Values of a paid notification keyed by attribute name: the document's sample, dated now.

    Dates come from ``when`` (default: now, China time); every other value is the registry's
    example, which is the document's section 8.3 sample.
    """
    when = (when or dt.datetime.now(CHINA_TZ)).astimezone(CHINA_TZ)
    values: dict[str, Any] = {}
    for field in REGISTRY[kind].fields:
        if field.kind is Kind.DATETIME:
            values[field.attr] = when
        elif field.kind is Kind.DATE:
            values[field.attr] = when.date()
        elif field.signed:
            values[field.attr] = field.example
    return values


def sign_notification(
    *,
    kind: str = "OfflineNotify",
    signer: Signer | None = None,
    charset: CharacterSet = CharacterSet.UTF8,
    escape_chinese: bool = False,
    **fields: Any,
) -> bytes:
    """A signed PageNotify or OfflineNotify body, as the gateway posts it.

    Fields are keyword arguments by attribute name (``order_id="A1"``, ``amount=1250``); the
    others get realistic defaults (``notification_defaults``) and a fresh ``pay_no``. Given
    an ``amount`` alone, ``amount_items`` follows it as cash. ``signer`` defaults to the
    public test key.
    """
    values = notification_defaults(kind)
    values["pay_no"] = (
        dt.datetime.now(CHINA_TZ).strftime("%Y%m%d") + f"{secrets.randbelow(10**10):010d}"
    )
    if "amount" in fields and "amount_items" not in fields and isinstance(fields["amount"], int):
        values["amount_items"] = AmountItems(cash=fields["amount"])
    values.update(fields)
    signer = signer or Md5Signer(PUBLIC_TEST_KEY)
    wire = build_notification(kind, values, signer=signer, escape_chinese=escape_chinese)
    return encode_notification(kind, wire, charset=charset)
