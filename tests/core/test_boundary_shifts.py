"""The hmac joins field values with no separator: characters moved across a field boundary
keep the signature. These tests move them, everywhere, and require that nothing moved is
accepted, except where docs/guarantees.md says the document leaves two valid partitions."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable

import pytest

from cmpay_async import CmpayError, Md5Signer, verify_notification
from tests.support.helpers import TEST_KEY, TEST_MERCHANT, fuzz_examples
from tests.support.notify_grammar_support import (
    CHARSETS,
    CHINESE,
    random_notification,
    section_8_3,
    shifts,
    signed_body,
)

VERIFIER = Md5Signer(TEST_KEY)
RESERVED = frozenset({"reserved1", "reserved2"})


def _digits(rng: random.Random) -> str:
    return "".join(rng.choices("0123456789", k=rng.randrange(8, 21)))


def _letters_then_digits(rng: random.Random) -> str:
    head = "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=2))
    return head + "".join(rng.choices("0123456789", k=10))


def _c_led(rng: random.Random) -> str:
    # Led by "C": beside bank code CMB it is the document's own ambiguity (CMB|C... = CMBC|...).
    return "C" + "".join(rng.choices("0123456789", k=12))


#: Order-id schemes a merchant might use, each with the pattern it declares for them.
SCHEMES: list[tuple[str, str, Callable[[random.Random], str]]] = [
    ("digits", r"[0-9]{8,20}", _digits),
    ("letters", r"[A-Z]{2}[0-9]{10}", _letters_then_digits),
    ("c-led", r"C[0-9]{12}", _c_led),
]


def _verify(body: bytes, pattern: str | None, charset: str | None = None) -> object | None:
    try:
        return verify_notification(
            body,
            verifier=VERIFIER,
            merchant_id=TEST_MERCHANT,
            charset=charset,
            order_id_pattern=pattern,
        )
    except CmpayError:
        return None


def _fuzz(seed: int, payloads: int, declare: bool) -> tuple[int, Counter[tuple[str, str]], int]:
    """Shift generated notifications until ``payloads`` shifted bodies were tried: returns the
    count tried, the (from, to) fields of every shifted body accepted, and the genuine bodies
    refused."""
    rng = random.Random(seed)
    tried, genuine_refused = 0, 0
    accepted: Counter[tuple[str, str]] = Counter()
    n = 0
    while tried < payloads:
        _, pattern, make = SCHEMES[n % len(SCHEMES)]
        charset = CHARSETS[n // len(SCHEMES) % len(CHARSETS)]
        n += 1
        fields = random_notification(rng, make(rng))
        body = signed_body(fields, charset)
        declared = pattern if declare else None
        if _verify(body, declared) is None:
            genuine_refused += 1
        hmac = body.rsplit(b"hmac=", 1)[1].decode()
        for source, target, shifted in shifts(fields):
            tried += 1
            note = _verify(signed_body(shifted, charset, hmac=hmac), declared)
            if note is not None:
                accepted[(source, target)] += 1
                # Detection never accepts what the right fixed charset would refuse.
                fixed = _verify(signed_body(shifted, charset, hmac=hmac), declared, charset)
                assert note == fixed
    return tried, accepted, genuine_refused


def test_no_shift_is_accepted_when_the_merchant_declares_its_order_ids() -> None:
    """Over 100,000 shifted notifications (every charset, empty optional fields, digit-only,
    letter-led and C-led order ids, Chinese free text, shifts of 1 to 3 characters across
    every boundary and across empty fields), the only ones accepted moved text between the
    merchant's own reserved1 and reserved2; every genuine notification is accepted."""
    tried, accepted, genuine_refused = _fuzz(20261206, fuzz_examples(100_000), declare=True)

    assert tried >= fuzz_examples(100_000)
    assert 0 == genuine_refused
    assert {} == {pair: n for pair, n in accepted.items() if not set(pair) <= RESERVED}


def test_without_a_declared_pattern_only_the_documented_ambiguities_remain() -> None:
    """By the document's grammar alone, a shift is accepted only between reserved1 and
    reserved2, or between bankAbbr and orderId across an empty mobile (a bank code is a valid
    start of a free-form order id): the two residual cases docs/guarantees.md names."""
    tried, accepted, genuine_refused = _fuzz(7, fuzz_examples(20_000), declare=False)

    assert 0 == genuine_refused
    residual = {("reserved1", "reserved2"), ("reserved2", "reserved1")}
    residual |= {("bankAbbr", "orderId"), ("orderId", "bankAbbr")}
    assert set() == set(accepted) - residual
    assert tried >= fuzz_examples(20_000)


def test_the_issues_examples_are_refused() -> None:
    """The shifts reported against the old grammar: order 12345 with mobile 151****0263
    becoming order 2345 with mobile 151****02631, amount 1250 becoming 125 with the 0 in
    amtItem, returnCode 000000 becoming 00000 or 9000000."""
    fields = section_8_3() | {
        "orderId": "12345",
        "amount": "1250",
        "amtItem": "CNY_AMT=1250#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
        "payNo": "2019013100053784689",
    }
    hmac = signed_body(fields).rsplit(b"hmac=", 1)[1].decode()
    moved = [
        {"mobile": "151****02631", "orderId": "2345"},
        {"amount": "125", "amtItem": "0CNY_AMT=1250#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0"},
        {"returnCode": "00000", "message": "0SUCCESS"},
        {"payNo": "201901310005378468", "returnCode": "9000000"},
    ]

    assert _verify(signed_body(fields, hmac=hmac), None) is not None
    for change in moved:
        assert _verify(signed_body(fields | change, hmac=hmac), None) is None, change


@pytest.mark.parametrize("charset", CHARSETS)
def test_detection_never_refuses_a_genuine_notification(charset: str) -> None:
    """Without a declared charset, every genuine UTF-8, GBK and GB2312 notification with
    Chinese text verifies, with the same result as under its own charset (about 1 % of GBK
    bodies are also valid UTF-8, and were refused before)."""
    rng = random.Random(charset)
    refused = []
    for _ in range(fuzz_examples(2_000)):
        fields = random_notification(rng, _digits(rng))
        fields["reserved1"] = "".join(rng.choices(CHINESE, k=rng.randrange(1, 4)))
        body = signed_body(fields, charset)
        detected = _verify(body, None)
        if detected is None or detected != _verify(body, None, charset):
            refused.append(fields["reserved1"])

    assert [] == refused


@pytest.mark.parametrize("text", ["学习", "千元", "山水"])
def test_gbk_bodies_that_are_also_utf8_are_read_as_gbk(text: str) -> None:
    """The issue's examples: in GBK these bytes are valid UTF-8 too; the signature decides."""
    body = signed_body(section_8_3() | {"reserved1": text}, "gbk")
    body.decode("ascii")  # percent-encoded: the raw GBK bytes are behind the escapes
    raw = bytes(re.sub(rb"%([0-9A-F]{2})", lambda m: bytes([int(m[1], 16)]), body))
    raw.decode("utf-8")  # the precondition of the bug: the GBK bytes decode as UTF-8

    for payload in (body, raw):
        note = verify_notification(payload, verifier=VERIFIER, merchant_id=TEST_MERCHANT)
        assert text == note.reserved1
