"""Form encoding and decoding, the payUrl token, amtItem and dates."""

from __future__ import annotations

import datetime as dt
import html
from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmpay_async import (
    CHINA_TZ,
    AmountItems,
    CharacterSet,
    DecodeError,
    DuplicateFieldError,
    EncodingError,
    Md5Signer,
    PayloadTooLargeError,
    PayUrl,
    SignatureError,
    decode_payload,
    encode_form,
    parse_amount_items,
    parse_date,
    parse_datetime,
    parse_pay_url,
    signing_source,
)
from cmpay_async._codec import encode_answer
from cmpay_async._schema import REGISTRY
from cmpay_async._values import format_amount_items, read_pay_url_generally
from cmpay_async._verify import escaped_readings, verify_fields
from tests.support.helpers import NOTIFY_BODY, TEST_KEY

NASTY = ["", "中文", "😀", "&", "=", "%", "+", "#", "<hi:=>", "a b", "%41", "<hi:$$>", "é"]
values = st.one_of(st.sampled_from(NASTY), st.text(max_size=30))
CHARSETS = list(CharacterSet)


def _representable(value: str, charset: CharacterSet) -> bool:
    try:
        value.encode(charset.codec)
    except UnicodeEncodeError:
        return False
    return True


@given(st.dictionaries(st.sampled_from(REGISTRY["PageNotify"].signed_names), values, min_size=1))
def test_form_roundtrip_in_every_charset(fields: dict[str, str]) -> None:
    """encode -> decode returns the same values in each charset that can represent them."""
    for charset in CHARSETS:
        if not all(_representable(v, charset) for v in fields.values()):
            with pytest.raises(EncodingError):
                encode_form(fields.items(), charset)
            continue
        body = encode_form(fields.items(), charset)
        assert fields == decode_payload(body, form=True, charset=charset.codec)


@given(
    st.dictionaries(st.sampled_from(REGISTRY["PageNotify"].signed_names), values),
    st.data(),
)
def test_sign_verify_and_any_change_fails(fields: dict[str, str], data: Any) -> None:
    """sign -> verify succeeds; changing one signed field or the signature fails."""
    signer = Md5Signer(TEST_KEY)
    full = {**fields, "signType": "MD5"}
    full["hmac"] = signer.sign(signing_source("PageNotify", full))
    body = encode_form(full.items(), CharacterSet.UTF8)
    decoded = decode_payload(body, form=True)

    verify_fields(REGISTRY["PageNotify"], decoded, signer)

    name = data.draw(st.sampled_from(REGISTRY["PageNotify"].signed_names))
    changed = dict(decoded)
    changed[name] = changed.get(name, "") + "x"
    with pytest.raises(SignatureError):
        verify_fields(REGISTRY["PageNotify"], changed, signer)
    tampered = dict(decoded)
    tampered["hmac"] = ("0" if full["hmac"][0] != "0" else "1") + full["hmac"][1:]
    with pytest.raises(SignatureError):
        verify_fields(REGISTRY["PageNotify"], tampered, signer)


def test_encoding_error_names_field_and_character() -> None:
    """A value the charset lacks names the field and the character."""
    with pytest.raises(EncodingError) as info:
        encode_form([("productName", "咖啡😀")], CharacterSet.GBK)

    assert ("productName",) == info.value.fields
    assert "U+1F600" in str(info.value)
    assert "GBK" in str(info.value)


def test_form_body_matches_standard_decoding() -> None:
    """The body is ordinary form encoding: the stdlib decodes it to the same pairs."""
    pairs = [("productName", "咖啡 & 茶=好+%"), ("amount", "100")]

    body = encode_form(pairs, CharacterSet.GBK)

    assert pairs == parse_qsl(body.decode("ascii"), encoding="gbk")


def test_notification_body_decodes_from_bytes_str_and_mapping() -> None:
    """The section 8.3 body decodes alike from bytes, str and a dict of lists."""
    from_bytes = decode_payload(NOTIFY_BODY.encode(), form=True)

    assert from_bytes == decode_payload(NOTIFY_BODY, form=True)
    assert from_bytes == decode_payload({k: [v] for k, v in from_bytes.items()}, form=True)
    assert "CNY_AMT=100#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0" == from_bytes["amtItem"]


