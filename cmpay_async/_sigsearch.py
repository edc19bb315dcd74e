"""The signature search behind ``cmpay verify``: which reading of a body makes its hmac match.

A sender that gets IPS0008 signed *something*: another message's field order, the fields as
decoded from another charset, Chinese fields still escaped, or the source's GBK bytes. This
module tries every such reading of a raw body, the likeliest first, and says which ones the
key accepts. Pure: bytes and a verifier in, readings out; the command line only prints them.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from ._codec import decode_payload
from ._exceptions import CmpayError, ConfigurationError
from ._schema import REGISTRY, Schema
from ._signing import Md5Signer, RsaVerifier, Verifier, source_of
from ._verify import escaped_readings

__all__ = [
    "SOURCE_ENCODINGS",
    "Candidate",
    "Search",
    "Unsearchable",
    "candidates",
    "decodings",
    "matches",
    "ordered_schemas",
    "schema_named",
    "search",
]

#: Encodings a sender may have hashed the source in; CMPay's own is UTF-8.
SOURCE_ENCODINGS = ("utf-8", "gbk", "gb2312")

#: The ways a body may have been read: a label, whether it is form-decoded, its charset.
_DECODINGS = (
    ("form-decoded UTF-8", True, "utf-8"),
    ("form-decoded GBK", True, "gbk"),
    ("raw k=v (answer style)", False, "utf-8"),
)


class Unsearchable(ValueError):
    """The body cannot be searched: it decodes in no known way, or it carries no hmac."""


@attrs.frozen
class Candidate:
    """One way of reading the body: a field order, a decoding and the source's bytes."""

    schema: Schema
    #: How the fields were read, e.g. ``form-decoded UTF-8, Chinese fields decoded``.
    how: str
    #: The encoding the source was hashed in.
    encoding: str
    source: str
    data: bytes


@attrs.frozen
class Search:
    """What a search found: the body's hmac, every reading tried and those that match."""

    signature: str
    candidates: tuple[Candidate, ...]
    matched: tuple[Candidate, ...]


def decodings(raw: bytes) -> list[tuple[str, dict[str, str]]]:
    """The ways a body may have been read: each a label and its fields."""
    out: list[tuple[str, dict[str, str]]] = []
    for label, form, charset in _DECODINGS:
        try:
            out.append((label, decode_payload(raw, form=form, charset=charset)))
        except CmpayError:
            continue
    return out


def candidates(raw: bytes, schemas: Sequence[Schema]) -> list[Candidate]:
    """Every reading of the body, the likeliest first; one per distinct signed bytes."""
    out: list[Candidate] = []
    seen: set[tuple[str, bytes]] = set()
    for encoding in SOURCE_ENCODINGS:
        for schema in schemas:
            for label, fields in decodings(raw):
                readings = escaped_readings(schema, fields)
                for index, reading in enumerate(readings):
                    source = source_of(schema, reading)
                    try:
                        data = source.encode(encoding)
                    except UnicodeEncodeError:
                        continue
                    if (schema.name, data) in seen:
                        continue
                    seen.add((schema.name, data))
                    last = index == len(readings) - 1
                    how = label if last else f"{label}, Chinese fields decoded"
                    out.append(Candidate(schema, how, encoding, source, data))
    return out


def matches(verifier: Verifier, candidate: Candidate, signature: str) -> bool:
    """True when ``signature`` is the one ``verifier`` accepts for this reading's bytes."""
    if isinstance(verifier, Md5Signer):
        return verifier.sign_bytes(candidate.data) == signature.lower()
    if isinstance(verifier, RsaVerifier):
        try:
            verifier.verify_bytes(candidate.data, signature)
        except CmpayError:
            return False
        return True
    # Any other verifier takes the source as text and chooses its bytes itself: only the
    # UTF-8 reading, CMPay's, can be what it checked.
    try:
        verifier.verify(candidate.source, signature)
    except CmpayError:
        return False
    return candidate.encoding == "utf-8"


def schema_named(name: str) -> Schema:
    """The message of this name; ``ConfigurationError`` naming the known ones otherwise."""
    schema = REGISTRY.get(name)
    if schema is None:
        raise ConfigurationError(f"unknown message {name!r}; known: {', '.join(REGISTRY)}")
    return schema


def ordered_schemas(fields: dict[str, str]) -> list[Schema]:
    """Every message, those whose ``type`` and kind (request or answer) fit the fields first."""
    kind = fields.get("type", "")
    answer = "returnCode" in fields

    def rank(schema: Schema) -> tuple[bool, bool]:
        is_answer = schema.name.endswith("Response")
        return (schema.wire_type != kind, is_answer != answer)

    return sorted(REGISTRY.values(), key=rank)


def search(raw: bytes, verifier: Verifier, message: str | None = None) -> Search:
    """Try every reading of ``raw`` (as the message named, if one is) against its own hmac.

    Raises ``Unsearchable`` when the body decodes in no known way or has no hmac, then
    ``ConfigurationError`` for a message name the registry does not know.
    """
    found = decodings(raw)
    if not found:
        raise Unsearchable("the body cannot be decoded as UTF-8 or GBK form data")
    fields = found[0][1]
    signature = fields.get("hmac", "")
    if not signature:
        raise Unsearchable("the body has no hmac field")
    schemas = [schema_named(message)] if message else ordered_schemas(fields)
    readings = candidates(raw, schemas)
    matched = [c for c in readings if matches(verifier, c, signature)]
    return Search(signature=signature, candidates=tuple(readings), matched=tuple(matched))
