"""NotificationProcessor: verify, claim once across workers, handle, then answer SUCCESS.

CMPay announces a payment up to nine times from two directions (the buyer's PageNotify and
up to 8 OfflineNotify attempts), often to several workers at the same moment, and
reconciliation may find the same payment by querying. All of them are one event, keyed by
merchant id, order id and outcome (SUCCESS or FAILED): the document makes the order id the
merchant's unique key of a payment, and a PageNotify and an OfflineNotify of one payment
carry the same three values. A store's lease makes the handler run once per key: a
duplicate that is done is answered SUCCESS without the handler; one in progress elsewhere
is answered FAIL, so the gateway retries later; a handler that raises releases the key and
is answered FAIL too.

The store can fail. Every store call is bounded (``store_timeout``, besides the store's own
timeouts) and every failure is a ``StoreError``. A claim that fails means the handler does
not run: the answer is HTTP 503 ``FAIL`` (the gateway retries) and a WARNING is logged. Once
the handler has run, its work is done and the answer is ``SUCCESS``: a ``complete`` that
fails is tried again, backing off, for as long as the lease still holds the key (a dropped
connection is replaced, a restarting store comes back), because once the lease ends another
delivery may run the handler again. If the store cannot record it within the lease, the key
is *not* released (a duplicate arriving meanwhile is told to retry rather than running the
handler at once) and an ERROR says the handler may run again after the lease. A cancelled
``process()`` releases its claim if the handler had not finished, and completes it if it had,
in a shielded step bounded by the lease.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Literal, TypeVar

import anyio
import anyio.to_thread
import attrs

from ._codec import Payload
from ._enums import PaymentStatus
from ._exceptions import CmpayError, ConfigurationError, StoreError, StoreTimeoutError
from ._models import OfflineNotify, OrderQueryResult, PageNotify, unchecked
from ._notify import Ack, ack, nack, verify_notification
from ._signing import Verifier
from ._sync import SyncBridge, hand_to_caller, refuse_inside_a_loop
from .stores import ClaimState, MemoryStore, Store, driver_failure

__all__ = ["NotificationProcessor", "PaymentEvent", "Receipt", "event_key"]

logger = logging.getLogger("cmpay_async")

Source = Literal["PageNotify", "OfflineNotify", "reconciliation"]
T = TypeVar("T")


def event_key(merchant_id: str, order_id: str, status: str) -> str:
    """The key that makes every announcement of one payment outcome one event."""
    return f"cmpay:{merchant_id}:{order_id}:{status}"


@attrs.frozen(kw_only=True)
class PaymentEvent:
    """One payment outcome, handed to the merchant's handler exactly once."""

    #: Where it came from: ``PageNotify``, ``OfflineNotify`` or ``reconciliation``.
    source: Source
    key: str
    order_id: str
    paid: bool
    #: The paid amount in fen (check it against your order before crediting it).
    amount: int | None
    pay_no: str
    notification: PageNotify | OfflineNotify | None = None
    query: OrderQueryResult | None = None


#: The answer to a notification that did not verify: never SUCCESS.
REFUSED = Ack(status_code=400, body=b"FAIL")
_HANDLED = ack()
_RETRY_LATER = nack()
#: The answer when the store failed before the handler ran: the gateway sends it again later.
UNAVAILABLE = Ack(status_code=503, body=b"FAIL")

#: The first and the longest pause between tries of a ``complete`` the store failed.
FIRST_PAUSE, LAST_PAUSE = 0.05, 1.0
#: How those pauses are waited (a module name, so that tests can count them, not wait them).
_pause = anyio.sleep

#: The loop thread that runs every processor's blocking calls in this process.
BRIDGE = SyncBridge("cmpay-processor")

Handler = Callable[[PaymentEvent], Awaitable[object]] | Callable[[PaymentEvent], object]


@attrs.frozen(kw_only=True)
class Receipt:
    """What became of one notification: the answer, and what it said when it verified."""

    ack: Ack
    #: The verified notification; None when it was refused.
    notification: PageNotify | OfflineNotify | None = None
    #: Whether the payment's event is handled (now or before): the ack is then SUCCESS.
    handled: bool = False
    #: Why it was refused (None when it verified).
    error: CmpayError | None = None