def test_decode_never_mutates_a_mapping() -> None:
    """The caller's mapping is left exactly as it was."""
    given_ = {"a": "1", "b": ["2"]}
    snapshot = {"a": "1", "b": ["2"]}

    decode_payload(given_, form=True)

    assert snapshot == given_


@pytest.mark.parametrize(
    "payload",
    [b"a=1&a=2", "a=1&b=2&a=3", {"a": ["1", "2"]}],
)
def test_duplicate_fields_are_refused(payload: Any) -> None:
    """A field given twice is refused, naming it."""
    with pytest.raises(DuplicateFieldError, match=r"^a: "):
        decode_payload(payload, form=True)


def test_oversize_and_empty_payloads_are_refused() -> None:
    """Bodies over 64 KiB and empty bodies are refused before parsing."""
    with pytest.raises(PayloadTooLargeError):
        decode_payload(b"a=" + b"x" * 70_000, form=True)
    with pytest.raises(DecodeError, match="empty"):
        decode_payload(b"", form=True)


def test_gbk_body_is_detected_when_not_utf8() -> None:
    """Bytes that are not UTF-8 are read as GBK; an explicit charset is obeyed strictly."""
    body = encode_form([("reserved1", "中文")], CharacterSet.GBK)

    assert {"reserved1": "中文"} == decode_payload(body, form=True)
    with pytest.raises(DecodeError, match="not valid utf-8"):
        decode_payload(body, form=True, charset="utf-8")


def test_answer_mode_keeps_raw_values_and_splits_on_first_equals() -> None:
    """Gateway answers keep '=' and '#' inside values and are not form-decoded."""
    body = b"payUrl=url<hi:=>https://x/y<hi:$$>sessionId<hi:=>1&amtItem=A=1#B=2&message=%E4%B8%AD"

    fields = decode_payload(body, form=False)

    assert "url<hi:=>https://x/y<hi:$$>sessionId<hi:=>1" == fields["payUrl"]
    assert "A=1#B=2" == fields["amtItem"]
    assert "%E4%B8%AD" == fields["message"]


def test_answer_mode_strips_names_and_skips_empty_parts() -> None:
    """An answer written with line breaks or spaces around its names (a proxy, a hand-made
    reply), or with a stray '&', reads as the same fields; the values stay as sent."""
    body = b"\r\nreturnCode=000000&& message=OK \r\n&payUrl=u"

    assert {"returnCode": "000000", "message": "OK \r\n", "payUrl": "u"} == decode_payload(
        body, form=False
    )


def test_escaped_readings_offer_decoded_then_raw() -> None:
    """Chinese fields still percent-encoded are offered fully decoded first, raw last."""
    schema = REGISTRY["PageNotify"]
    fields = {"message": "%25E4%25B8%25AD", "orderId": "%41"}

    readings = escaped_readings(schema, fields)

    assert "中" == readings[0]["message"]
    assert "%41" == readings[0]["orderId"]  # only Chinese-capable fields are decoded
    assert fields == readings[-1]


def test_encode_answer_escapes_only_chinese_fields() -> None:
    """The gateway's answer format: payUrl raw, message percent-encoded UTF-8."""
    schema = REGISTRY["DirectPayConfirmResponse"]

    body = encode_answer(schema, {"message": "成功 ok", "payUrl": "url<hi:=>https://a"})

    assert b"message=%E6%88%90%E5%8A%9F+ok" in body
    assert b"payUrl=url<hi:=>https://a" in body


TOKEN = "url<hi:=>https://ipos.10086.cn/ips/FormTrans3<hi:$$>method<hi:=>post<hi:$$>sessionId<hi:=>2011010199999"


def test_pay_url_token_parses_document_example() -> None:
    """The document's token gives the URL, method and session id."""
    pay = parse_pay_url(TOKEN)

    assert "https://ipos.10086.cn/ips/FormTrans3" == pay.url
    assert "post" == pay.method
    assert "2011010199999" == pay.session_id
    assert "https://ipos.10086.cn/ips/FormTrans3?sessionId=2011010199999" == pay.redirect_url
    assert TOKEN == pay.raw


