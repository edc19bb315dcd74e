"""The planned fast paths agree with the straightforward code they replace, input by input.

- ``verify_notification`` reads the verified fields with a reader generated per schema
  (``_binding.reader``) and builds the model through ``_models.unchecked``; the reference is
  ``model(**typed_values(...))``, the table-driven conversion and the checked constructor.
- The form decoder's one pass (``_codec._split`` with ``_unquote_plus``) against the standard
  library's ``unquote_plus`` and the field-by-field path.
- The order path's generated converter and encoder (``_protocol._converter``,
  ``_order_converter``, ``_codec.encode_fields``) against ``_convert_and_check`` and
  ``encode_form``.
"""

from __future__ import annotations

import datetime as dt
import pickle
import random
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmpay_async import (
    CharacterSet,
    CmpayError,
    Md5Signer,
    OfflineNotify,
    PageNotify,
    verify_notification,
)
from cmpay_async._binding import reader, reader_source, typed_values
from cmpay_async._codec import (
    _split,
    _split_slowly,
    _unquote_plus,
    encode_fields,
    encode_form,
    form_plan,
)
from cmpay_async._exceptions import DecodeError, EncodingError
from cmpay_async._models import AmountItems, unchecked
from cmpay_async._protocol import (
    _PAYMENT_PARAMS,
    _convert_and_check,
    _converter,
    _order_converter,
    converter_source,
)
from cmpay_async._schema import REGISTRY
from tests.support.helpers import TEST_KEY, TEST_MERCHANT, fuzz_examples, valid_order
from tests.support.notify_grammar_support import CHINESE, random_notification, signed_body

MODELS = {"PageNotify": PageNotify, "OfflineNotify": OfflineNotify}


def reference(fields: dict[str, str], extra: tuple[str, ...] = ()) -> Any:
    """The straightforward reading: the table-driven conversion, the checked constructor."""
    schema = REGISTRY[fields.get("type", "PageNotify")]
    model = MODELS[schema.name]
    return model(**typed_values(schema, fields, model, extra_bank_codes=extra))


def planned(fields: dict[str, str], extra: tuple[str, ...] = ()) -> Any:
    """The reading ``verify_notification`` does: the reader generated for the schema."""
    schema = REGISTRY[fields.get("type", "PageNotify")]
    return reader(schema, MODELS[schema.name])(fields, extra)


def outcome(read: Any, fields: dict[str, str], extra: tuple[str, ...] = ()) -> Any:
    """The model, or the error as (class, field, message): what a caller can observe."""
    try:
        return read(fields, extra)
    except CmpayError as exc:
        return type(exc), getattr(exc, "field", None), str(exc)


# -- the unchecked constructor ------------------------------------------------------------


def test_unchecked_models_equal_checked_ones_and_pickle() -> None:
    """A model built without checks is the model the checked constructor builds: equal,
    same hash, repr and to_dict, frozen, and equal again after a pickle round trip."""
    rng = random.Random(7)
    for i in range(50):
        fields = random_notification(rng, f"ORDER{i}")
        checked = reference(fields)
        values = [getattr(checked, a.name) for a in attrs.fields(type(checked))]
        fast = unchecked(type(checked))(*values)
        assert type(fast) is type(checked)
        assert fast == checked
        assert hash(fast) == hash(checked)
        assert repr(fast) == repr(checked)
        assert fast.to_dict() == checked.to_dict()
        assert pickle.loads(pickle.dumps(fast)) == checked
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            fast.order_id = "other"


def test_unchecked_amount_items_keep_their_empty_extra() -> None:
    """AmountItems built unchecked with the shared empty ``extra`` equal the checked ones."""
    fast = unchecked(AmountItems)(100, 0, 5, 0, 0, AmountItems().extra)
    checked = AmountItems(cash=100, e_coupon=5)
    assert fast == checked
    assert fast.total == 105
    assert pickle.loads(pickle.dumps(fast)) == checked
    assert repr(fast) == repr(checked)


def test_the_public_constructor_still_checks_types() -> None:
    """Only the library's private path skips the checks: a caller's wrong type still fails."""
    fields = random_notification(random.Random(1), "ORDER1")
    values = attrs.asdict(reference(fields), recurse=False)
    values["status"] = "SUCCESS"  # a str where a PaymentStatus belongs
    with pytest.raises(CmpayError, match="status"):
        PageNotify(**values)


