"""Payment notifications: verify what the gateway posts, build what it would post, answer it.

``verify_notification`` is the security boundary of the library: it returns a typed
notification only after the signature verified with the merchant's configured verifier, and
raises for anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

import attrs

from ._codec import Payload, decode_payload, encode_form, typed_values, wire_fields
from ._enums import CharacterSet
from ._exceptions import (
    ConfigurationError,
    DecodeError,
    UnexpectedMessageError,
    ValidationError,
)
from ._models import OfflineNotify, PageNotify
from ._protocol import verify_fields
from ._schema import REGISTRY, VERSION
from ._signing import Signer, Verifier, source_of

__all__ = [
    "Ack",
    "ack",
    "build_notification",
    "encode_notification",
    "nack",
    "verify_notification",
]

_MODELS: Mapping[str, type[PageNotify] | type[OfflineNotify]] = {
    "PageNotify": PageNotify,
    "OfflineNotify": OfflineNotify,
}


def verify_notification(
    payload: Payload,
    *,
    verifier: Verifier,
    merchant_id: str | None = None,
    charset: str | None = None,
) -> PageNotify | OfflineNotify:
    """Verify a PageNotify or OfflineNotify and return it typed; raise if anything is off.

    ``payload`` is the raw body (bytes or str), a query string, or the mapping a framework
    gives (it is not mutated). Bytes are read as UTF-8 unless ``charset`` says otherwise or
    they are not UTF-8 (then GBK). ``merchant_id``, when given, must match the payload's.
    """
    if isinstance(payload, (bytes, str)):
        _check_shape(payload)
    fields = decode_payload(payload, form=True, charset=charset)
    kind = fields.get("type", "")
    model = _MODELS.get(kind)
    if model is None:
        raise UnexpectedMessageError(
            f"{kind[:20]!r} is not PageNotify or OfflineNotify", field="type"
        )
    schema = REGISTRY[kind]
    verified = verify_fields(schema, fields, verifier)
    if verified.get("version") != VERSION:
        raise UnexpectedMessageError(f"is not {VERSION}", field="version")
    if merchant_id is not None and verified.get("merchantId") != merchant_id:
        raise UnexpectedMessageError("is not this merchant's id", field="merchantId")
    return model(**typed_values(schema, verified, model))


def _check_shape(payload: bytes | str) -> None:
    """Name the usual wrong inputs (JSON, a page, a URL) before they fail as a bad signature."""
    head = payload[:16].lstrip()
    if isinstance(head, bytes):
        head = head.decode(errors="replace")  # only ASCII marks are looked for
    why = None
    if head.startswith(("{", "[")):
        why = "is JSON, not a form body: the gateway posts key=value&...; pass the raw body"
    elif head.startswith("<"):
        why = "is an HTML or XML page, not a form body: pass the raw body the gateway posted"
    elif head.lower().startswith(("http://", "https://")):
        why = "is a whole URL: pass only its query string (the part after '?')"
    elif head.startswith("?"):
        why = "starts with '?': pass the query string without it"
    if why is not None:
        raise DecodeError(f"the notification payload {why}")


def build_notification(
    kind: str, values: Mapping[str, object], *, signer: Signer, escape_chinese: bool = False
) -> dict[str, str]:
    """Signed wire fields of a notification from typed values keyed by attribute name.

    The gateway's side of ``verify_notification``: used by the sandbox and by
    ``cmpay_async.testing.sign_notification``. ``escape_chinese`` percent-encodes the
    Chinese-capable fields (UTF-8) before signing, as some gateway deployments do: the hmac
    then covers the escaped text, which is what the vendor's PHP and Java demos verify after
    their one form decode; ``verify_notification`` accepts it and returns the decoded text.
    """
    if kind not in _MODELS:
        raise ConfigurationError(f"kind must be PageNotify or OfflineNotify, not {kind!r}")
    schema = REGISTRY[kind]
    fields, problems = wire_fields(schema, {**values, "sign_type": signer.sign_type})
    if problems:
        raise ValidationError(problems)
    if escape_chinese:
        for field in schema.fields:
            if field.utf8_escaped and fields.get(field.wire):
                fields[field.wire] = quote(fields[field.wire], safe="")
    cert = schema.cert_field
    if cert is not None and not fields[cert.wire]:
        # RSA payloads carry the signer's certificate ("此项必输"); verifiers never use it.
        fields[cert.wire] = signer.merchant_cert
    fields[schema.signature_field.wire] = signer.sign(source_of(schema, fields))
    return fields


def encode_notification(
    kind: str, fields: Mapping[str, str], *, charset: CharacterSet = CharacterSet.UTF8
) -> bytes:
    """The form body the gateway posts for a notification, in ``charset``."""
    schema = REGISTRY[kind]
    return encode_form(((f.wire, fields.get(f.wire, "")) for f in schema.fields), charset)


@attrs.frozen(kw_only=True)
class Ack:
    """A framework-neutral HTTP answer to a notification."""

    status_code: int = 200
    headers: Mapping[str, str] = attrs.field(
        factory=lambda: {"content-type": "text/plain; charset=utf-8"}
    )
    body: bytes = b"SUCCESS"


def ack() -> Ack:
    """The answer that tells the gateway the notification was processed: ``SUCCESS``."""
    return Ack()


def nack() -> Ack:
    """An answer that makes the gateway send the OfflineNotify again later."""
    return Ack(body=b"FAIL")
