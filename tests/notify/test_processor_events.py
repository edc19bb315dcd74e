"""What the handler is given, what is logged, and how the processor treats its store's answers.

The store here is MemoryStore or a recording wrapper: these tests are about the processor's
own decisions, which the store-by-store tests in test_processor.py do not pin down.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

import pytest

from cmpay_async import (
    Md5Signer,
    NotificationProcessor,
    OfflineNotify,
    PageNotify,
    PaymentEvent,
    event_key,
    verify_notification,
)
from cmpay_async.stores import Claimed, ClaimState, MemoryStore
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, sign_notification
from tests.support.helpers import query_result

pytestmark = pytest.mark.anyio

VERIFIER = Md5Signer(PUBLIC_TEST_KEY)


class Recording(MemoryStore):
    """MemoryStore that remembers the leases asked for, and can be told to lose a lease."""

    def __init__(self) -> None:
        super().__init__()
        self.leases: list[float] = []
        self.lose_lease = False

    async def claim(self, key: str, *, lease: float) -> Claimed:
        self.leases.append(lease)
        return await super().claim(key, lease=lease)

    async def complete(self, key: str, token: str) -> bool:
        if self.lose_lease:
            return False
        return await super().complete(key, token)


def _processor(store: Any, seen: list[PaymentEvent], **kw: Any) -> NotificationProcessor:
    async def handler(event: PaymentEvent) -> None:
        seen.append(event)

    return NotificationProcessor(
        verifier=VERIFIER, merchant_id=PUBLIC_TEST_MERCHANT, store=store, handler=handler, **kw
    )


@pytest.mark.parametrize(
    ("kind", "model"), [("OfflineNotify", OfflineNotify), ("PageNotify", PageNotify)]
)
async def test_a_notification_event_carries_the_verified_notification(
    kind: str, model: type[Any]
) -> None:
    """source, key, order, amount, payNo and the notification itself; no query."""
    seen: list[PaymentEvent] = []
    body = sign_notification(kind=kind, order_id="EV1", amount=1250, pay_no="PAYNO123")

    await _processor(MemoryStore(), seen).process(body)

    (event,) = seen
    expected = verify_notification(body, verifier=VERIFIER)
    assert isinstance(event.notification, model)
    assert (kind, "EV1", True, 1250, "PAYNO123") == (
        event.source,
        event.order_id,
        event.paid,
        event.amount,
        event.pay_no,
    )
    assert event_key(PUBLIC_TEST_MERCHANT, "EV1", "SUCCESS") == event.key
    assert expected == event.notification
    assert event.query is None
    # The same event as the documented constructor makes: equal, same hash, same repr, and
    # it survives pickling (a handler may queue it).
    built = PaymentEvent(
        source=kind,  # type: ignore[arg-type]
        key=f"cmpay:{PUBLIC_TEST_MERCHANT}:EV1:SUCCESS",
        order_id="EV1",
        paid=True,
        amount=1250,
        pay_no="PAYNO123",
        notification=expected,
    )
    assert built == event
    assert hash(built) == hash(event)
    assert repr(built) == repr(event)
    assert built == pickle.loads(pickle.dumps(event))


async def test_a_reconciliation_event_carries_the_query_result() -> None:
    """source "reconciliation", the query result itself, its payNo; no notification."""
    seen: list[PaymentEvent] = []
    result = query_result("EV2", "SUCCESS")

    assert await _processor(MemoryStore(), seen).process_result(result)

    (event,) = seen
    assert ("reconciliation", "EV2", "P9", 5) == (
        event.source,
        event.order_id,
        event.pay_no,
        event.amount,
    )
    assert result is event.query
    assert event.notification is None


async def test_claims_are_leased_for_sixty_seconds_unless_told() -> None:
    """The documented default lease is 60 s; `lease=` changes it."""
    default, chosen = Recording(), Recording()

    await _processor(default, []).process(sign_notification(order_id="L1", amount=1))
    await _processor(chosen, [], lease=5.5).process(sign_notification(order_id="L1", amount=1))

    assert ([60.0], [5.5]) == (default.leases, chosen.leases)


async def test_another_merchants_notification_is_refused_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """merchant_id is checked: a notification for another merchant never reaches the handler."""
    seen: list[PaymentEvent] = []
    body = sign_notification(order_id="M1", amount=1, merchant_id="888000000000009")

    with caplog.at_level(logging.WARNING, logger="cmpay_async"):
        answer = await _processor(MemoryStore(), seen).process(body)

    assert (400, b"FAIL", []) == (answer.status_code, answer.body, seen)
    assert ["refused a notification: merchantId: is not this merchant's id"] == [
        r.getMessage() for r in caplog.records
    ]


async def test_the_charset_given_is_the_one_read() -> None:
    """process(charset=...) reads the body in that charset (UTF-8 read as GBK is refused)."""
    seen: list[PaymentEvent] = []
    body = sign_notification(order_id="C1", amount=1, message="支付成功")
    processor = _processor(MemoryStore(), seen)

    assert 400 == (await processor.process(body, charset="gbk")).status_code
    assert 200 == (await processor.process(body, charset="utf-8")).status_code
    assert ["C1"] == [e.order_id for e in seen]


async def test_a_failing_handler_is_logged_with_the_key(caplog: pytest.LogCaptureFixture) -> None:
    """The handler's exception is logged with its traceback and the event's key."""

    async def failing(event: PaymentEvent) -> None:
        raise ValueError("ledger down")

    processor = NotificationProcessor(
        verifier=VERIFIER, merchant_id=PUBLIC_TEST_MERCHANT, store=MemoryStore(), handler=failing
    )
    with caplog.at_level(logging.ERROR, logger="cmpay_async"):
        answer = await processor.process(sign_notification(order_id="F1", amount=1))

    key = event_key(PUBLIC_TEST_MERCHANT, "F1", "SUCCESS")
    assert b"SUCCESS" != answer.body
    (record,) = caplog.records
    assert f"the payment handler failed for {key}; released for a retry" == record.getMessage()
    assert record.exc_info is not None
    assert "ledger down" == str(record.exc_info[1])


async def test_a_lost_lease_is_logged_once_done(caplog: pytest.LogCaptureFixture) -> None:
    """A handler that outlived its lease still counts as done, and says so in the log."""
    store = Recording()
    seen: list[PaymentEvent] = []
    key = event_key(PUBLIC_TEST_MERCHANT, "LL1", "SUCCESS")

    with caplog.at_level(logging.WARNING, logger="cmpay_async"):
        ok = await _processor(store, seen, lease=7.0).process(
            sign_notification(order_id="LL1", amount=1)
        )
        assert [] == caplog.records  # completed within its lease: nothing to say
        store.lose_lease = True
        late = await _processor(store, seen, lease=7.0).process(
            sign_notification(order_id="LL2", amount=1)
        )

    assert (b"SUCCESS", b"SUCCESS") == (ok.body, late.body)
    other = event_key(PUBLIC_TEST_MERCHANT, "LL2", "SUCCESS")
    assert [f"the handler for {other} outlived its 7.0 s lease: another worker may run it too"] == [
        r.getMessage() for r in caplog.records
    ]
    assert key != other


class Answering(MemoryStore):
    """A custom store whose every claim is one fixed answer."""

    def __init__(self, answer: Claimed) -> None:
        super().__init__()
        self.answer = answer

    async def claim(self, key: str, *, lease: float) -> Claimed:
        return self.answer


async def test_a_claim_without_a_token_never_runs_the_handler() -> None:
    """Without a token the worker could neither complete nor release: it must not run."""
    seen: list[PaymentEvent] = []

    answer = await _processor(Answering(Claimed(ClaimState.NEW, None)), seen).process(
        sign_notification(order_id="B1", amount=1)
    )

    assert (b"SUCCESS" != answer.body, []) == (True, seen)


@pytest.mark.parametrize(
    ("state", "body"), [(ClaimState.DONE, b"SUCCESS"), (ClaimState.IN_PROGRESS, b"FAIL")]
)
async def test_only_a_new_claim_runs_the_handler_whatever_token_comes_with_it(
    state: ClaimState, body: bytes
) -> None:
    """A token beside DONE or IN_PROGRESS (a store of the application's own may send one)
    gives no ownership: the handler does not run, and the answer is the state's."""
    seen: list[PaymentEvent] = []
    store = Answering(Claimed(state, "t-1"))

    answer = await _processor(store, seen).process(sign_notification(order_id="T1", amount=1))

    assert (body, []) == (answer.body, seen)