# -- the generated reader against typed_values --------------------------------------------

#: Values that break one rule or sit on its edge, for any field.
TRICKY = [
    "", "0", "00", "01", "-5", "+5", "1.0", "１２", "١٢", " 12", "12 ", "9" * 10, "9" * 11,
    "x" * 50, "x" * 51, "x" * 256, "x" * 257, "*", "a*b", "151****0263", "151***0263",
    "1511****0263", "ICBC", "icbc", "NEWBANK", "ABCDEFGHI", "000000", "MCG00000", "E12345",
    "IPS1234", "IPS12345", "00000", "SUCCESS", "success", "FAILED", "MD5", "md5", "RSA",
    "PageNotify", "OfflineNotify", "2.0.0", "2.0", "20190131", "20190230", "2019013",
    "201901310", "20190131102735", "20190131246000", "20190131102760", "2019013110273",
    "00000101000000", "00000101", "CNY_AMT=100#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
    "CNY_AMT=0#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
    "CNY_AMT=50#CMY_AMT=50#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
    "CNY_AMT=050#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
    "CMY_AMT=0#CNY_AMT=100#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
    "CNY_AMT=100#CMY_AMT=0#RED_AMT=0#VCH_AMT=0", "交易成功", CHINESE,
    "CNY_AMT=#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
    "CNY_AMT=٣#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
    "CNY_AMT=007#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
    "CNY_AMT=1 #CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
    "CNY_AMT=CNY_AMT=1#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
    "CNY_AMT=" + "9" * 250 + "#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
]  # fmt: skip


def mutated(rng: random.Random, fields: dict[str, str]) -> dict[str, str]:
    """``fields`` with one to three fields replaced by a tricky value, or dropped."""
    out = dict(fields)
    for _ in range(rng.choice([1, 1, 2, 3])):
        name = rng.choice(list(out))
        if rng.random() < 0.1:
            del out[name]
        else:
            out[name] = rng.choice(TRICKY)
    return out


def test_the_reader_agrees_with_typed_values_on_valid_and_broken_fields() -> None:
    """Every generated notification, and each with one to three fields replaced by values
    that break a rule or sit on its edge: the same model or the same error, word for word."""
    rng = random.Random(26)
    agreed = refused = 0
    count = fuzz_examples(3000)
    for i in range(count):
        fields = random_notification(rng, f"{20261206000000 + i}")
        if i % 3:
            fields = mutated(rng, fields)
        if fields.get("type") not in MODELS:
            continue
        extra = ("NEWBANK",) if i % 5 == 0 else ()
        expected = outcome(reference, fields, extra)
        assert outcome(planned, fields, extra) == expected, fields
        if isinstance(expected, tuple):
            refused += 1
        else:
            agreed += 1
    # Both sides well represented (a sixth each), at any fuzz divisor (nox -s mutants uses 100).
    assert agreed > count // 6
    assert refused > count // 6


@settings(max_examples=fuzz_examples(300), deadline=None)
@given(field=st.sampled_from(list(random_notification(random.Random(0), "X"))), text=st.text())
def test_the_reader_agrees_on_any_text_in_any_field(field: str, text: str) -> None:
    """Any text at all in any one field: the same model or the same error."""
    fields = random_notification(random.Random(3), "ORDER3")
    fields[field] = text
    if fields["type"] not in MODELS:
        return
    assert outcome(planned, fields) == outcome(reference, fields)


def test_the_reader_source_is_plain_python_per_field() -> None:
    """The generated code is there to be read: one commented block per field, in order."""
    source = reader_source(REGISTRY["PageNotify"], PageNotify)
    positions = [source.index(f"# {f.wire}:") for f in REGISTRY["PageNotify"].fields[:19]]
    assert positions == sorted(positions)
    compile(source, "<reader>", "exec")


# -- verify_notification end to end against the straightforward decoding -----------------


