"""The processor every shop app shares: a SqliteStore and a handler counting its runs."""

from __future__ import annotations

import os
import time

from cmpay_async import Md5Signer, NotificationProcessor, PaymentEvent
from cmpay_async.stores.sqlite import SqliteStore
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT
from tests.support.inbox_handler import record

SUCCESS_URL, FAILURE_URL = "/paid", "/not-paid"


def handle(event: PaymentEvent) -> None:
    """Count one run (slowly enough that duplicates arrive while it runs)."""
    time.sleep(0.05)
    record(event)


PROCESSOR = NotificationProcessor(
    verifier=Md5Signer(PUBLIC_TEST_KEY),
    merchant_id=PUBLIC_TEST_MERCHANT,
    store=SqliteStore(os.environ["CMPAY_EVENTS_DB"]),
    handler=handle,
)
REDIRECT = {"success_url": SUCCESS_URL, "failure_url": FAILURE_URL}
