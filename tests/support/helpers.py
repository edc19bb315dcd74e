"""Test data shared by several test modules: vectors, keys and a valid order."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from cmpay_async import (
    CmpayClient,
    Md5Signer,
    NotificationProcessor,
    Order,
    OrderQueryResult,
    RetryPolicy,
    SignType,
)
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT

#: Whether the tests run in mutmut's copy of the tree (``mutants/``), whose modules hold a copy
#: of each function per mutant: checks of the source's own shape do not apply there. Known at
#: collection, where mutmut's fork server has not set ``MUTANT_UNDER_TEST`` yet.
IN_MUTMUT_TREE = (
    Path(__file__).resolve().parents[2].name == "mutants" or "MUTANT_UNDER_TEST" in os.environ
)
VECTORS = Path(__file__).parents[1] / "vectors"


def fuzz_examples(count: int) -> int:
    """``count`` fuzz examples, or a hundredth under ``nox -s mutants``, which runs the
    fuzzers once per mutant (the behaviour tests, not the fuzzers, are meant to kill them;
    a twentieth of the 100,000-payload shift fuzzer outlived the 30 s limit per test there)."""
    return max(100, count // int(os.environ.get("CMPAY_FUZZ_DIVISOR", "1")))


def reference_hmac(source: bytes, key: str = PUBLIC_TEST_KEY) -> str:
    """PROTOCOL.md's double HMAC-MD5, written with the stdlib alone (not the library's code):
    HMAC-MD5 with an empty key over the source bytes, then with the signKey over that hex."""
    inner = hmac.new(b"", source, hashlib.md5).hexdigest()
    return hmac.new(key.encode("ascii"), inner.encode("ascii"), hashlib.md5).hexdigest()


def load_vectors(name: str) -> dict[str, Any]:
    """Load a JSON vector file from ``tests/vectors``."""
    data: dict[str, Any] = json.loads((VECTORS / name).read_text("utf-8"))
    return data


MD5_VECTORS = load_vectors("md5.json")
TEST_KEY: str = MD5_VECTORS["sign_key"]
TEST_MERCHANT = "888009941120001"
NOTIFY_BODY: str = MD5_VECTORS["vectors"][0]["body"]
TODAY = dt.date(2026, 11, 26)


@functools.lru_cache(maxsize=4)
def rsa_key(bits: int = 1024) -> rsa.RSAPrivateKey:
    """A throwaway RSA key, generated once per test run (no public RSA vector exists)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def valid_order(**overrides: Any) -> Order:
    """An order that passes every check; override fields to break them."""
    values: dict[str, Any] = {
        "amount": 100,
        "order_id": "201103071740044998",
        "product_name": "测试商品",
        "product_desc": "一件商品",
        "merchant_abbr": "商户",
        "reserved1": "31",
        "bank_abbr": "ICBC",
        "callback_url": "https://shop.example/cmpay/return",
        "notify_url": "https://shop.example/cmpay/notify",
    }
    values.update(overrides)
    return Order(**values)


ENDPOINT = "https://sandbox.test/ips/cmpayService"
FIXED_NOW = dt.datetime(2026, 11, 26, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
NO_WAIT = RetryPolicy(attempts=3, initial_backoff=0, max_backoff=0)


def make_client(transport: httpx.AsyncBaseTransport, **kw: Any) -> CmpayClient:
    """A client of the public test merchant on the given transport (no backoff, fixed now)."""
    args: dict[str, Any] = {
        "merchant_id": PUBLIC_TEST_MERCHANT,
        "signer": Md5Signer(PUBLIC_TEST_KEY),
        "endpoint": ENDPOINT,
        "transport": transport,
        "retry": NO_WAIT,
        "clock": lambda: FIXED_NOW,
    }
    args.update(kw)
    return CmpayClient(**args)


class _AsyncMock(httpx.AsyncBaseTransport):
    """A transport calling an async handler (httpx.MockTransport takes sync ones too)."""

    def __init__(self, handler: Callable[[httpx.Request], Any]) -> None:
        self.handler = handler

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        result: httpx.Response = await self.handler(request)
        return result


def sandbox_client(gateway: str, shop: str, **kw: Any) -> CmpayClient:
    """A client of the public test merchant for a sandbox at ``gateway`` and a shop."""
    return CmpayClient(
        merchant_id=PUBLIC_TEST_MERCHANT,
        signer=Md5Signer(PUBLIC_TEST_KEY),
        endpoint=f"{gateway}/ips/cmpayService",
        callback_url=f"{shop}/return",
        notify_url=f"{shop}/notify",
        **kw,
    )


def query_result(order_id: str, status: str = "SUCCESS", amount: int = 5) -> OrderQueryResult:
    """A verified OrderQuery answer of the public test merchant, as reconciliation gets it."""
    return OrderQueryResult(
        merchant_id=PUBLIC_TEST_MERCHANT,
        return_code="000000",
        message=status,
        sign_type=SignType.MD5,
        type="OrderQuery",
        version="2.0.0",
        order_id=order_id,
        status=status,
        pay_no="P9",
        amount=amount,
        amount_items=None,
        bank_abbr="",
        mobile="",
        pay_date=None,
        order_date=None,
        fee=None,
        reserved1="",
        reserved2="",
    )


def chinese_direct_pay_fields() -> dict[str, str]:
    """A fresh DirectPayConfirm's unsigned fields with a Chinese product name (the IPS0008
    cases of ``cmpay verify``)."""
    return {
        "characterSet": "02",
        "callbackUrl": "https://shop.example/r",
        "notifyUrl": "https://shop.example/n",
        "ipAddress": "203.0.113.7",
        "merchantId": "888009941120001",
        "requestId": "20261126093000000001",
        "signType": "MD5",
        "type": "DirectPayConfirm",
        "version": "2.0.0",
        "amount": "1250",
        "currency": "00",
        "orderDate": "20261126",
        "orderId": "CN1001",
        "period": "1",
        "periodUnit": "02",
        "productName": "咖啡",
    }


def processor_for(store: Any, handler: Any, **kw: Any) -> NotificationProcessor:
    """A NotificationProcessor on the public test key and merchant (``kw``: its other options)."""
    return NotificationProcessor(
        verifier=Md5Signer(PUBLIC_TEST_KEY),
        merchant_id=PUBLIC_TEST_MERCHANT,
        store=store,
        handler=handler,
        **kw,
    )
