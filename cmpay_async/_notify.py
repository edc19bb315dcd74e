"""Payment notifications: verify what the gateway posts, build what it would post, answer it.

``verify_notification`` is the security boundary of the library: it returns a typed
notification only after the signature verified with the merchant's configured verifier, and
raises for anything else.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Collection, Mapping
from urllib.parse import quote

import attrs

from ._binding import reader, values_reader, wire_fields
from ._codec import (
    MAX_PAYLOAD,
    OrderedSplit,
    Payload,
    _split,
    decode_payload,
    encode_form,
    ordered_split,
)
from ._enums import CharacterSet
from ._exceptions import (
    CmpayError,
    ConfigurationError,
    DecodeError,
    SignatureError,
    UnexpectedMessageError,
    ValidationError,
)
from ._models import OfflineNotify, PageNotify
from ._schema import REGISTRY, VERSION, Schema
from ._signing import Signer, Verifier, source_of
from ._verify import verify_fields

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
    order_id_pattern: str | re.Pattern[str] | None = None,
    extra_bank_codes: Collection[str] = (),
) -> PageNotify | OfflineNotify:
    """Verify a PageNotify or OfflineNotify and return it typed; raise if anything is off.

    ``payload`` is the raw body (bytes or str), a query string, or the mapping a framework
    gives (it is not mutated). Without ``charset``, bytes are read in each charset the
    gateway uses (UTF-8, GBK, GB2312) and the reading whose signature verifies is the one
    accepted. ``merchant_id``, when given, must match the payload's: always give it, as it
    fixes the boundary between merchantId and payNo in the signed string.
    ``order_id_pattern`` is the form of your order ids (a regular expression the whole
    orderId must match): declare it to close the one boundary the document leaves open
    (a bank code beside a letter-led order id; see docs/guarantees.md).
    ``extra_bank_codes`` admits bank codes newer than appendix 9.1.
    """
    plain = isinstance(payload, (bytes, str))
    if plain:
        note = _usual(payload, charset or "utf-8", verifier, merchant_id, extra_bank_codes)  # type: ignore[arg-type]
        if note is not None and (
            order_id_pattern is None or re.fullmatch(order_id_pattern, note.order_id)
        ):
            return note
        # Only now: none of the wrong shapes it names is the usual body.
        _check_shape(payload)  # type: ignore[arg-type]  # narrowed by ``plain``
    return _in_turn(payload, charset, verifier, merchant_id, order_id_pattern, extra_bank_codes)


def _in_turn(
    payload: Payload,
    charset: str | None,
    verifier: Verifier,
    merchant_id: str | None,
    order_id_pattern: str | re.Pattern[str] | None,
    extra_bank_codes: Collection[str],
) -> PageNotify | OfflineNotify:
    """``verify_notification`` of any payload: read in each candidate charset in turn."""
    if charset is not None or isinstance(payload, Mapping):
        candidates: tuple[str | None, ...] = (charset,)
    else:
        candidates = _CANDIDATE_CHARSETS
    unreadable: DecodeError | None = None
    forged: SignatureError | None = None
    tried: list[dict[str, str]] = []
    # A bytes body within the size limit is split straight away (decode_payload's checks are
    # made once here); any problem goes through decode_payload, which names it.
    direct = type(payload) is bytes and 0 < len(payload) <= MAX_PAYLOAD and not payload.isspace()
    for candidate in candidates:
        try:
            if direct and candidate is not None:
                try:
                    fields = _split(payload, candidate, form=True)  # type: ignore[arg-type]
                except (UnicodeDecodeError, LookupError, CmpayError):
                    fields = decode_payload(payload, form=True, charset=candidate)
            else:
                fields = decode_payload(payload, form=True, charset=candidate)
        except DecodeError as exc:
            unreadable = unreadable or exc
            continue  # not text in this charset: the next one may read it
        if fields in tried:
            continue  # the same text as a charset already tried (ASCII reads alike)
        tried.append(fields)
        try:
            schema, verified = _verified(fields, verifier)
        except SignatureError as exc:
            # The signature decides which charset was meant: only the text the gateway
            # signed verifies, so trying the others cannot accept anything it did not sign.
            forged = forged or exc
            continue
        return _typed(schema, verified, merchant_id, order_id_pattern, extra_bank_codes)
    # Every candidate was tried: a reading that did not verify says more than one that
    # could not be decoded at all.
    raise forged or unreadable or DecodeError("the notification payload could not be read")


#: The charsets the gateway encodes notifications in (characterSet 02, 00, 01), in the order
#: they are tried when none is declared; UTF-8 first, as most bodies are ASCII or UTF-8.
_CANDIDATE_CHARSETS = ("utf-8", "gbk", "gb2312")


def _verified(fields: dict[str, str], verifier: Verifier) -> tuple[Schema, dict[str, str]]:
    """The notification's schema and the reading of ``fields`` its signature covers."""
    kind = fields.get("type", "")
    plan = _PLANS.get(kind)
    if plan is None:
        if kind not in _MODELS:
            raise UnexpectedMessageError(
                f"{kind[:20]!r} is not PageNotify or OfflineNotify", field="type"
            )
        plan = _PLANS[kind] = _plan(REGISTRY[kind])
    schema, escaped, signed_values, signature_wire = plan
    # The usual notification, inline: the verifier's own signType, a signature, and no
    # Chinese field still escaped (one reading). Anything else: verify_fields, which names it.
    signature = fields.get(signature_wire)
    if signature and fields.get("signType") == verifier.sign_type:
        for name in escaped:
            if "%" in (fields.get(name) or ""):
                break
        else:
            try:
                source = "".join(signed_values(fields))
            except (KeyError, TypeError):  # an absent signed field signs as empty
                return schema, verify_fields(schema, fields, verifier)
            try:
                verifier.verify(source, signature)
            except SignatureError:
                raise SignatureError("signature does not match", field=signature_wire) from None
            return schema, fields
    return schema, verify_fields(schema, fields, verifier)


