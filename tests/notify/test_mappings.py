"""Payloads handed over as a framework's mapping: each framework's own multi-value semantics.

The fakes below behave as the real classes do where it matters: Django's ``QueryDict`` and
Starlette's ``FormData`` answer ``items()`` with the *last* value of a repeated key (so only
``lists()`` / ``multi_items()`` reveal the repeat), and aiohttp's ``MultiDict`` yields every
pair from ``items()``. Sizes are counted by hand from the UTF-8 of ``name=value&``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from cmpay_async import DecodeError, DuplicateFieldError, PayloadTooLargeError, decode_payload


class QueryDict(Mapping[str, str]):
    """Django's QueryDict: ``[key]`` and ``items()`` give the last value, ``lists()`` all."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._lists: dict[str, list[str]] = {}
        for key, value in pairs:
            self._lists.setdefault(key, []).append(value)

    def __getitem__(self, key: str) -> str:
        return self._lists[key][-1]

    def __iter__(self) -> Iterator[str]:
        return iter(self._lists)

    def __len__(self) -> int:
        return len(self._lists)

    def lists(self) -> list[tuple[str, list[str]]]:
        return [(key, list(values)) for key, values in self._lists.items()]


class FormData(Mapping[str, str]):
    """Starlette's FormData: ``items()`` gives the last value, ``multi_items()`` every pair."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = list(pairs)
        self._last = dict(pairs)

    def __getitem__(self, key: str) -> str:
        return self._last[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._last)

    def __len__(self) -> int:
        return len(self._last)

    def multi_items(self) -> list[tuple[str, str]]:
        return list(self._pairs)


class MultiDict(Mapping[str, str]):
    """aiohttp's MultiDict: ``items()`` yields every pair, repeats included."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = list(pairs)

    def __getitem__(self, key: str) -> str:
        return next(v for k, v in self._pairs if k == key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def items(self) -> Any:
        return list(self._pairs)


PAIRS = [("merchantId", "888009941110001"), ("orderId", "ORD1"), ("message", "支付成功")]
SHAPES = [QueryDict, FormData, MultiDict, dict]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.__name__)
def test_every_shape_reads_the_same_fields(shape: Any) -> None:
    """Every shape reads the same fields."""
    assert dict(PAIRS) == decode_payload(shape(PAIRS), form=True)


@pytest.mark.parametrize("shape", [QueryDict, FormData, MultiDict], ids=lambda s: s.__name__)
def test_a_repeated_field_is_refused_whatever_items_shows(shape: Any) -> None:
    """A repeated field is refused whatever items shows."""
    given = shape([*PAIRS, ("orderId", "ORD2")])

    with pytest.raises(DuplicateFieldError) as caught:
        decode_payload(given, form=True)

    assert "orderId" == caught.value.field
    assert "orderId: given more than once" == str(caught.value)


def test_the_mapping_is_not_mutated() -> None:
    """The mapping is not mutated."""
    given = {"orderId": ["ORD1"], "message": "支付成功".encode()}
    before = {k: (list(v) if isinstance(v, list) else v) for k, v in given.items()}

    decode_payload(given, form=True)

    assert before == given


@pytest.mark.parametrize("one", [["ORD1"], ("ORD1",)], ids=["list", "tuple"])
def test_a_one_value_list_is_its_value(one: Any) -> None:
    """A one value list is its value."""
    assert {"orderId": "ORD1"} == decode_payload({"orderId": one}, form=True)


@pytest.mark.parametrize("many", [[], ["ORD1", "ORD2"], ("a", "b", "c")], ids=["0", "2", "3"])
def test_a_list_of_other_than_one_value_is_refused(many: Any) -> None:
    """A list of other than one value is refused."""
    with pytest.raises(DuplicateFieldError) as caught:
        decode_payload({"orderId": many}, form=True)

    assert "orderId" == caught.value.field
    assert "orderId: given more than once" == str(caught.value)


