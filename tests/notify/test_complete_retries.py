"""The processor's record of a handled event: a ``complete`` the store fails is tried again,
with growing pauses, until the lease ends; each way it ends is logged, with its key and cause.

The pauses are counted, not waited: the module's pause function and clock are replaced by a
hand-moved clock, so the schedule (50 ms doubling to at most 1 s, stopping before the lease
ends) is asserted exactly and the tests take no time.
"""

from __future__ import annotations

import logging
import types
from pathlib import Path
from typing import Any

import anyio
import pytest

from cmpay_async import (
    ConfigurationError,
    Md5Signer,
    NotificationProcessor,
    PaymentEvent,
    StoreTimeoutError,
    event_key,
)
from cmpay_async import _processor as processor_module
from cmpay_async.stores import ClaimState, MemoryStore, Store
from cmpay_async.stores.sqlite import SqliteStore
from cmpay_async.testing import PUBLIC_TEST_MERCHANT, sign_notification
from tests.support.helpers import processor_for

pytestmark = pytest.mark.anyio

ORDER = "C1"
KEY = event_key(PUBLIC_TEST_MERCHANT, ORDER, "SUCCESS")


class HandClock:
    """``time.monotonic`` and the pause function of the processor: pausing moves the clock."""

    def __init__(self) -> None:
        self.now = 5_000.0
        self.pauses: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> HandClock:
    """The processor's clock and pauses, by hand."""
    hand = HandClock()
    monkeypatch.setattr(processor_module, "time", types.SimpleNamespace(monotonic=hand.monotonic))
    monkeypatch.setattr(processor_module, "_pause", hand.pause)
    return hand


class FailingCompletes(MemoryStore):
    """A MemoryStore whose ``complete`` raises ``fails`` times (a disk that filled up, then
    was freed), then answers ``answer`` (None: what the memory store itself says)."""

    def __init__(self, fails: int, answer: bool | None = None) -> None:
        super().__init__()
        self.fails = fails
        self.answer = answer
        self.calls: list[tuple[str, str]] = []

    async def complete(self, key: str, token: str) -> bool:
        self.calls.append((key, token))
        if len(self.calls) <= self.fails:
            raise OSError(f"disk full (call {len(self.calls)})")
        if self.answer is not None:
            return self.answer
        return await super().complete(key, token)


def _processor(store: Store, seen: list[str], lease: float = 60) -> NotificationProcessor:
    async def handler(event: PaymentEvent) -> None:
        seen.append(event.order_id)

    return processor_for(store, handler, lease=lease)


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