class NotificationProcessor:
    """Ties verification, a store and the merchant's handler together."""

    def __init__(
        self,
        *,
        verifier: Verifier,
        merchant_id: str,
        store: Store,
        handler: Handler,
        lease: float = 60.0,
        store_timeout: float = 30.0,
        order_id_pattern: str | re.Pattern[str] | None = None,
        extra_bank_codes: Collection[str] = (),
    ) -> None:
        self.verifier = verifier
        self.merchant_id = merchant_id
        self._the_store = store
        self.handler = handler  # and whether it is async, asked once
        #: Seconds a worker owns an event; keep it above your handler's longest run.
        self.lease = lease
        self.store_timeout = store_timeout  # checked, and the store's lanes chosen
        #: The form of this merchant's order ids (a regular expression the whole orderId
        #: must match): it closes the one field boundary the document leaves open
        #: (docs/guarantees.md). None accepts any order id the document allows.
        self.order_id_pattern = order_id_pattern
        #: Bank codes newer than appendix 9.1 that notifications may name.
        self.extra_bank_codes = frozenset(extra_bank_codes)

    @property
    def handler(self) -> Handler:
        """Your code, run once per payment outcome: ``async def`` or a plain function (a plain
        one runs in a worker thread under ``process``, in the caller's thread under
        ``process_sync``; never where an event loop runs). May be replaced."""
        return self._the_handler

    @handler.setter
    def handler(self, handler: Handler) -> None:
        self._the_handler = handler
        # Asked here, once: inspect's answer costs more than the rest of a call with
        # MemoryStore.
        self._handler_is_async = is_async_handler(handler)

    @property
    def store(self) -> Store:
        """Where handled payment events are remembered (may be replaced, as a whole)."""
        return self._the_store

    @store.setter
    def store(self, store: Store) -> None:
        self._the_store = store
        self._choose_lanes()

    @property
    def store_timeout(self) -> float:
        """Seconds any one store call may take, whatever its driver does (the built-in
        stores give up sooner, after their own ``timeout``: 5 s for Redis and PostgreSQL).

        ``SqliteStore`` runs each call in a thread that cannot be abandoned: its calls end
        within its own ``timeout`` (30 s by default), not within a lower ``store_timeout``.
        """
        return self._the_timeout

    @store_timeout.setter
    def store_timeout(self, store_timeout: float) -> None:
        if not 0 < store_timeout <= 30:
            raise ConfigurationError(
                f"store_timeout must be above 0 and at most 30 s, not {store_timeout!r}"
            )
        self._the_timeout = store_timeout
        self._choose_lanes()

    def _choose_lanes(self) -> None:
        """How store calls are made, again whenever the store or its time limit changes."""
        store = self._the_store
        # The library's own stores end every call within their ``call_bound``: when that is
        # within store_timeout, no cancel scope of the processor's is needed around each
        # call. Any other store (a subclass included: it may override a call) gets one.
        bound = getattr(store, "call_bound", None) if _own_store(store) else None
        self._self_bounded = isinstance(bound, (int, float)) and 0 <= bound <= self._the_timeout
        # Exactly the library's MemoryStore (a subclass may override a call).
        self._memory = store if type(store) is MemoryStore else None

    async def process(self, payload: Payload, *, charset: str | None = None) -> Ack:
        """Verify a notification and handle it once; return the answer for the gateway."""
        # receive()'s steps without its Receipt, in this frame: a Receipt and a coroutine per
        # notification cost a tenth of the processor's own time with MemoryStore.
        note = self._verify(payload, charset)
        if isinstance(note, CmpayError):
            return REFUSED
        try:
            handled = await self._once(_event_of(note))
        except StoreError as exc:
            return _unavailable(exc)
        return _HANDLED if handled else _RETRY_LATER

    async def receive(self, payload: Payload, *, charset: str | None = None) -> Receipt:
        """``process``, also telling what the notification said (for the buyer's redirect)."""
        note = self._verify(payload, charset)
        if isinstance(note, CmpayError):
            return Receipt(ack=REFUSED, error=note)
        try:
            handled = await self._once(_event_of(note))
        except StoreError as exc:
            return Receipt(ack=_unavailable(exc), notification=note)
        answer = _HANDLED if handled else _RETRY_LATER
        return Receipt(ack=answer, notification=note, handled=handled)

    def _verify(
        self, payload: Payload, charset: str | None
    ) -> PageNotify | OfflineNotify | CmpayError:
        """The verified notification, or why it was refused (logged)."""
        try:
            return verify_notification(
                payload,
                verifier=self.verifier,
                merchant_id=self.merchant_id,
                charset=charset,
                order_id_pattern=self.order_id_pattern,
                extra_bank_codes=self.extra_bank_codes,
            )
        except CmpayError as exc:
            logger.warning("refused a notification: %s", exc)
            return exc

    def process_sync(self, payload: Payload, *, charset: str | None = None) -> Ack:
        """``process`` for code that cannot await (WSGI views, task-queue jobs); thread-safe.

        A plain-function handler runs in the calling thread. Refused with
        ``ConfigurationError`` where an event loop runs: ``await processor.process(...)``.
        """
        refuse_inside_a_loop("process_sync", "await processor.process(...)")
        return BRIDGE.call(self._receive_positional, payload, charset).ack

    def receive_sync(self, payload: Payload, *, charset: str | None = None) -> Receipt:
        """``receive`` for code that cannot await; see ``process_sync``."""
        refuse_inside_a_loop("receive_sync", "await processor.receive(...)")
        return BRIDGE.call(self._receive_positional, payload, charset)

    async def _receive_positional(self, payload: Payload, charset: str | None) -> Receipt:
        return await self.receive(payload, charset=charset)

    def process_result_sync(self, result: OrderQueryResult) -> bool:
        """``process_result`` for code that cannot await; see ``process_sync``."""
        refuse_inside_a_loop("process_result_sync", "await processor.process_result(...)")
        return BRIDGE.call(self.process_result, result)

    async def process_result(self, result: OrderQueryResult) -> bool:
        """Feed a reconciliation query's result through the same once-only path.

        Returns True when the event is handled (now or before); a pending or unknown order
        is not an event (False). Raises ``StoreError`` when the store failed before the
        handler ran (ask again later).
        """
        if result.status not in (PaymentStatus.SUCCESS.value, PaymentStatus.FAILED.value):
            return False
        event = PaymentEvent(
            source="reconciliation",
            key=event_key(result.merchant_id, result.order_id, result.status),
            order_id=result.order_id,
            paid=result.paid,
            amount=result.amount,
            pay_no=result.pay_no,
            query=result,
        )
        return await self._once(event)

    async def _once(self, event: PaymentEvent) -> bool:
        """Run the handler if this worker wins the key; True once the event is done."""
        # Taken before the claim is sent, so the lease the store grants ends no sooner.
        held_until = time.monotonic() + self.lease
        memory = self._memory
        try:
            # The library's MemoryStore is called as plain functions (see MemoryStore._take).
            if memory is not None:
                taken = memory._take(event.key, self.lease)
            else:
                taken = await self._claim(event)
        except Exception as exc:  # a StoreError, or a store's own exception made one
            error = self._failure("claim", exc)
            raise error from error.__cause__
        if type(taken) is not str:
            return taken is ClaimState.DONE  # IN_PROGRESS: the gateway will ask again
        try:
            if self._handler_is_async:  # awaited here: two frames fewer on the common path
                await self._the_handler(event)  # type: ignore[misc]
            else:
                await call_handler(self.handler, event, is_async=False)
        except Exception:
            logger.exception("the payment handler failed for %s; released for a retry", event.key)
            await self._release(event.key, taken)
            return False
        except BaseException:
            # Cancelled (or interrupted) mid-handler: the next delivery need not wait out the
            # lease. Shielded, and bounded by the store call's own limit.
            with anyio.CancelScope(shield=True):
                await self._release(event.key, taken)
            raise
        # The handler's work is done: record it even if this call is being cancelled. The
        # MemoryStore cannot be cut off (nor fail half-way): one call says it all, without a
        # shield (whose cost is a fifth of the processor's own time with it); the careful
        # path tries again and reports.
        if memory is not None:
            try:
                if memory._finish(event.key, taken):
                    return True
            except Exception:  # noqa: S110
                pass
            await self._complete(event.key, taken, held_until)
            return True
        with anyio.CancelScope(shield=True):
            await self._complete(event.key, taken, held_until)
        return True

    async def _claim(self, event: PaymentEvent) -> str | ClaimState:
        """The store's claim of ``event``: its token when this worker owns it, else its state."""
        if self._self_bounded:  # without a closure and a frame per call
            claimed = await self.store.claim(event.key, lease=self.lease)
        else:
            claimed = await self._store(
                "claim", lambda: self.store.claim(event.key, lease=self.lease)
            )
        if claimed.state is ClaimState.NEW and claimed.token is not None:
            return claimed.token
        # A NEW claim without a token is no claim: another worker may have it.
        return claimed.state if claimed.state is ClaimState.DONE else ClaimState.IN_PROGRESS

    async def _store(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """One store call, bounded by ``store_timeout``; every failure is a ``StoreError``."""
        try:
            if self._self_bounded:
                # The store ends every call within its own bound: a cancel scope per call
                # would only add its cost (most of the processor's own time with MemoryStore).
                return await call()
            with anyio.move_on_after(self.store_timeout):
                return await call()
        except Exception as exc:
            error = self._failure(operation, exc)
            raise error from error.__cause__
        # A driver that ignored its own timeout (or a store without one).
        backend = type(self.store).__name__
        raise StoreTimeoutError(
            f"{backend} did not {operation} within {self.store_timeout} s",
            backend=backend,
            operation=operation,
            maybe_sent=True,
        )

    def _failure(self, operation: str, exc: Exception) -> StoreError:
        """``exc`` as the ``StoreError`` it is, or as one (a store of the application's own
        raising its driver's exception)."""
        if isinstance(exc, StoreError):
            return exc
        return driver_failure(
            exc,
            backend=type(self.store).__name__,
            operation=operation,
            host=None,
            timed_out=isinstance(exc, TimeoutError),
        )

    async def _release(self, key: str, token: str) -> None:
        try:
            await self._store("release", lambda: self.store.release(key, token))
        except StoreError as exc:
            logger.warning(
                "could not release %s; the next delivery waits for its lease to end: %s", key, exc
            )

    async def _complete(self, key: str, token: str, held_until: float) -> None:
        failure: StoreError | None = None
        pause = FIRST_PAUSE
        tries = 0
        while True:
            tries += 1
            try:
                done = await self._store("complete", lambda: self.store.complete(key, token))
            except StoreError as exc:
                failure = exc
                # Until the lease ends no other delivery can claim the key: a store that is
                # restarting (or a dropped connection, replaced on the next call) can still
                # record the work, and nothing is run twice.
                if time.monotonic() + pause >= held_until:
                    break
                await _pause(pause)
                pause = min(pause * 2, LAST_PAUSE)
                continue
            if done:
                if failure is not None:
                    logger.warning("completed %s at try %d: %s", key, tries, failure)
                return
            if failure is None:
                logger.error(
                    "the handler for %s outlived its %s s lease: another worker may run it too",
                    key,
                    self.lease,
                )
            else:
                logger.warning(
                    "completing %s failed and a later try found the key no longer held: "
                    "an earlier call was recorded, or the lease ended (%s)",
                    key,
                    failure,
                )
            return
        logger.error(
            "the handler for %s ran but the store could not record it in %d tries within its "
            "lease; answered SUCCESS, and a later delivery may run the handler again after the "
            "lease: %s",
            key,
            tries,
            failure,
        )


def _own_store(store: Store) -> bool:
    """Whether ``store`` is exactly one of the library's own store classes."""
    return type(store).__module__.split(".")[:2] == ["cmpay_async", "stores"]


async def call_handler(handler: Handler, event: PaymentEvent, *, is_async: bool) -> None:
    """Run the merchant's handler: awaited if async, else off the loop's thread."""
    if is_async:
        await handler(event)  # type: ignore[misc]
        return
    # The result travels in a tuple: trio refuses a worker thread's function that returns a
    # coroutine, and a plain function may hand one back (a lambda around an async function).
    handoff = hand_to_caller()
    if handoff is not None:
        (result,) = await handoff(lambda: (handler(event),))
    else:
        # Never on the loop's thread: a blocking handler would stall it, and Django's ORM
        # refuses to run where a loop runs.
        (result,) = await anyio.to_thread.run_sync(lambda: (handler(event),))
    if inspect.isawaitable(result):  # a plain function returning a coroutine
        await result


def is_async_handler(handler: object) -> bool:
    """Whether ``handler`` is an ``async def`` (or an object with an async ``__call__``)."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - an instance with async __call__
    )


def event_of(note: PageNotify | OfflineNotify) -> PaymentEvent:
    """The payment event a verified notification announces."""
    return _event_of(note)


#: ``PaymentEvent`` built from positional values in field order: half the cost of the
#: keyword ``__init__``, for the values of a notification that just verified.
_new_event = unchecked(PaymentEvent)


def _unavailable(exc: StoreError) -> Ack:
    logger.warning("the store failed, the handler did not run; answered FAIL: %s", exc)
    return UNAVAILABLE


def _event_of(note: PageNotify | OfflineNotify) -> PaymentEvent:
    return _new_event(
        "PageNotify" if isinstance(note, PageNotify) else "OfflineNotify",
        # ``_value_``, a plain attribute: ``value`` is a descriptor call on every read.
        event_key(note.merchant_id, note.order_id, note.status._value_),
        note.order_id,
        note.paid,
        note.amount,
        note.pay_no,
        note,
        None,
    )
