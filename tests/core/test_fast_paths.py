"""The planned fast paths agree with the straightforward code they replace, input by input.

- ``verify_notification`` reads the verified fields with a reader generated per schema
  (``_binding.reader``) and builds the model through ``_models.unchecked``; the reference is
  ``model(**typed_values(...))``, the table-driven conversion and the checked constructor.
- The form decoder's one pass (``_codec._split`` with ``_unquote_plus``) against the standard
  library's ``unquote_plus`` and the field-by-field path.
- The usual notification read in one pass (``_notify._usual``: ``_codec.ordered_split`` and
  ``_binding.values_reader``) against the general path (``_notify._in_turn``).
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
    RsaSigner,
    RsaVerifier,
    _notify,
    verify_notification,
)
from cmpay_async._binding import reader, reader_source, typed_values, values_reader
from cmpay_async._codec import (
    MAX_PAYLOAD,
    _split,
    _split_slowly,
    _unquote_plus,
    encode_fields,
    encode_form,
    form_plan,
    ordered_split,
)
from cmpay_async._exceptions import (
    DecodeError,
    EncodingError,
    PayloadTooLargeError,
    SignTypeMismatchError,
)
from cmpay_async._models import AmountItems, unchecked
from cmpay_async._notify import _in_turn, _usual
from cmpay_async._protocol import (
    _PAYMENT_PARAMS,
    _convert_and_check,
    _converter,
    _order_converter,
    converter_source,
)
from cmpay_async._schema import REGISTRY
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, sign_notification
from tests.support.helpers import (
    TEST_KEY,
    TEST_MERCHANT,
    fuzz_examples,
    rsa_key,
    valid_order,
)
from tests.support.notify_grammar_support import (
    CHINESE,
    ORDER,
    random_notification,
    signed_body,
)

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


def positional(fields: dict[str, str], extra: tuple[str, ...] = ()) -> Any:
    """The reading of the usual body: the reader by position, "" for an absent field."""
    schema = REGISTRY[fields.get("type", "PageNotify")]
    values = tuple(fields.get(f.wire, "") for f in schema.fields)
    return values_reader(schema, MODELS[schema.name])(values, extra)


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
        assert outcome(positional, fields, extra) == expected, fields
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
    expected = outcome(reference, fields)
    assert outcome(planned, fields) == expected
    assert outcome(positional, fields) == expected


def test_the_reader_source_is_plain_python_per_field() -> None:
    """The generated code is there to be read: one commented block per field, in order."""
    source = reader_source(REGISTRY["PageNotify"], PageNotify)
    positions = [source.index(f"# {f.wire}:") for f in REGISTRY["PageNotify"].fields[:19]]
    assert positions == sorted(positions)
    compile(source, "<reader>", "exec")
    # By name unless asked by position: the two readers' sources, each read its own way.
    assert "fields['merchantId']" in source
    assert "text = t0\n" not in source
    by_position = reader_source(REGISTRY["PageNotify"], PageNotify, by_position=True)
    assert "text = t0\n" in by_position
    assert "fields[" not in by_position


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
    "%26", "%2B", "%23", "%2A", "%2a", "%3D%23", "%2%3D", "%%23",
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


def split_outcome(body: bytes | str, codec: str, slow: bool) -> Any:
    """The fields ``_split`` (or the careful path) reads, or the error it raises."""
    try:
        if slow:
            text = body if isinstance(body, str) else body.decode(codec)
            pairs = [p.partition("=") for p in text.split("&") if p]
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


# -- the usual notification, in one pass --------------------------------------------------

NOTIFY_KINDS = ("OfflineNotify", "PageNotify")
WIRES = [f.wire for f in REGISTRY["PageNotify"].fields]


def reshaped(rng: random.Random, text: str) -> str:
    """``text`` with one change to its shape or to one value: fields swapped, repeated,
    dropped, renamed or escaped in their name, an empty part, or a value of any pieces
    (escapes good and bad, '+', '=', line breaks, non-ASCII)."""
    parts = text.split("&")
    i, j = rng.sample(range(len(parts)), 2)
    name, _, _ = parts[i].partition("=")
    change = rng.randrange(7)
    if change == 0:
        parts[i], parts[j] = parts[j], parts[i]
    elif change == 1:
        parts.insert(j, parts[i])
    elif change == 2:
        del parts[i]
    elif change == 3:
        parts[i] = rng.choice(["x", " " + name, name.replace("e", "%65", 1), ""]) + "=1"
    elif change == 4:
        parts.append("")
    else:
        value = "".join(rng.choices(PIECES, k=rng.randrange(0, 6))).replace("&", "")
        parts[i] = f"{name}={value}"
    return "&".join(parts)


def ordered_outcome(text: str, codec: str) -> Any:
    """The fields the ordered split of either notification reads, None, or the error."""
    try:
        for kind in NOTIFY_KINDS:
            values = ordered_split(REGISTRY[kind])(text, codec)
            if values is not None:
                return dict(zip(WIRES, values, strict=True))
    except UnicodeDecodeError as exc:
        return "undecodable", exc.reason
    return None


def test_the_ordered_split_reads_what_split_reads() -> None:
    """Signed bodies as sent, and each with its shape or one value changed: where the
    ordered split reads a body it reads the fields ``_split`` reads (or fails as it does),
    and it reads every body as the gateway sends it that holds no '+'."""
    rng = random.Random(61)
    read = 0
    for i in range(fuzz_examples(6000)):
        charset = rng.choice(["utf-8", "utf-8", "gbk"])
        text = signed_body(random_notification(rng, f"O{i}"), charset).decode("ascii")
        if i % 4:
            text = reshaped(rng, text)
        for codec in ("utf-8", "gbk"):
            got = ordered_outcome(text, codec)
            if got is None:
                assert i % 4 or "+" in text, text  # a body as sent is always read
                continue
            assert got == split_outcome(text, codec, False), (text, codec)
            read += 1
    assert read > fuzz_examples(6000) // 2


def test_the_ordered_split_leaves_other_shapes_to_split() -> None:
    """Each way a body can differ from the usual shape is left to ``_split``."""
    fields = random_notification(random.Random(4), "ORDER4")
    fields.update(type="OfflineNotify", message="交易成功", mobile="151****0263")
    text = signed_body(fields).decode("ascii")
    split = ordered_split(REGISTRY["OfflineNotify"])
    values = split(text, "utf-8")
    assert values is not None
    assert dict(zip(WIRES, values, strict=True)) == _split(text, "utf-8", form=True)
    assert values[WIRES.index("message")] == "交易成功"
    assert values[WIRES.index("mobile")] == "151****0263"
    assert ordered_split(REGISTRY["PageNotify"])(text, "utf-8") is None  # another type
    amount = f"amount={fields['amount']}"
    others = [
        text.replace(amount, amount.replace("=", "=%3", 1) + "0"),  # an escaped digit
        text.replace("message=", "message=a+", 1),  # a '+'
        text.replace("version=2.0.0", "version=2.0.1"),  # the one value, changed
        text + "&extra=1",  # an unknown field
        text.replace("&fee=", "&fee=1&fee=", 1),  # a repeated field
        text.replace("&reserved1=", "&reserved2=", 1),  # out of order
    ]
    for other in others:
        assert split(other, "utf-8") is None, other


def usual_or_general(body: bytes | str, verifier: Any, merchant: str | None,
                     extra: tuple[str, ...]) -> tuple[Any, Any]:  # fmt: skip
    """What the one-pass path answers (a model, an error or None), and what the general
    path does (errors as (class, field, message))."""
    answers = []
    for read in (
        lambda: _usual(body, "utf-8", verifier, merchant, extra),
        lambda: _in_turn(body, None, verifier, merchant, None, extra),
    ):
        try:
            answers.append(read())
        except CmpayError as exc:
            answers.append((type(exc), getattr(exc, "field", None), str(exc)))
    return answers[0], answers[1]


def test_the_usual_path_accepts_only_what_the_general_path_accepts() -> None:
    """Notifications as sent, with broken or edge values (signed, so that the reading, not
    the signature, decides), in other charsets, reshaped, for another merchant: where the
    one-pass path answers, it answers as the general path does (an equal model with the same
    repr, or the same error); it answers every valid UTF-8 body as sent that holds no '+'."""
    rng = random.Random(62)
    verifier = Md5Signer(TEST_KEY)
    answered = 0
    count = fuzz_examples(3000)
    for i in range(count):
        fields = random_notification(rng, f"{20261206000000 + i}")
        if i % 3 == 1:
            fields = mutated(rng, fields)
            if not all(name in fields for name in ORDER):
                continue
        charset = "gbk" if i % 7 == 0 else "utf-8"
        text = signed_body(fields, charset).decode("ascii")
        if i % 5 == 4:
            text = reshaped(rng, text)
        merchant = rng.choice([TEST_MERCHANT, TEST_MERCHANT, None, "888000000000009"])
        extra = ("NEWBANK",) if i % 4 == 0 else ()
        body: bytes | str = text if i % 2 else text.encode("utf-8")
        fast, general = usual_or_general(body, verifier, merchant, extra)
        if fast is not None:
            assert fast == general, text
            assert repr(fast) == repr(general)
            answered += 1
        elif i % 3 != 1 and i % 5 != 4 and charset == "utf-8" and merchant != "888000000000009":
            assert "+" in text, text  # valid, as sent: the one-pass path is the one taken
    assert answered > count // 3


def test_the_usual_path_reads_rsa_and_both_kinds() -> None:
    """An RSA notification (escaped base64 signature and certificate) and both kinds are
    read in one pass, to the general path's model; a forged one is left to it."""
    gateway = RsaSigner(rsa_key())
    rsa_verifier = RsaVerifier(gateway.public_key)
    md5 = Md5Signer(PUBLIC_TEST_KEY)
    for kind in ("OfflineNotify", "PageNotify"):
        for signer, verifier in ((gateway, rsa_verifier), (md5, md5)):
            body = sign_notification(kind=kind, signer=signer, order_id="A1", amount=1250)
            fast, general = usual_or_general(body, verifier, PUBLIC_TEST_MERCHANT, ())
            assert fast is not None, (kind, signer)
            assert type(fast).__name__ == kind
            assert fast == general
    forged = sign_notification(signer=RsaSigner(rsa_key(2048)), order_id="A1")
    assert _usual(forged, "utf-8", rsa_verifier, None, ()) is None