@pytest.mark.parametrize("tail", ["h", "i", ":", "$", ">"])
def test_pay_url_keeps_urls_ending_in_marker_characters(tail: str) -> None:
    """Unlike the vendor's character-class regex, URLs ending in h, i or : survive."""
    token = f"url<hi:=>https://a.example/pat{tail}<hi:$$>sessionId<hi:=>1"

    assert f"https://a.example/pat{tail}" == parse_pay_url(token).url


def test_pay_url_keeps_unknown_keys_and_empty_values() -> None:
    """Extra keys, even empty ones, are kept in order."""
    pay = parse_pay_url(TOKEN + "<hi:$$>MERC_PAY_TPY<hi:=><hi:$$>x<hi:=>1")

    assert (("MERC_PAY_TPY", ""), ("x", "1")) == pay.extra


def test_pay_url_form_escapes_every_value() -> None:
    """The auto-submit form HTML-escapes the URL and the session id."""
    token = 'url<hi:=>https://a.example/"><script><hi:$$>sessionId<hi:=>1"&<'

    page = parse_pay_url(token).form_html()

    assert "<script>" not in page
    assert html.escape('https://a.example/"><script>', quote=True) in page
    assert 'value="1&quot;&amp;&lt;"' in page


# The cashier page, byte for byte: a browser test (integration) submits it for real; this one
# pins what is sent.
CASHIER_PAGE = (
    '<!DOCTYPE html><html><head><meta charset="utf-8"><title>CMPay</title></head>'
    '<body onload="document.forms[0].submit()">'
    '<form method="{method}" action="https://ipos.10086.cn/ips/FormTrans3?a=1&amp;b=&#x27;2&#x27;">'
    '<input type="hidden" name="sessionId" value="2011010199999">'
    '<noscript><button type="submit">Continue to payment</button></noscript>'
    "</form></body></html>"
)


@pytest.mark.parametrize(
    ("method", "sent"),
    [
        ("post", "post"),
        ("get", "get"),
        ("GET", "get"),
        ("Get", "get"),
        ("POST", "post"),
        ("put", "post"),
    ],
)
def test_pay_url_form_is_the_cashier_page(method: str, sent: str) -> None:
    """The page submits with the token's method (anything but GET posts), to its URL."""
    token = (
        "url<hi:=>https://ipos.10086.cn/ips/FormTrans3?a=1&b='2'<hi:$$>"
        f"method<hi:=>{method}<hi:$$>sessionId<hi:=>2011010199999"
    )

    assert CASHIER_PAGE.format(method=sent) == parse_pay_url(token).form_html()


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "url<hi:=>ftp://x<hi:$$>sessionId<hi:=>1", "url<hi:=>https://x"],
)
def test_bad_pay_url_tokens_raise_decode_error(token: str) -> None:
    """Tokens without an http(s) url or a session id are refused."""
    with pytest.raises(DecodeError, match=r"^payUrl: "):
        parse_pay_url(token)


def test_amount_items_parse_and_format_roundtrip() -> None:
    """amtItem parses into int fen parts, each under its documented name, and formats back
    identically (sections 7.2 and 8.2: CNY cash, CMY top-up card, RED e-coupon, VCH voucher,
    POT_CHG points)."""
    text = "CNY_AMT=90#CMY_AMT=3#RED_AMT=10#VCH_AMT=7#POT_CHG_AMT=1"

    items = parse_amount_items(text)

    assert AmountItems(cash=90, top_up_card=3, e_coupon=10, voucher=7, points=1) == items
    assert 111 == items.total
    assert text == format_amount_items(items)


@pytest.mark.parametrize(
    "text",
    [
        "CNY_AMT=x",
        "CNY_AMT",
        "CNY_AMT=1#CNY_AMT=2",
        "CNY_AMT=-1",
        " CNY_AMT=100#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
        "CNY_AMT=100 #CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
        "CNY_AMT=100#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0#",
        "CNY_AMT=100#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0#NEW_AMT=5",
        "CNY_AMT=100#CMY_AMT=0#RED_AMT=0#VCH_AMT=0",
        "CMY_AMT=0#CNY_AMT=100#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
        "CNY_AMT=0100#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
        "CNY_AMT=100#CMY_AMT=00#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
        "CNY_AMT=+100#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
        "CNY_AMT=100#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=",
        "CNY_AMT=100#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0a",
    ],
)
def test_amount_items_have_one_form_only(text: str) -> None:
    """Anything but the five documented parts, in order, each a canonical decimal, is refused:
    spaces, a sixth part, a missing one, another order, leading zeros, signs, empty values."""
    with pytest.raises(DecodeError, match=r"^amtItem: "):
        parse_amount_items(text)