def test_verify_notification_returns_the_reference_model() -> None:
    """Signed bodies in each charset: the result equals the stdlib decoding (parse_qsl in the
    body's charset) converted by typed_values and built by the checked constructor."""
    rng = random.Random(2026)
    verifier = Md5Signer(TEST_KEY)
    for i in range(fuzz_examples(1000)):
        fields = random_notification(rng, f"{20261206000000 + i}")
        charset = rng.choice(["utf-8", "utf-8", "gbk", "gb2312"])
        body = signed_body(fields, charset)
        decoded = dict(parse_qsl(body.decode("ascii"), keep_blank_values=True, encoding=charset))
        assert decoded == {**fields, "serverCert": "", "hmac": decoded["hmac"]}
        note = verify_notification(body, verifier=verifier, merchant_id=TEST_MERCHANT)
        expected = reference(decoded)
        assert note == expected
        assert repr(note) == repr(expected)
        assert pickle.loads(pickle.dumps(note)) == expected


# -- the form decoder ---------------------------------------------------------------------

PIECES = [
    *"%%%%aF09gG+ _=\r\n\t\\zé中*#&",
    "%E4%B8%AD", "%3D", "%2", "%%", "%0A", "%0D", "%5F", "%20", "%3d", "%C3", "%FF", "%A4%D0",
    "%26", "%2B",
]  # fmt: skip


def test_unquote_plus_is_the_standard_librarys() -> None:
    """The a2b_qp path decodes every value as ``unquote_plus(value, codec, "strict")`` does,
    malformed escapes, line breaks, '=' and bytes not of the charset included (the same
    UnicodeDecodeError, same reason and place)."""
    rng = random.Random(1)
    for _ in range(fuzz_examples(30000)):
        value = "".join(rng.choices(PIECES, k=rng.randrange(0, 10)))
        for codec in ("utf-8", "gbk", "gb2312"):
            results: list[tuple[object, ...]] = []
            for decode in (_unquote_plus, lambda v, c: unquote_plus(v, c, "strict")):
                try:
                    results.append(("ok", decode(value, codec)))
                except UnicodeDecodeError as exc:
                    results.append(("error", exc.reason, exc.start, exc.end))
            assert results[0] == results[1], (value, codec)


def split_outcome(body: bytes, codec: str, slow: bool) -> Any:
    """The fields ``_split`` (or the careful path) reads, or the error it raises."""
    try:
        if slow:
            pairs = [p.partition("=") for p in body.decode(codec).split("&") if p]
            return _split_slowly(pairs, codec, form=True)
        return _split(body, codec, form=True)
    except DecodeError as exc:
        return type(exc), str(exc)
    except UnicodeDecodeError as exc:
        return "undecodable", exc.reason


def test_the_one_pass_split_agrees_with_the_field_by_field_path() -> None:
    """Bodies with repeated, unknown, escaped or empty names and any values: the same fields
    or the same error as the careful path."""
    rng = random.Random(5)
    names = ["merchantId", "amount", "message", "hmac", "m%65ssage", " amount", "", "x", "a+b"]
    for _ in range(fuzz_examples(20000)):
        parts = []
        for _ in range(rng.randrange(1, 6)):
            value = "".join(rng.choices(PIECES, k=rng.randrange(0, 5))).replace("&", "")
            parts.append(f"{rng.choice(names)}={value}" if rng.random() < 0.9 else value)
        body = "&".join(parts).encode("utf-8")
        for codec in ("utf-8", "gbk"):
            assert split_outcome(body, codec, False) == split_outcome(body, codec, True), body


# -- the order path -----------------------------------------------------------------------

REQUESTS = ["DirectPayConfirm", "WAPDirectPayConfirm", "OrderQuery", "OrderRefund"]

#: Values of every type a caller may pass (and some they should not).
ODD_VALUES: list[object] = [
    None, "", "x", "x" * 51, "x" * 300, "*", "1250", 1250, 0, -5, 10**12, True, 1.5,
    dt.date(2026, 11, 26), dt.date(5, 1, 1), dt.datetime(2026, 11, 26, 9, 30),
    dt.datetime(2026, 11, 26, 9, 30, tzinfo=dt.timezone.utc), CharacterSet.GBK,
    CharacterSet.UTF8, "02", "00", "ICBC", "NEWBANK", "https://shop.example/n", "ftp://x",
    "203.0.113.7", "999.1.1.1", "咖啡", b"bytes", ["list"],
]  # fmt: skip