#: Per notification type: its schema, its Chinese-capable fields, the getter of its signed
#: values in order and the signature's field name.
_Plan = tuple[Schema, tuple[str, ...], Callable[[Mapping[str, str]], tuple[str, ...]], str]
_PLANS: dict[str, _Plan] = {}

#: Per notification type: the reader of its model, built on first use once a notification
#: of that type verified (so that nothing unverified reaches the model binding).
_READERS: dict[str, Callable[[Mapping[str, str], Collection[str]], PageNotify | OfflineNotify]]
_READERS = {}


def _plan(schema: Schema) -> _Plan:
    return (
        schema,
        tuple(f.wire for f in schema.fields if f.utf8_escaped),
        operator.itemgetter(*schema.signed_names),
        schema.signature_field.wire,
    )


#: Per notification type, the usual one first: what ``_usual`` needs of its schema.
_Usual = tuple[
    Schema,
    OrderedSplit,
    tuple[int, ...],
    int,
    int,
    Callable[[tuple[str, ...]], tuple[str, ...]],
    int,
]
_USUAL: list[_Usual] = []


def _usual(
    payload: bytes | str,
    codec: str,
    verifier: Verifier,
    merchant_id: str | None,
    extra_bank_codes: Collection[str],
) -> PageNotify | OfflineNotify | None:
    """The usual notification, read in one pass: the model, or None for any other payload.

    The usual body is what the gateway posts: every field of the schema in its order, once,
    and no Chinese field still escaped after the form decode. It is read by the schema's
    ``ordered_split`` and ``values_reader`` instead of a dict, and answered only where the
    general path gives the same answer: an equal model, or, once the signature verified in
    the first charset the general path tries, the same error for a broken rule. For
    anything else (another shape, another reading, a bad signature, another merchant) the
    answer is None, and the general path reads the payload from the start.
    """
    if len(payload) > MAX_PAYLOAD or (type(payload) is str and not payload.isascii()):
        return None  # the general path measures it (a str's size is its UTF-8 size)
    if not _USUAL:
        _USUAL.extend(_usual_plan(REGISTRY[kind]) for kind in ("OfflineNotify", "PageNotify"))
    try:
        text = payload if type(payload) is str else payload.decode(codec)  # type: ignore[union-attr]
        for plan in _USUAL:
            values = plan[1](text, codec)
            if values is not None:
                break
        else:
            return None
    except (UnicodeDecodeError, LookupError):
        return None
    schema, _, escaped, sign_type_at, signature_at, signed, merchant_at = plan
    for j in escaped:
        if "%" in values[j]:
            return None  # more than one reading to try: verify_fields decides
    if values[sign_type_at] != verifier.sign_type:
        return None
    try:
        verifier.verify("".join(signed(values)), values[signature_at])
    except SignatureError:
        return None  # another charset's reading may verify: the general path tries them
    # The version needs no test here: the ordered split reads only the schema's one value.
    if merchant_id is not None and values[merchant_at] != merchant_id:
        return None
    # Verified in the first charset tried: a broken rule is the general path's error too.
    return values_reader(schema, _MODELS[schema.name])(values, extra_bank_codes)


def _usual_plan(schema: Schema) -> _Usual:
    at = {f.wire: j for j, f in enumerate(schema.fields)}
    return (
        schema,
        ordered_split(schema),
        tuple(j for j, f in enumerate(schema.fields) if f.utf8_escaped),
        at["signType"],
        at[schema.signature_field.wire],
        operator.itemgetter(*(at[name] for name in schema.signed_names)),
        at["merchantId"],
    )


def _typed(
    schema: Schema,
    verified: dict[str, str],
    merchant_id: str | None,
    order_id_pattern: str | re.Pattern[str] | None,
    extra_bank_codes: Collection[str],
) -> PageNotify | OfflineNotify:
    """The verified fields as a model, once each obeys its grammar and the caller's rules."""
    if verified.get("version") != VERSION:
        raise UnexpectedMessageError(f"is not {VERSION}", field="version")
    if merchant_id is not None and verified.get("merchantId") != merchant_id:
        raise UnexpectedMessageError("is not this merchant's id", field="merchantId")
    read = _READERS.get(schema.name)
    if read is None:
        read = _READERS[schema.name] = reader(schema, _MODELS[schema.name])
    # Every field's grammar, in schema order, then the model built from the proved values.
    note = read(verified, extra_bank_codes)
    if order_id_pattern is not None and not re.fullmatch(order_id_pattern, note.order_id):
        raise UnexpectedMessageError(
            "does not have the form of this merchant's order ids (order_id_pattern)",
            field="orderId",
        )
    return note


#: First characters no wrong shape starts with (not a bracket, '?', 'h' of http, a space).
_LETTERS = "abcdefgijklmnopqrstuvwxyzABCDEFGIJKLMNOPQRSTUVWXYZ"
_PLAIN_START: frozenset[str | bytes] = frozenset(_LETTERS) | {c.encode() for c in _LETTERS}


def _check_shape(payload: bytes | str) -> None:
    """Name the usual wrong inputs (JSON, a page, a URL) before they fail as a bad signature."""
    if payload[:1] in _PLAIN_START:
        return  # a field name's first letter: none of the shapes below
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