def test_dates_parse_in_china_time() -> None:
    """Dates are dates; payDate is an aware datetime at UTC+8."""
    assert dt.date(2019, 1, 31) == parse_date("20190131")
    when = parse_datetime("20190131102735")
    assert dt.datetime(2019, 1, 31, 2, 27, 35, tzinfo=dt.timezone.utc) == when
    assert CHINA_TZ == when.tzinfo


@pytest.mark.parametrize("text", ["2019013", "20190230", "2019-1-31", "２０１９０１３１"])
def test_bad_dates_raise(text: str) -> None:
    """Wrong lengths, impossible days and non-ASCII digits are refused."""
    with pytest.raises(DecodeError):
        parse_date(text)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("2019013110273", "not a time of the form YYYYMMDDHHmmSS"),
        ("201901311027350", "not a time of the form YYYYMMDDHHmmSS"),
        ("2019013110273x", "not a time of the form YYYYMMDDHHmmSS"),
        ("２０１９０１３１１０２７３５", "not a time of the form YYYYMMDDHHmmSS"),
        ("20190230102735", "not a valid date and time"),
        ("20190131246000", "not a valid date and time"),
        ("20190131102760", "not a valid date and time"),
    ],
)
def test_bad_times_are_named_by_field(text: str, why: str) -> None:
    """Each malformed time names the field it came from ("datetime" when none is given)."""
    with pytest.raises(DecodeError) as given:
        parse_datetime(text, field="payDate")
    with pytest.raises(DecodeError) as default:
        parse_datetime(text)

    assert f"payDate: {why}" == str(given.value)
    assert f"datetime: {why}" == str(default.value)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("2019013", "not a date of the form YYYYMMDD"),
        ("201901311", "not a date of the form YYYYMMDD"),
        ("２０１９０１３１", "not a date of the form YYYYMMDD"),
        ("20190230", "not a valid calendar date"),
        ("20191301", "not a valid calendar date"),
    ],
)
def test_bad_dates_are_named_by_field(text: str, why: str) -> None:
    """Each malformed date names the field it came from ("date" when none is given)."""
    with pytest.raises(DecodeError) as given:
        parse_date(text, field="orderDate")
    with pytest.raises(DecodeError) as default:
        parse_date(text)

    assert f"orderDate: {why}" == str(given.value)
    assert f"date: {why}" == str(default.value)


@pytest.mark.parametrize(
    ("text", "when"),
    [
        ("20191231235959", (2019, 12, 31, 23, 59, 59)),
        ("20200229000000", (2020, 2, 29, 0, 0, 0)),
        ("00010101010203", (1, 1, 1, 1, 2, 3)),
    ],
)
def test_every_part_of_a_time_is_read_from_its_place(text: str, when: tuple[int, ...]) -> None:
    """Year, month, day, hour, minute and second each come from their own digits."""
    assert dt.datetime(*when, tzinfo=CHINA_TZ) == parse_datetime(text)
    assert dt.date(*when[:3]) == parse_date(text[:8])


def test_escaping_stays_exact_beyond_the_memo() -> None:
    """Remembered escapes are exact, and stay exact once the bounded memo has been cleared."""
    from urllib.parse import quote_plus

    for i in range(3000):
        value = f"商品 {i} & more/{i}"
        body = encode_form([("productName", value)], CharacterSet.GBK)
        assert f"productName={quote_plus(value, safe='', encoding='gbk')}".encode() == body
        assert body == encode_form([("productName", value)], CharacterSet.GBK)


