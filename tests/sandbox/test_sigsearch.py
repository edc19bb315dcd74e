"""The signature search behind `cmpay verify`, driven directly: bytes and a key in, readings out.

Bodies are signed here with the stdlib's HMAC (``reference_hmac``) or cryptography's RSA over
sources joined in the field orders of ``tests/vectors/field_orders.json``, never with the
module under test.
"""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import parse_qsl, quote, urlencode

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from cmpay_async import REGISTRY, ConfigurationError, Md5Signer, RsaVerifier, SignatureError
from cmpay_async._sigsearch import (
    Unsearchable,
    candidates,
    ordered_schemas,
    schema_named,
    search,
)
from cmpay_async.testing import PUBLIC_TEST_KEY
from tests.support.helpers import (
    MD5_VECTORS,
    NOTIFY_BODY,
    chinese_direct_pay_fields,
    load_vectors,
    reference_hmac,
    rsa_key,
)

ORDERS: dict[str, list[str]] = load_vectors("field_orders.json")["orders"]
NOTIFY_VECTOR = MD5_VECTORS["vectors"][0]
KEY = Md5Signer(PUBLIC_TEST_KEY)


def _source(message: str, fields: dict[str, str]) -> str:
    return "".join(fields.get(name, "") for name in ORDERS[message])


def _chinese_request() -> tuple[dict[str, str], str]:
    """A DirectPayConfirm's fields with a Chinese product name, and its signing source."""
    fields = chinese_direct_pay_fields()
    return fields, _source("DirectPayConfirm", fields)


def _signed(fields: dict[str, str], hmac: str) -> bytes:
    return urlencode({**fields, "hmac": hmac}).encode()


class _TextVerifier:
    """A verifier of text (neither Md5Signer nor RsaVerifier): it hashes the UTF-8 bytes."""

    sign_type = KEY.sign_type

    def verify(self, source: str, signature: str) -> None:
        if reference_hmac(source.encode("utf-8")) != signature:
            raise SignatureError("signature does not match", field="hmac")


def test_the_documents_notification_matches_its_own_order_first() -> None:
    """The section 8.3 vector: the best reading is PageNotify's order, as sent, in UTF-8."""
    found = search(NOTIFY_BODY.encode(), KEY)

    best = found.matched[0]
    assert NOTIFY_VECTOR["hmac"] == found.signature
    assert ("PageNotify", "form-decoded UTF-8", "utf-8", NOTIFY_VECTOR["source"]) == (
        best.schema.name,
        best.how,
        best.encoding,
        best.source,
    )
    assert NOTIFY_VECTOR["source"].encode() == best.data


def test_a_source_hashed_as_gbk_is_found_as_gbk_only() -> None:
    """The PHP-style IPS0008: hmac over the GBK bytes. The search names GBK, not UTF-8."""
    fields, source = _chinese_request()
    raw = _signed(fields, reference_hmac(source.encode("gbk")))

    found = search(raw, KEY)

    best = found.matched[0]
    assert ("DirectPayConfirm", "gbk", source) == (best.schema.name, best.encoding, best.source)
    # WAPDirectPayConfirm has the same field order: it matches too, and as GBK only.
    assert {"gbk"} == {c.encoding for c in found.matched}


def test_an_uppercase_hmac_matches_as_lowercase() -> None:
    """MD5 hex is compared without regard to case, as the gateway does."""
    fields, source = _chinese_request()
    raw = _signed(fields, reference_hmac(source.encode()).upper())

    found = search(raw, KEY, "DirectPayConfirm")

    assert [("DirectPayConfirm", "utf-8")] == [(c.schema.name, c.encoding) for c in found.matched]


def test_escaped_chinese_fields_are_tried_decoded() -> None:
    """A field that arrives percent-encoded but was signed decoded is found, and said so."""
    fields = dict(parse_qsl(NOTIFY_BODY, keep_blank_values=True))
    fields.pop("hmac")
    fields["reserved1"] = "测试"
    source = _source("PageNotify", fields)
    raw = _signed({**fields, "reserved1": quote("测试")}, reference_hmac(source.encode()))

    found = search(raw, KEY)

    best = found.matched[0]
    assert ("PageNotify", "form-decoded UTF-8, Chinese fields decoded", source) == (
        best.schema.name,
        best.how,
        best.source,
    )