def test_the_value_of_a_one_value_list_is_checked_like_any_other() -> None:
    """The value of a one value list is checked like any other."""
    assert {"message": "中文"} == decode_payload({"message": ["中文".encode()]}, form=True)
    with pytest.raises(DecodeError) as caught:
        decode_payload({"message": [7]}, form=True)
    assert "message: not text (int)" == str(caught.value)


def test_bytes_values_are_utf8() -> None:
    """Bytes values are utf8."""
    assert {"message": "支付成功"} == decode_payload(
        {"message": b"\xe6\x94\xaf\xe4\xbb\x98\xe6\x88\x90\xe5\x8a\x9f"}, form=True
    )


def test_bytes_that_are_not_utf8_are_refused_by_name() -> None:
    """Bytes that are not utf8 are refused by name."""
    with pytest.raises(DecodeError) as caught:
        decode_payload({"orderId": "ORD1", "message": "支付".encode("gbk")}, form=True)

    assert "message" == caught.value.field
    assert "message: not valid UTF-8" == str(caught.value)


def test_a_name_that_is_not_text_is_refused() -> None:
    """A name that is not text is refused."""
    with pytest.raises(DecodeError) as caught:
        decode_payload({b"orderId": "ORD1"}, form=True)  # type: ignore[dict-item]

    assert "field name b'orderId' is not a str" == str(caught.value)
    assert caught.value.field is None


@pytest.mark.parametrize("value", [7, None, 1.5, object()], ids=["int", "None", "float", "obj"])
def test_a_value_that_is_not_text_is_refused_by_name(value: Any) -> None:
    """A value that is not text is refused by name."""
    with pytest.raises(DecodeError) as caught:
        decode_payload({"orderId": "ORD1", "amount": value}, form=True)

    assert "amount" == caught.value.field
    assert f"amount: not text ({type(value).__name__})" == str(caught.value)


# name=value& in UTF-8, counted by hand: "ab" + "=&" + "cdef" is 8; "名" (3 bytes) + 2 +
# "中文" (6 bytes) is 11; both together 19.
@pytest.mark.parametrize(
    ("fields", "size"),
    [
        ({"ab": "cdef"}, 8),
        ({"名": "中文"}, 11),
        ({"ab": "cdef", "名": "中文"}, 19),
        ({"ab": ["cdef"], "名": "中文".encode()}, 19),
    ],
    ids=["ascii", "chinese", "both", "list-and-bytes"],
)
def test_the_size_cap_counts_utf8_bytes_of_every_field(fields: Any, size: int) -> None:
    """The size cap counts utf8 bytes of every field."""
    assert decode_payload(fields, form=True, max_size=size)

    with pytest.raises(PayloadTooLargeError) as caught:
        decode_payload(fields, form=True, max_size=size - 1)

    assert f"payload of over {size - 1} bytes" == str(caught.value)


def test_a_lone_surrogate_is_refused_by_name() -> None:
    """A lone surrogate is refused by name."""
    with pytest.raises(DecodeError) as caught:
        decode_payload({"message": "a\udc80"}, form=True)

    assert "message: character U+DC80 is a lone surrogate, not text" == str(caught.value)


def test_a_lone_surrogate_in_a_name_is_refused_by_that_name() -> None:
    """A name with a lone surrogate is named in the error (as far as it can be shown)."""
    with pytest.raises(DecodeError) as caught:
        decode_payload({"order\udc80Id": "1"}, form=True)

    assert "order\udc80Id" == caught.value.field


def test_a_mapping_with_escaped_chinese_is_not_rewritten() -> None:
    """Verifying decodes the escaped message for the result, never in the caller's mapping."""
    from urllib.parse import parse_qsl

    from cmpay_async import Md5Signer, verify_notification
    from cmpay_async.testing import PUBLIC_TEST_KEY, sign_notification

    body = sign_notification(message="支付成功", escape_chinese=True)
    given = dict(parse_qsl(body.decode(), keep_blank_values=True))
    before = dict(given)

    notification = verify_notification(given, verifier=Md5Signer(PUBLIC_TEST_KEY))

    assert "支付成功" == notification.message
    assert before == given
    assert "%E6%94%AF" in given["message"]