@pytest.mark.parametrize(
    ("received", "plus", "plain"),
    [
        ("%E4%B8%AD", "中", "中"),
        ("%25E4%25B8%25AD", "中", "中"),  # escaped twice
        ("%2525E4%2525B8%2525AD", "中", "中"),  # three times: the most undone
        ("%252525E4%252525B8%252525AD", "%E4%B8%AD", "%E4%B8%AD"),  # four: one layer stays
        ("a+b%2B", "a b+", "a+b+"),
        ("100%", "100%", "100%"),  # nothing to undo
        ("%E4%B8", "%E4%B8", "%E4%B8"),  # not UTF-8: kept as received
        ("%2541%FF", "%2541%FF", "%2541%FF"),  # the first layer is not UTF-8
        ("%2541%25FF", "%41%FF", "%41%FF"),  # the second layer is not: one layer undone
        ("plain", "plain", "plain"),
    ],
)
def test_escapes_are_undone_at_most_three_layers_deep(received: str, plus: str, plain: str) -> None:
    """The readings tried for a value escaped by a gateway (or a proxy) more than once."""
    from cmpay_async._verify import _fully_unquote, _fully_unquote_plus

    assert plus == _fully_unquote_plus(received)
    assert plain == _fully_unquote(received)


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("url<hi:=>https://a.example<hi:$$>sessionId", "token part 'sessionId' has no <hi:=>"),
        ("x" * 50 + "<hi:$$>url<hi:=>https://a", f"token part {'x' * 40!r} has no <hi:=>"),
        ("url<hi:=>ftp://a<hi:$$>sessionId<hi:=>1", "token has no http(s) url"),
        ("method<hi:=>post<hi:$$>sessionId<hi:=>1", "token has no http(s) url"),
        ("url<hi:=>https://a<hi:$$>sessionId<hi:=>", "token has no sessionId"),
        ("url<hi:=>https://a", "token has no sessionId"),
    ],
)
def test_bad_pay_url_tokens_say_what_is_missing(token: str, why: str) -> None:
    """Each refusal names the field (given or default) and what is missing."""
    with pytest.raises(DecodeError) as default:
        parse_pay_url(token)
    with pytest.raises(DecodeError) as given:
        parse_pay_url(token, field="payLink")

    assert f"payUrl: {why}" == str(default.value)
    assert f"payLink: {why}" == str(given.value)


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_token_in_any_layout_may_carry_an_http_or_https_url(scheme: str) -> None:
    """Both schemes the document's cashier uses are read by the general reading too (keys
    out of the gateway's order, blanks around values), not only by the usual layout's."""
    pay = parse_pay_url(f"sessionId<hi:=> S9 <hi:$$>url<hi:=> {scheme}://pay.example/c ")

    assert (f"{scheme}://pay.example/c", "S9") == (pay.url, pay.session_id)


def test_pay_url_parts_are_read_whole() -> None:
    """Empty parts are skipped (not the end), a value may hold <hi:=>, POST is the default,
    and a repeated known key is kept as an extra."""
    pay = parse_pay_url(
        "url<hi:=>https://a.example/p?q<hi:=>r<hi:$$><hi:$$> <hi:$$>"
        "sessionId<hi:=> S1 <hi:$$>url<hi:=>https://other"
    )

    assert ("https://a.example/p?q<hi:=>r", "S1", "post") == (pay.url, pay.session_id, pay.method)
    assert (("url", "https://other"),) == pay.extra


_MESSY = st.text(alphabet=st.sampled_from("ab:/.?=&<>$hi \t\u3000\x1c中"), max_size=12)
#: Mostly values as the gateway writes them (no blank, no "<"), sometimes anything.
_TOKEN_TEXT = st.one_of(st.text(alphabet=st.sampled_from("ab:/.?=&>$hi中"), max_size=8), _MESSY)


@given(
    url=st.one_of(_TOKEN_TEXT, _TOKEN_TEXT.map(lambda t: "https://" + t)),
    method=_TOKEN_TEXT,
    session=_TOKEN_TEXT,
)
def test_the_usual_token_reads_as_the_general_reading_does(
    url: str, method: str, session: str
) -> None:
    """parse_pay_url's quick reading of a token in the gateway's own layout gives exactly what
    the general reading gives (the same model, or the same error), whatever the values hold:
    blanks, markers, nothing."""
    token = f"url<hi:=>{url}<hi:$$>method<hi:=>{method}<hi:$$>sessionId<hi:=>{session}"
    try:
        expected: PayUrl | str = read_pay_url_generally(token)
    except DecodeError as exc:
        expected = str(exc)
    try:
        got: PayUrl | str = parse_pay_url(token)
    except DecodeError as exc:
        got = str(exc)
    assert expected == got


