"""Notifications built with the standard library alone, from the vectors' field order.

The boundary-shift fuzzer and the grammar vectors sign and encode with these helpers, never
with the library's own signing or encoding, so that a bug there cannot hide itself.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from urllib.parse import quote_plus, urlencode

from tests.support.helpers import TEST_MERCHANT, load_vectors, reference_hmac

ORDER: list[str] = load_vectors("field_orders.json")["orders"]["PageNotify"]
GRAMMAR = load_vectors("notification_grammar.json")
BANK_CODES: list[str] = GRAMMAR["bank_codes"]
RETURN_CODES: list[str] = GRAMMAR["return_codes"]
PARTS: list[str] = [key for key, _, _ in GRAMMAR["amt_item"]["parts"]]
CHARSETS = ("utf-8", "gbk", "gb2312")
#: Common characters that GB2312 (and so GBK) can encode.
CHINESE = "学习千元山水交易成功支付订单商户手机中国移动和包咖啡茶书包月会员充值卡积分红包测试"


def section_8_3() -> dict[str, str]:
    """The document's section 8.3 notification as wire fields, without serverCert and hmac."""
    body = load_vectors("md5.json")["vectors"][0]["body"]
    from urllib.parse import parse_qsl

    fields = dict(parse_qsl(body, keep_blank_values=True))
    return {name: fields[name] for name in ORDER}


def signed_body(
    fields: Mapping[str, str], charset: str = "utf-8", hmac: str | None = None
) -> bytes:
    """The form body the gateway posts: the fields in order, serverCert, then the hmac of the
    values joined (PROTOCOL.md section 1), percent-encoded in ``charset``."""
    if hmac is None:
        hmac = reference_hmac("".join(fields[name] for name in ORDER).encode("utf-8"))
    pairs = [(name, fields[name]) for name in ORDER] + [("serverCert", ""), ("hmac", hmac)]
    return urlencode(pairs, encoding=charset, quote_via=quote_plus).encode("ascii")


def random_notification(rng: random.Random, order_id: str) -> dict[str, str]:
    """A realistic notification for ``order_id``: paid or failed, any bank or none, masked
    mobile or none, free text in Chinese or ASCII or nothing, parts that add up."""
    status = rng.choice(["SUCCESS", "SUCCESS", "SUCCESS", "FAILED"])
    amount = rng.choice([1, 100, 1250, rng.randrange(1, 10**7)])
    if status == "FAILED" and rng.random() < 0.5:
        parts = [0] * 5
    else:
        cuts = sorted(rng.randrange(amount + 1) for _ in range(4)) if rng.random() < 0.4 else []
        parts = (
            [b - a for a, b in zip([0, *cuts], [*cuts, amount], strict=True)]
            if cuts
            else [amount, 0, 0, 0, 0]
        )
    code = "000000" if status == "SUCCESS" else rng.choice(RETURN_CODES)
    if status == "SUCCESS" and rng.random() < 0.3:
        code = "MCG00000"
    year, month, day = rng.randrange(2011, 2031), rng.randrange(1, 13), rng.randrange(1, 29)
    date = f"{year:04d}{month:02d}{day:02d}"
    return {
        "merchantId": TEST_MERCHANT,
        "payNo": "".join(rng.choices("0123456789", k=rng.choice([12, 18, 20]))),
        "returnCode": code,
        "message": rng.choice(["", "SUCCESS", "交易成功", _text(rng)]),
        "signType": "MD5",
        "type": rng.choice(["PageNotify", "OfflineNotify"]),
        "version": "2.0.0",
        "amount": str(amount),
        "amtItem": "#".join(f"{key}={value}" for key, value in zip(PARTS, parts, strict=True)),
        "bankAbbr": rng.choice(["", "", *BANK_CODES]),
        "mobile": rng.choice(["", f"{rng.randrange(130, 200)}****{rng.randrange(10**4):04d}"]),
        "orderId": order_id,
        "payDate": f"{date}{rng.randrange(24):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}",
        "accountDate": date,
        "reserved1": rng.choice(["", "", _text(rng), "vip"]),
        "reserved2": rng.choice(["", "", _text(rng), "12"]),
        "status": status,
        "orderDate": date,
        "fee": str(rng.choice([0, 0, rng.randrange(1, 500)])),
    }


def _text(rng: random.Random) -> str:
    return "".join(rng.choices(CHINESE, k=rng.randrange(1, 6)))


def shifts(fields: Mapping[str, str], most: int = 3) -> list[tuple[str, str, dict[str, str]]]:
    """Every way of moving 1 to ``most`` characters across one field boundary, also across
    empty fields between the two: (from, to, shifted fields). The values still join into the
    same signed string, so each shifted notification carries the same hmac."""
    out = []
    for i, source in enumerate(ORDER):
        for j, target in enumerate(ORDER):
            if i == j or any(fields[ORDER[m]] for m in range(min(i, j) + 1, max(i, j))):
                continue  # not neighbours: a non-empty field stands between them
            value = fields[source]
            for k in range(1, min(most, len(value)) + 1):
                shifted = dict(fields)
                if i < j:  # the end of an earlier field moves to the start of a later one
                    shifted[source], shifted[target] = value[:-k], value[-k:] + fields[target]
                else:
                    shifted[source], shifted[target] = value[k:], fields[target] + value[:k]
                out.append((source, target, shifted))
    return out