@pytest.mark.parametrize("charset", [None, "utf-8"])
def test_verify_notification_reads_the_usual_body_in_one_pass(
    charset: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A usual body, as bytes or as a query string, never reaches the general path; with an
    order_id_pattern it does not match, it does (which names the rule)."""

    def general(*args: object) -> None:
        raise AssertionError("the general path read a usual body")

    fields = random_notification(random.Random(8), "ORDER8")
    body = signed_body(fields)
    expected = reference(fields)
    monkeypatch.setattr(_notify, "_in_turn", general)
    for payload in (body, body.decode("ascii")):
        note = verify_notification(
            payload, verifier=Md5Signer(TEST_KEY), merchant_id=TEST_MERCHANT, charset=charset,
            order_id_pattern=r"ORDER\d",
        )  # fmt: skip
        assert note == expected
    with pytest.raises(AssertionError, match="general path"):
        verify_notification(body, verifier=Md5Signer(TEST_KEY), order_id_pattern=r"X\d")


def test_the_usual_path_keeps_the_size_limit_and_the_sign_type() -> None:
    """A usual body at the size limit is read; one byte over it, or a str over it in UTF-8,
    is refused as too large (the unsigned serverCert pads it); an MD5-signed body that says
    RSA is refused as a sign type mismatch, not read."""
    fields = random_notification(random.Random(5), "ORDER5")
    text = signed_body(fields).decode("ascii")
    pad = MAX_PAYLOAD - len(text)
    padded = text.replace("serverCert=", "serverCert=" + "A" * pad)
    assert len(padded) == MAX_PAYLOAD
    verifier = Md5Signer(TEST_KEY)
    assert verify_notification(padded.encode(), verifier=verifier) == reference(fields)
    assert _usual(padded.encode(), "utf-8", verifier, None, ()) == reference(fields)
    over = text.replace("serverCert=", "serverCert=" + "A" * (pad + 1))
    wide = text.replace("serverCert=", "serverCert=" + "中" * (pad // 2))
    assert len(wide) <= MAX_PAYLOAD < len(wide.encode())
    for payload in (over, over.encode(), wide):
        with pytest.raises(PayloadTooLargeError):
            verify_notification(payload, verifier=verifier)
    fields["signType"] = "RSA"
    with pytest.raises(SignTypeMismatchError):
        verify_notification(signed_body(fields), verifier=verifier)


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