_FORM = "CNY_AMT=<fen>#CMY_AMT=<fen>#RED_AMT=<fen>#VCH_AMT=<fen>#POT_CHG_AMT=<fen>"
_BAD_VALUE = "is not KEY=<fen> (digits, no sign, no leading zero)"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("CNY_AMT=1=2", f"not of the form {_FORM}"),
        ("CNY_AMT=1#CNY_AMT=2", f"not of the form {_FORM}"),
        (
            "CNY_AMT=1#CNY_AMT=2#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
            f"part 'CNY_AMT' where CMY_AMT belongs (the form is {_FORM})",
        ),
        ("CNY_AMT=-1#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0", f"part 'CNY_AMT' {_BAD_VALUE}"),
        ("CNY_AMT=１#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0", f"part 'CNY_AMT' {_BAD_VALUE}"),
        (
            "CNY_AMT=1#CMY_AMT=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=07",
            f"part 'POT_CHG_AMT' {_BAD_VALUE}",
        ),
        ("CNY_AMT=1#CMY_AMT=0#RED_AMT#VCH_AMT=0#POT_CHG_AMT=0", f"part 'RED_AMT' {_BAD_VALUE}"),
        (  # a long wrong name is quoted by its first 20 characters
            "CNY_AMT=1#" + "X" * 30 + "=0#RED_AMT=0#VCH_AMT=0#POT_CHG_AMT=0",
            f"part '{'X' * 20}' where CMY_AMT belongs (the form is {_FORM})",
        ),
    ],
)
def test_bad_amount_items_are_named(text: str, why: str) -> None:
    """The part that breaks the form is named, with the field (given or default)."""
    with pytest.raises(DecodeError) as default:
        parse_amount_items(text)
    with pytest.raises(DecodeError) as given:
        parse_amount_items(text, field="items")

    assert f"amtItem: {why}" == str(default.value)
    assert f"items: {why}" == str(given.value)


def test_encode_answer_writes_every_field_and_a_certificate_only_when_there_is_one() -> None:
    """Fields in schema order, missing ones empty; serverCert only when it holds something;
    Chinese escaped as form data, "/" included."""
    schema = REGISTRY["OrderRefundResponse"]

    plain = encode_answer(schema, {"merchantId": "M1", "message": "退款/成功"})
    with_cert = encode_answer(schema, {"merchantId": "M1", "serverCert": "CERT1"})

    sent = dict(parse_qsl(plain.decode(), keep_blank_values=True))
    assert ("M1", "", "退款/成功") == (sent["merchantId"], sent["orderId"], sent["message"])
    assert b"message=%E9%80%80%E6%AC%BE%2F%E6%88%90%E5%8A%9F" in plain
    assert "serverCert" not in sent
    assert b"serverCert=CERT1" in with_cert


@pytest.mark.parametrize(
    ("body", "charset", "fields"),
    [
        (b"order%49d=A+B%2B&x=1", None, {"orderId": "A B+", "x": "1"}),
        (b"a+b=1&c=%E4%B8%AD", None, {"a b": "1", "c": "中"}),
        (b"%D6%A7=%B8%B6&x=1", "gbk", {"支": "付", "x": "1"}),
        (b" orderId =1", None, {"orderId": "1"}),
    ],
    ids=["escaped-name", "plus-in-name", "gbk-name-and-value", "spaced-name"],
)
def test_names_that_need_decoding_are_decoded_like_values(
    body: bytes, charset: str | None, fields: dict[str, str]
) -> None:
    """Escaped, plus-spaced or padded names are decoded in the body's charset too."""
    assert fields == decode_payload(body, form=True, charset=charset)