def test_rsa_is_checked_over_each_readings_bytes() -> None:
    """An RSA signature over the GBK bytes of the source is found with the public key."""
    key = rsa_key()
    fields, source = _chinese_request()
    signature = key.sign(source.encode("gbk"), padding.PKCS1v15(), hashes.SHA1()).hex()

    found = search(_signed(fields, signature), RsaVerifier(key.public_key()))

    best = found.matched[0]
    assert ("DirectPayConfirm", "gbk") == (best.schema.name, best.encoding)
    assert {"gbk"} == {c.encoding for c in found.matched}


def test_a_text_verifier_matches_only_the_utf8_reading() -> None:
    """A verifier that takes text hashes it its own way: a GBK reading of the same text is
    not a match, though the verifier accepts the text."""
    fields, source = _chinese_request()
    raw = _signed(fields, reference_hmac(source.encode()))

    found = search(raw, _TextVerifier(), "DirectPayConfirm")

    assert any(c.encoding == "gbk" and c.source == source for c in found.candidates)
    assert [("utf-8", source)] == [(c.encoding, c.source) for c in found.matched]


def test_another_key_matches_nothing_and_the_likeliest_reading_comes_first() -> None:
    """With a wrong key no reading matches; the first tried is the body's own message."""
    found = search(NOTIFY_BODY.encode(), Md5Signer("another-merchant-key-0123456789"))

    assert () == found.matched
    assert REGISTRY["PageNotify"] is found.candidates[0].schema
    assert NOTIFY_VECTOR["source"] == found.candidates[0].source


def test_each_reading_is_tried_once() -> None:
    """One candidate per message and signed bytes: an ASCII source is the same in every
    encoding, so only its UTF-8 reading is kept."""
    every = candidates(NOTIFY_BODY.encode(), list(REGISTRY.values()))

    keys = [(c.schema.name, c.data) for c in every]
    assert len(set(keys)) == len(keys)
    assert {"utf-8"} == {c.encoding for c in every}
    assert set(REGISTRY) == {c.schema.name for c in every}


def test_a_named_message_is_the_only_order_tried() -> None:
    """Given a message, only its field order is tried (PageNotify's own body then fails)."""
    found = search(NOTIFY_BODY.encode(), KEY, "OfflineNotify")

    assert {"OfflineNotify"} == {c.schema.name for c in found.candidates}


@pytest.mark.parametrize(
    ("fields", "first"),
    [
        ({"type": "OrderQuery"}, ["OrderQuery", "OrderQueryResponse"]),
        ({"type": "OrderQuery", "returnCode": "000000"}, ["OrderQueryResponse", "OrderQuery"]),
        ({"type": "PageNotify", "returnCode": "000000"}, ["PageNotify"]),
    ],
)
def test_messages_whose_type_and_kind_fit_come_first(
    fields: dict[str, str], first: list[str]
) -> None:
    """The body's ``type`` ranks first, then a request before an answer, or the reverse when
    the body carries a returnCode; every message is still tried."""
    ordered = ordered_schemas(fields)

    assert first == [s.name for s in ordered[: len(first)]]
    assert sorted(REGISTRY) == sorted(s.name for s in ordered)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x80", "cannot be decoded as UTF-8 or GBK"),
        (b"type=PageNotify&merchantId=888009941120001", "no hmac field"),
    ],
)
def test_a_body_that_cannot_be_searched_says_why(raw: bytes, reason: str) -> None:
    """Undecodable, or without an hmac: ``Unsearchable`` with the reason, before the message
    name is even looked at."""
    with pytest.raises(Unsearchable, match=reason):
        search(raw, KEY, "NoSuchMessage")


def test_an_unknown_message_name_lists_the_known_ones() -> None:
    """A misspelt message is a ConfigurationError that names it and the registry's names."""
    with pytest.raises(ConfigurationError) as caught:
        search(NOTIFY_BODY.encode(), KEY, "PageNotfy")

    assert "'PageNotfy'" in str(caught.value)
    assert all(name in str(caught.value) for name in REGISTRY)
    assert REGISTRY["OrderRefund"] is schema_named("OrderRefund")


def test_the_search_and_the_cli_import_no_sandbox_and_no_argparse() -> None:
    """The search needs neither argparse nor the sandbox; the CLI loads the sandbox only for
    its sandbox and demo commands."""
    probe = (
        "import sys, cmpay_async._sigsearch;"
        "print('argparse' in sys.modules);"
        "import cmpay_async._cli;"
        "print(any(m.startswith('cmpay_async._sandbox') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()

    assert ["False", "False"] == out