async def test_a_complete_that_fails_three_times_is_recorded_at_the_fourth_try(
    clock: HandClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Pauses of 50, 100 and 200 ms; one WARNING names the key, the try and the last cause;
    the event is done: the next delivery is SUCCESS without the handler."""
    caplog.set_level(logging.WARNING, logger="cmpay_async")
    store = FailingCompletes(fails=3)
    seen: list[str] = []
    processor = _processor(store, seen)
    body = sign_notification(order_id=ORDER, amount=100)

    assert b"SUCCESS" == (await processor.process(body)).body

    assert [0.05, 0.1, 0.2] == clock.pauses
    assert 4 == len(store.calls)
    assert {KEY} == {key for key, _ in store.calls}
    assert 1 == len({token for _, token in store.calls})  # the claim's own token, each time
    [warning] = _messages(caplog, logging.WARNING)
    assert warning.startswith(f"completed {KEY} at try 4: ")
    assert warning.endswith(
        "FailingCompletes failed to complete: OSError: disk full (call 3) [complete]"
    )
    assert [] == _messages(caplog, logging.ERROR)
    assert b"SUCCESS" == (await processor.process(body)).body
    assert [ORDER] == seen
    assert ClaimState.DONE is (await store.claim(KEY, lease=1)).state


async def test_the_pause_doubles_up_to_one_second(clock: HandClock) -> None:
    """Eight failures: the pauses double from 50 ms and stay at 1 s."""
    store = FailingCompletes(fails=8)
    processor = _processor(store, [])

    assert b"SUCCESS" == (await processor.process(sign_notification(order_id=ORDER))).body

    assert [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0] == clock.pauses
    assert 9 == len(store.calls)


async def test_the_tries_stop_before_the_lease_ends(
    clock: HandClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that never records: tried while the next pause still ends within the lease
    (2 s: 50+100+200+400+800 ms of pauses is 1.55 s, the next would end at 2.55 s); then
    SUCCESS (the handler ran) and one ERROR with the key, the number of tries and the cause."""
    caplog.set_level(logging.WARNING, logger="cmpay_async")
    store = FailingCompletes(fails=1_000)
    seen: list[str] = []

    answer = await _processor(store, seen, lease=2).process(sign_notification(order_id=ORDER))

    assert b"SUCCESS" == answer.body
    assert [ORDER] == seen
    assert [0.05, 0.1, 0.2, 0.4, 0.8] == clock.pauses
    assert 6 == len(store.calls)
    assert [] == _messages(caplog, logging.WARNING)
    [error] = _messages(caplog, logging.ERROR)
    assert error.startswith(
        f"the handler for {KEY} ran but the store could not record it in 6 tries within its "
        "lease; answered SUCCESS, and a later delivery may run the handler again after the "
        "lease: FailingCompletes failed to complete: OSError: disk full (call 6) [complete]"
    )


@pytest.mark.parametrize(("beyond", "tries"), [(0.0, 5), (1e-9, 6)])
async def test_a_pause_that_would_end_exactly_at_the_lease_is_not_taken(
    clock: HandClock, beyond: float, tries: int
) -> None:
    """The lease's end is excluded: a try after a pause that ends when the lease ends could
    find the key claimed by another worker already. The lease here ends exactly when the
    fifth pause (800 ms) would (or a nanosecond later: then that pause is taken)."""
    store = FailingCompletes(fails=1_000)
    start = after = clock.now
    pause = 0.05
    for _ in range(4):  # the test's own arithmetic, in the same float steps as the clock's
        after += pause
        pause *= 2
    lease = (after + pause) - start + beyond

    await _processor(store, [], lease=lease).process(sign_notification(order_id=ORDER))

    assert tries == len(store.calls)


async def test_a_failed_complete_then_a_key_no_longer_held_is_a_warning(
    clock: HandClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The first complete fails, the second finds the key no longer held (the first one was
    recorded after all, or the lease ended): a WARNING with the key and the first failure,
    no ERROR (that is for a handler that outlived its lease)."""
    caplog.set_level(logging.WARNING, logger="cmpay_async")
    store = FailingCompletes(fails=1, answer=False)

    answer = await _processor(store, []).process(sign_notification(order_id=ORDER))

    assert b"SUCCESS" == answer.body
    assert [0.05] == clock.pauses
    assert [
        f"completing {KEY} failed and a later try found the key no longer held: an earlier "
        "call was recorded, or the lease ended "
        "(FailingCompletes failed to complete: OSError: disk full (call 1) [complete])"
    ] == _messages(caplog, logging.WARNING)
    assert [] == _messages(caplog, logging.ERROR)


async def test_a_handler_that_outlived_its_lease_is_an_error(
    clock: HandClock, caplog: pytest.LogCaptureFixture
) -> None:
    """complete() says the key is no longer this worker's at the first try: an ERROR that
    names the key and the lease, no pause."""
    caplog.set_level(logging.WARNING, logger="cmpay_async")
    store = FailingCompletes(fails=0, answer=False)

    await _processor(store, [], lease=7).process(sign_notification(order_id=ORDER))

    assert [] == clock.pauses
    assert [
        f"the handler for {KEY} outlived its 7 s lease: another worker may run it too"
    ] == _messages(caplog, logging.ERROR)


async def test_the_memory_store_reports_a_handler_that_outlived_its_lease(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the library's MemoryStore too: when the handler ran past its lease and another
    worker claimed the key meanwhile, the completion is refused; the ERROR names the key and
    the lease, and the answer is SUCCESS (the handler's work is done, and the other worker
    answers for its own claim)."""
    caplog.set_level(logging.WARNING, logger="cmpay_async")
    now = [100.0]
    store = MemoryStore(clock=lambda: now[0])
    others: list[Any] = []

    async def slow_handler(event: PaymentEvent) -> None:
        now[0] += 8.0  # past the 7 s lease
        others.append(await store.claim(event.key, lease=60))  # another worker's delivery

    processor = processor_for(store, slow_handler, lease=7)
    answer = await processor.process(sign_notification(order_id=ORDER))

    assert b"SUCCESS" == answer.body
    assert [ClaimState.NEW] == [claimed.state for claimed in others]
    assert [
        f"the handler for {KEY} outlived its 7 s lease: another worker may run it too"
    ] == _messages(caplog, logging.ERROR)
    # The key is the other worker's still: its own completion is the one recorded.
    assert await store.complete(KEY, others[0].token)


async def test_the_memory_store_completes_in_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The library's MemoryStore cannot fail half-way: one completion with the claim's key and
    token, nothing more (made as a plain call, ``MemoryStore._finish``)."""
    store = MemoryStore()
    calls: list[tuple[Any, ...]] = []
    finish = store._finish

    def counted(*args: Any) -> bool:
        calls.append(args)
        return finish(*args)

    monkeypatch.setattr(store, "_finish", counted)
    answer = await _processor(store, []).process(sign_notification(order_id=ORDER))

    assert b"SUCCESS" == answer.body
    [(key, token)] = calls
    assert KEY == key
    assert isinstance(token, str)
    assert token
    assert ClaimState.DONE is (await store.claim(KEY, lease=1)).state


@pytest.mark.parametrize("store_timeout", [30, 0.001])
def test_store_timeout_bounds_are_inclusive_at_30(store_timeout: float) -> None:
    """``store_timeout`` is above 0 and at most 30 s: both ends of that range are accepted."""
    processor = processor_for(MemoryStore(), lambda event: None, store_timeout=store_timeout)
    assert store_timeout == processor.store_timeout


class FailingReleases(MemoryStore):
    """A MemoryStore whose ``release`` raises (the store went away while the handler ran)."""

    async def release(self, key: str, token: str) -> None:
        raise OSError("connection reset")


async def test_a_release_the_store_fails_is_a_warning_naming_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The handler failed and the release failed too: FAIL (the gateway sends it again), and
    one WARNING that names the key, the wait for the lease, and the failed release."""
    caplog.set_level(logging.WARNING, logger="cmpay_async")

    async def failing(event: PaymentEvent) -> None:
        raise RuntimeError("ledger down")

    processor = processor_for(FailingReleases(), failing)
    answer = await processor.process(sign_notification(order_id=ORDER))

    assert b"FAIL" == answer.body
    released = [m for m in _messages(caplog, logging.WARNING) if m.startswith("could not")]
    assert [
        f"could not release {KEY}; the next delivery waits for its lease to end: "
        "FailingReleases failed to release: OSError: connection reset [release]"
    ] == released


async def test_receive_tells_what_became_of_each_notification() -> None:
    """``receive``'s Receipt: the answer, the verified notification, whether the event is
    handled, and the refusal's error, for each way a delivery can end."""
    calls: list[str] = []

    async def handler(event: PaymentEvent) -> None:
        calls.append(event.order_id)
        if event.order_id == "BAD":
            raise RuntimeError("ledger down")

    processor = processor_for(MemoryStore(), handler)
    good = await processor.receive(sign_notification(order_id="GOOD", amount=100))
    again = await processor.receive(sign_notification(order_id="GOOD", amount=100))
    failed = await processor.receive(sign_notification(order_id="BAD", amount=100))
    forged = await processor.receive(
        sign_notification(order_id="FORGED", signer=Md5Signer("x" * 64))
    )

    assert (200, b"SUCCESS", True, None) == (
        good.ack.status_code,
        good.ack.body,
        good.handled,
        good.error,
    )
    assert good.notification is not None
    assert ("GOOD", 100) == (good.notification.order_id, good.notification.amount)
    assert (b"SUCCESS", True, None) == (again.ack.body, again.handled, again.error)
    assert (b"FAIL", False, None) == (failed.ack.body, failed.handled, failed.error)
    assert failed.notification is not None
    assert "BAD" == failed.notification.order_id
    assert (400, b"FAIL", False, None) == (
        forged.ack.status_code,
        forged.ack.body,
        forged.handled,
        forged.notification,
    )
    assert "SignatureError" == type(forged.error).__name__
    assert ["GOOD", "BAD"] == calls


async def test_a_plain_handler_that_returns_a_coroutine_has_it_awaited() -> None:
    """A plain function handing back a coroutine (a lambda around an async function): the
    coroutine runs before SUCCESS."""
    seen: list[str] = []

    async def record(event: PaymentEvent) -> None:
        seen.append(event.order_id)

    processor = processor_for(MemoryStore(), lambda event: record(event))
    assert b"SUCCESS" == (await processor.process(sign_notification(order_id=ORDER))).body
    assert [ORDER] == seen


@pytest.mark.parametrize("call", ["process", "receive"])
async def test_a_claim_the_library_store_fails_is_a_warning_naming_the_claim(
    call: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The library's own store (no cancel scope of the processor's around it) fails the
    claim: 503 FAIL, and a WARNING that names the failed claim (process and receive)."""
    caplog.set_level(logging.WARNING, logger="cmpay_async")
    store = SqliteStore(tmp_path / "missing" / "events.db")
    try:
        processor = _processor(store, [])
        if call == "process":
            answer = await processor.process(sign_notification(order_id=ORDER))
        else:
            receipt = await processor.receive(sign_notification(order_id=ORDER))
            assert (False, None) == (receipt.handled, receipt.error)
            assert receipt.notification is not None
            assert ORDER == receipt.notification.order_id
            answer = receipt.ack
    finally:
        store.close()

    assert (503, b"FAIL") == (answer.status_code, answer.body)
    [warning] = _messages(caplog, logging.WARNING)
    assert warning.startswith(
        "the store failed, the handler did not run; answered FAIL: SqliteStore failed to claim: "
        "OperationalError: "
    )
    assert warning.endswith(" [claim]")


class TimingOutClaims(MemoryStore):
    """A store of the application's own whose driver times out."""

    async def claim(self, key: str, *, lease: float) -> Any:
        raise TimeoutError("the server did not answer")


async def test_a_timeout_of_a_custom_store_is_a_store_timeout_error() -> None:
    """An application's store raising the builtin TimeoutError: process_result raises
    StoreTimeoutError naming the claim and the store."""
    from tests.support.helpers import query_result

    processor = _processor(TimingOutClaims(), [])
    with pytest.raises(StoreTimeoutError) as caught:
        await processor.process_result(query_result("T1", "SUCCESS"))

    assert ("claim", "TimingOutClaims") == (caught.value.operation, caught.value.backend)
    assert str(caught.value).startswith(
        "TimingOutClaims failed to claim: TimeoutError: the server did not answer"
    )


class HangingClaims(MemoryStore):
    """A store of the application's own whose driver ignores every timeout."""

    async def claim(self, key: str, *, lease: float) -> Any:
        await anyio.sleep_forever()


async def test_a_store_call_past_store_timeout_is_cut_off_by_the_processor() -> None:
    """The processor's own bound (store_timeout) ends a claim the store never answers: a
    StoreTimeoutError naming the store and the call, maybe_sent (it may have been taken);
    ``receive`` says 503, not handled."""
    from tests.support.helpers import query_result

    processor = processor_for(HangingClaims(), lambda event: None, store_timeout=0.05)
    with anyio.fail_after(10):
        with pytest.raises(StoreTimeoutError) as caught:
            await processor.process_result(query_result("H1", "SUCCESS"))
        receipt = await processor.receive(sign_notification(order_id="H1"))

    error = caught.value
    assert ("claim", "HangingClaims", True) == (error.operation, error.backend, error.maybe_sent)
    assert str(error).startswith("HangingClaims did not claim within 0.05 s")
    assert (503, False, None) == (receipt.ack.status_code, receipt.handled, receipt.error)
    assert receipt.notification is not None


async def test_a_store_replaced_after_construction_is_the_one_used() -> None:
    """``processor.store`` may be replaced as a whole: the new store answers, not the one the
    processor was built with (which is left untouched)."""
    handled: list[str] = []
    first = MemoryStore()
    processor = processor_for(first, lambda event: handled.append(event.order_id))
    processor.store = TimingOutClaims()

    answer = await processor.process(sign_notification(order_id=ORDER))

    assert (503, b"FAIL") == (answer.status_code, answer.body)
    assert [] == handled
    assert ClaimState.NEW is (await first.claim(KEY, lease=1)).state


async def test_a_replaced_store_and_time_limit_bound_each_store_call() -> None:
    """A store of the application's own put in place of the library's gets the processor's
    own ``store_timeout`` around each call, and a new ``store_timeout`` is the one applied:
    a claim that never answers is a 503 FAIL once the limit passes."""
    processor = processor_for(MemoryStore(), lambda event: None)
    processor.store = HangingClaims()
    processor.store_timeout = 0.01

    answer = await processor.process(sign_notification(order_id=ORDER))

    assert (503, b"FAIL") == (answer.status_code, answer.body)
    with pytest.raises(ConfigurationError, match="store_timeout must be above 0"):
        processor.store_timeout = 0
    assert 0.01 == processor.store_timeout


async def test_a_lower_store_timeout_bounds_even_the_librarys_own_store(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The library's PostgresStore ends each call within its own bound (10 s here), so with
    ``store_timeout`` 30 the processor adds none of its own; lowered afterwards to 0.05 s,
    it bounds a claim that waits on another transaction's row lock."""
    import uuid

    import psycopg

    from cmpay_async.stores.postgres import PostgresStore

    caplog.set_level(logging.WARNING, logger="cmpay_async")
    table = f"cmpay_bound_{uuid.uuid4().hex[:8]}"
    store = PostgresStore(postgres_dsn, table=table)
    await store.migrate()
    processor = processor_for(store, lambda event: None)
    processor.store_timeout = 0.05
    writer = psycopg.connect(postgres_dsn)  # another worker, mid-transaction on this key
    writer.execute(
        f"INSERT INTO {table} VALUES (%s, 'in_progress', 't', now())",  # noqa: S608
        (KEY,),
    )
    try:
        answer = await processor.process(sign_notification(order_id=ORDER))
    finally:
        writer.rollback()
        writer.close()
        store.close()
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(f"DROP TABLE {table}")

    assert (503, b"FAIL") == (answer.status_code, answer.body)
    assert any("did not claim within 0.05 s" in m for m in _messages(caplog, logging.WARNING))