@pytest.mark.parametrize("body", [b"x%41=%FF", b"x%FF=1", b"a=1&a=%FF"])
def test_bad_escapes_on_the_slow_path_are_refused_not_replaced(body: bytes) -> None:
    """An escape that is not UTF-8 is a DecodeError, never a replacement character."""
    with pytest.raises(DecodeError) as caught:
        decode_payload(body, form=True, charset="utf-8")

    assert str(caught.value).startswith("payload is not valid utf-8: ")


@pytest.mark.parametrize(
    "body", [b"a=1&a=2", "a=1&b=2&a=1", b"orderId=1&order%49d=2"], ids=["bytes", "str", "escaped"]
)
def test_a_field_given_twice_in_a_body_is_refused_by_name(body: bytes | str) -> None:
    """A repeated field, however it is spelled, is a DuplicateFieldError naming it."""
    with pytest.raises(DuplicateFieldError) as caught:
        decode_payload(body, form=True)

    name = caught.value.field
    assert name in ("a", "orderId")
    assert f"{name}: given more than once" == str(caught.value)


def test_an_answer_with_a_repeated_field_is_refused() -> None:
    """Answers (read raw) refuse repeats too."""
    with pytest.raises(DuplicateFieldError) as caught:
        decode_payload(b"returnCode=000000&returnCode=IPS0001", form=False)

    assert "returnCode: given more than once" == str(caught.value)


REFUND_FIELDS = {
    "merchantId": "M1",
    "payNo": "P1",
    "returnCode": "000000",
    "message": "ok",
    "signType": "MD5",
    "type": "OrderRefund",
    "version": "2.0.0",
    "amount": "5",
    "orderId": "O1",
    "status": "SUCCESS",
}


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"signType": "SHA"}, "signType: 'SHA' is not one of MD5, RSA"),
        ({"signType": "M" * 30}, f"signType: {'M' * 20!r} is not one of MD5, RSA"),
        ({"merchantId": ""}, "merchantId: missing or empty"),
    ],
)
def test_typed_values_name_the_field_and_the_rule(changes: dict[str, str], why: str) -> None:
    """A value outside its choices says which it takes; a required one that is empty says so."""
    from cmpay_async._binding import typed_values
    from cmpay_async._models import RefundResult

    with pytest.raises(DecodeError) as caught:
        typed_values(REGISTRY["OrderRefundResponse"], {**REFUND_FIELDS, **changes}, RefundResult)

    assert why == str(caught.value)


def test_an_empty_optional_text_is_empty_text() -> None:
    """An optional text field that is empty reads as "" (only numbers, dates and the like read
    as None)."""
    from cmpay_async._binding import typed_values
    from cmpay_async._models import RefundResult

    values = typed_values(
        REGISTRY["OrderRefundResponse"], {**REFUND_FIELDS, "payNo": ""}, RefundResult
    )

    assert "" == values["pay_no"]


def test_readable_decodes_each_strictly_escaped_chinese_field_on_its_own() -> None:
    """A field that is not UTF-8 when decoded is kept as signed, and the next is still decoded;
    text that is not a strict escape (a space in it) is kept as signed."""
    from cmpay_async._verify import readable

    schema = REGISTRY["OfflineNotify"]
    reading = {"message": "%FF%FE", "reserved1": "%E5%A4%87", "reserved2": "%E4%B8%AD x"}

    assert {"message": "%FF%FE", "reserved1": "备", "reserved2": "%E4%B8%AD x"} == readable(
        schema, reading
    )
    # The verified reading itself is left as it was signed.
    assert {"message": "%FF%FE", "reserved1": "%E5%A4%87", "reserved2": "%E4%B8%AD x"} == reading


def test_readable_decodes_two_fields_and_takes_a_reading_without_the_others() -> None:
    """Two escaped fields are both decoded into a new dict; fields the reading lacks (an
    answer that has no reserved fields) are simply not there."""
    from cmpay_async._verify import readable

    schema = REGISTRY["OfflineNotify"]
    reading = {"message": "%E6%88%90", "reserved2": "%E5%8A%9F"}

    assert {"message": "成", "reserved2": "功"} == readable(schema, reading)
    assert {"message": "%E6%88%90", "reserved2": "%E5%8A%9F"} == reading


