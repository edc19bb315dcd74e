"""Hostile or broken input gives a typed error naming the field, never a bare Python error."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import attrs
import pytest

from cmpay_async import (
    REGISTRY,
    CharacterSet,
    DecodeError,
    EncodingError,
    Md5Signer,
    Order,
    PayloadTooLargeError,
    SignatureError,
    verify_notification,
)
from cmpay_async.testing import PUBLIC_TEST_KEY, sign_notification
from tests.support.helpers import valid_order

from .test_validation import build

VERIFIER = Md5Signer(PUBLIC_TEST_KEY)
# Every free-text field of an order (a bank code outside appendix 9.1 is refused as such).
ORDER_TEXT = [a.name for a in attrs.fields(Order) if a.type == "str" and a.name != "bank_abbr"]


def _wire(name: str) -> str:
    return REGISTRY["DirectPayConfirm"].by_attr[name].wire


@pytest.mark.parametrize("charset", list(CharacterSet))
@pytest.mark.parametrize("name", ORDER_TEXT)
def test_lone_surrogate_in_an_order_is_an_encoding_error(name: str, charset: CharacterSet) -> None:
    """A lone surrogate (e.g. from json.loads) in any text field names that field."""
    prefix = "https://shop.example/" if name.endswith("url") else ""  # a URL must stay a URL
    order = valid_order(**{name: prefix + "ab\ud800"})

    with pytest.raises(EncodingError) as info:
        build(order, character_set=charset)

    assert (_wire(name),) == info.value.fields
    (problem,) = info.value.problems
    assert "charset" == problem.code
    assert (
        f"{_wire(name)}: character U+D800 is a lone surrogate, not text "
        "(decode the value with errors='strict' upstream)"
    ) == str(info.value)


def _notification_fields() -> dict[str, str]:
    return dict(parse_qsl(sign_notification(order_id="A1001").decode(), keep_blank_values=True))


@pytest.mark.parametrize("name", sorted(_notification_fields()))
def test_lone_surrogate_in_a_mapping_payload_is_a_decode_error(name: str) -> None:
    """Every field of a mapping payload is checked before the signature is computed."""
    fields = _notification_fields()
    fields[name] = "\udcff" + fields[name]

    with pytest.raises(DecodeError) as info:
        verify_notification(fields, verifier=VERIFIER)

    assert name == info.value.field
    assert "U+DCFF" in str(info.value)


def test_lone_surrogate_in_a_str_payload_is_a_decode_error() -> None:
    """A str body with a surrogate is refused as undecodable text."""
    body = sign_notification(order_id="A1001").decode() + "&x=\ud800"

    with pytest.raises(DecodeError, match="U\\+D800 is a lone surrogate"):
        verify_notification(body, verifier=VERIFIER)


@pytest.mark.parametrize("size", [70_000, 10_000_000])
def test_mapping_payload_has_the_body_size_cap(size: int) -> None:
    """A mapping with a huge field is refused like a huge body, before any decoding."""
    fields: dict[str, Any] = _notification_fields()
    fields["reserved1"] = "%E4" * (size // 3)

    with pytest.raises(PayloadTooLargeError, match="65536 bytes"):
        verify_notification(fields, verifier=VERIFIER)


def test_mapping_payload_just_under_the_cap_is_read() -> None:
    """The cap counts the fields as a body would: a payload under it is verified normally."""
    fields = _notification_fields()
    size = sum(len(k) + len(v.encode()) + 2 for k, v in fields.items())
    fields["reserved2"] = "x" * (65536 - size - 1)

    with pytest.raises(SignatureError):  # read and checked: reserved2 is signed
        verify_notification(fields, verifier=VERIFIER)