def values_for(schema_name: str, rng: random.Random) -> dict[str, object]:
    """A valid order's values with the protocol's, and up to four replaced by odd ones."""
    order = valid_order(amount=rng.randrange(1, 10**6), order_id=f"O{rng.randrange(10**9)}")
    values: dict[str, object] = attrs.asdict(order, recurse=False)
    values.update(
        character_set=CharacterSet.UTF8,
        merchant_id=TEST_MERCHANT,
        request_id=f"R{rng.randrange(10**12)}",
        ip_address="203.0.113.7",
        sign_type=Md5Signer(TEST_KEY).sign_type,
        merchant_cert="",
        callback_url="https://shop.example/return",
        notify_url="https://shop.example/notify",
        order_date=dt.date(2026, 11, 26),
        mer_ac_date=dt.date(2026, 11, 26),
    )
    for _ in range(rng.choice([0, 1, 2, 4])):
        values[rng.choice([f.attr for f in REGISTRY[schema_name].fields])] = rng.choice(ODD_VALUES)
    return values


@pytest.mark.parametrize("message", REQUESTS)
def test_the_generated_converter_agrees_with_the_plan(message: str) -> None:
    """Valid values, and values of every odd type or breaking a rule: the same wire fields
    and the same problems, in the same order."""
    schema = REGISTRY[message]
    rng = random.Random(message)
    for _ in range(fuzz_examples(3000)):
        values = values_for(message, rng)
        extra = ("NEWBANK",) if rng.random() < 0.3 else ()
        expected = _convert_and_check(schema, values, extra)
        assert _converter(schema)(values.get, extra) == expected, values
        if message == "DirectPayConfirm":
            order = valid_order()
            order_values = {**attrs.asdict(order, recurse=False), **values}
            args = [order_values.get(name) for name in _PAYMENT_PARAMS]
            # The order converter reads the Order for every attribute not given as argument.
            merged = {**attrs.asdict(order, recurse=False)}
            merged.update({name: order_values.get(name) for name in _PAYMENT_PARAMS})
            assert _order_converter(schema)(order, *args, extra) == _convert_and_check(
                schema, merged, extra
            )


def test_the_converter_source_is_plain_python() -> None:
    """The generated converters compile as they are printed."""
    for message in REQUESTS:
        compile(converter_source(REGISTRY[message]), "<converter>", "exec")
    compile(converter_source(REGISTRY["DirectPayConfirm"], _PAYMENT_PARAMS), "<c>", "exec")
    # With the payment's parameters, the Order is read directly and the rest are arguments.
    assert converter_source(REGISTRY["DirectPayConfirm"], _PAYMENT_PARAMS).startswith(
        "def convert_DirectPayConfirm(order, character_set, merchant_id, request_id, "
    )
    assert converter_source(REGISTRY["OrderQuery"]).startswith(
        "def convert_OrderQuery(get, extra_bank_codes):"
    )


@pytest.mark.parametrize("charset", list(CharacterSet))
def test_encode_fields_writes_what_encode_form_writes(charset: CharacterSet) -> None:
    """Checked fields of an order, Chinese, symbols and characters the charset lacks
    included: the same body as ``encode_form``, or the same ``EncodingError``."""
    schema = REGISTRY["DirectPayConfirm"]
    rng = random.Random(str(charset))
    texts = ["", "abc", "a b&c=d%e+f", "咖啡 Coffee", "€", "😀", "https://x.example/?a=1&b=2"]
    for _ in range(fuzz_examples(2000)):
        values = values_for("DirectPayConfirm", random.Random(rng.random()))
        fields, problems = _convert_and_check(schema, values, ())
        if problems:
            continue
        for name in ("productName", "reserved1", "merchantCert", "orderId"):
            if rng.random() < 0.5:
                fields[name] = rng.choice(texts)
        fields["hmac"] = rng.choice(["", "c0a1bfd0a3458ccb21d910739789bece"])
        # As a request writes them: every field, or all but an empty certificate.
        omit = "merchantCert" if not fields["merchantCert"] and rng.random() < 0.5 else None
        plan = form_plan(schema, tuple(fields), omit)
        try:
            expected: Any = encode_form(
                [(name, value) for name, value in fields.items() if name != omit], charset
            )
        except EncodingError as exc:
            expected = exc.problems
        try:
            got: Any = encode_fields(fields, charset, plan)
        except EncodingError as exc:
            got = exc.problems
        assert got == expected