def test_escaped_readings_hold_each_reading_once() -> None:
    """A value whose escapes decode to nothing new gives one reading, the value as received."""
    schema = REGISTRY["OfflineNotify"]

    assert [{"message": "100%"}] == escaped_readings(schema, {"message": "100%"})
    assert [{"message": "中", "x": "1"}, {"message": "%E4%B8%AD", "x": "1"}] == escaped_readings(
        schema, {"message": "%E4%B8%AD", "x": "1"}
    )


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda w: w.__name__)
def test_every_bytes_like_payload_reads_the_same(wrap: Any) -> None:
    """bytes, bytearray and memoryview bodies give the same fields."""
    assert {"a": "中", "b": "2"} == decode_payload(wrap(b"a=%E4%B8%AD&b=2"), form=True)


def test_a_payload_of_another_type_is_refused_by_type() -> None:
    """An int (or anything but bytes, str or a mapping) is named."""
    with pytest.raises(DecodeError) as caught:
        decode_payload(42, form=True)  # type: ignore[arg-type]

    assert "payload must be bytes, str or a mapping, not int" == str(caught.value)


@pytest.mark.parametrize(
    ("payload", "size"),
    [(b"a=" + b"1" * 18, 20), ("a=" + "中" * 6, 20), ("a=" + "1" * 18, 20)],
    ids=["bytes", "chinese-str", "ascii-str"],
)
def test_the_payload_cap_holds_to_the_byte(payload: bytes | str, size: int) -> None:
    """A payload of exactly the cap is read; one byte more (UTF-8 bytes for a str) is not."""
    assert decode_payload(payload, form=True, max_size=size)

    with pytest.raises(PayloadTooLargeError) as caught:
        decode_payload(payload, form=True, max_size=size - 1)

    assert f"payload of {size} bytes is over {size - 1} bytes" == str(caught.value)


@pytest.mark.parametrize("payload", [b"", b"  \r\n", "   "])
def test_an_empty_payload_says_so(payload: bytes | str) -> None:
    """Nothing, or only whitespace: "payload is empty"."""
    with pytest.raises(DecodeError) as caught:
        decode_payload(payload, form=True)

    assert "payload is empty" == str(caught.value)


def test_bytes_in_neither_charset_say_why_in_both_names() -> None:
    """Neither UTF-8 nor GBK: both named, with the last decoder's reason."""
    body = b"a=\x80\xff"
    try:
        body.decode("gbk")
    except UnicodeDecodeError as exc:
        reason = exc.reason

    with pytest.raises(DecodeError) as caught:
        decode_payload(body, form=True)

    assert f"payload is not valid utf-8 or gbk: {reason}" == str(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        b"reserved1=a+b&reserved2=c%2Bd",  # names as sent: the quick path
        b"reserved1=a+b&reserved%32=c%2Bd",  # a percent-encoded name: field by field
        b"reserved1=a+b& reserved2=c%2Bd",  # a name to strip: field by field
    ],
)
def test_a_plus_is_a_space_however_the_names_are_written(body: bytes) -> None:
    """'+' in a form value is a space and '%2B' a plus, on every path through the decoder."""
    assert {"reserved1": "a b", "reserved2": "c+d"} == decode_payload(body, form=True)


def test_an_unknown_charset_is_named() -> None:
    """A charset Python has no codec for is a DecodeError naming it."""
    with pytest.raises(DecodeError) as caught:
        decode_payload(b"a=1", form=True, charset="klingon-8")

    assert "unknown charset 'klingon-8'" == str(caught.value)


def test_a_gbk_value_is_decoded_as_gbk_on_the_field_by_field_path() -> None:
    """A percent-encoded name sends the body down the slower path; its values keep the
    body's charset there too."""
    body = b"reserved%31=%D6%D0%CE%C4&reserved2=%D6%D0"

    assert {"reserved1": "中文", "reserved2": "中"} == decode_payload(
        body, form=True, charset="gbk"
    )


def test_a_repeated_field_is_named_even_after_a_gbk_value() -> None:
    """The duplicate is what is reported, not a charset error from the values before it."""
    with pytest.raises(DuplicateFieldError) as caught:
        decode_payload(b"reserved1=%D6%D0&reserved1=x", form=True, charset="gbk")

    assert "reserved1" == caught.value.field
