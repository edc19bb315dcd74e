"""The settings every recipe reads from its environment (your deployment, or the tests)."""

from __future__ import annotations

import os
from typing import Any

from cmpay_async import PRODUCTION_ENDPOINT, Md5Signer

#: The broker (and result store) of the Celery, arq and taskiq recipes.
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
#: A queue name of its own, so that several deployments (or test runs) share one Redis.
QUEUE = os.environ.get("CMPAY_QUEUE", "cmpay")


def client_settings() -> dict[str, Any]:
    """Keyword arguments of CmpayClient / BlockingCmpayClient; the key comes from the env."""
    shop = os.environ["SHOP_URL"]
    return {
        "merchant_id": os.environ["CMPAY_MERCHANT_ID"],
        "signer": Md5Signer(os.environ["CMPAY_SIGN_KEY"]),
        "endpoint": os.environ.get("CMPAY_ENDPOINT", PRODUCTION_ENDPOINT),
        "callback_url": f"{shop}/cmpay/return",
        "notify_url": f"{shop}/cmpay/notify",
    }
