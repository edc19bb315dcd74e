"""An inbox for queue-backed shops: accept durably now, run the handler later, exactly once.

``Inbox`` is a ``NotificationProcessor`` whose answer comes before the handler runs: it
verifies the notification, records its payment event as *pending* in a durable backend
(one row per event key, so duplicates collapse) and answers ``SUCCESS`` only once the row is
committed. A drain step (a Celery, arq or taskiq task, and a periodic sweep) then runs the
handler once per pending event:

- it *takes* one due event with a lease (the backend does it atomically: two drainers never
  hold one event at once), runs the handler, and marks it done;
- a handler that raises leaves the event pending, due again after a backoff, with its
  attempt count and last error kept (``failures()``);
- a drainer killed mid-handler leaves its lease to run out; the next sweep takes it again.

The queue only says "drain soon": a task it loses costs a delay until the next sweep, never
a payment. Backends: ``cmpay_async.inbox.sqlite.SqliteInbox`` and
``cmpay_async.inbox.postgres.PostgresInbox``; they reuse the stores' connections, timeouts
and error translation (every failure is a ``StoreError``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Collection
from typing import Protocol

import anyio
import attrs

from cmpay_async._exceptions import ConfigurationError, StoreError
from cmpay_async._models import OfflineNotify, OrderQueryResult, PageNotify
from cmpay_async._processor import (
    BRIDGE,
    Handler,
    NotificationProcessor,
    PaymentEvent,
    Source,
    call_handler,
)
from cmpay_async._signing import Verifier
from cmpay_async._sync import refuse_inside_a_loop
from cmpay_async.stores._contract import Claimed, scrub

__all__ = ["DrainReport", "Inbox", "InboxBackend", "Pending"]

logger = logging.getLogger("cmpay_async")


@attrs.frozen(kw_only=True)
class Pending:
    """One accepted event not yet handled, as a backend keeps it."""

    key: str
    source: str
    #: The verified notification (or query result) as JSON, from the model's ``to_dict``.
    data: str
    #: Handler runs started so far (this one included, when taken).
    attempts: int
    #: The lease token of the drainer that took it (None when only listed).
    token: str | None = None
    last_error: str | None = None


@attrs.frozen(kw_only=True)
class DrainReport:
    """What one drain did."""

    handled: int = 0
    failed: int = 0


class InboxBackend(Protocol):
    """Durable, lease-based storage of accepted events."""

    async def add(self, key: str, source: str, data: str) -> bool:
        """Record a pending event; False when its key is recorded already."""
        ...

    async def take(self, *, lease: float) -> Pending | None:
        """Own the next due pending event for ``lease`` seconds, or None."""
        ...

    async def finish(self, key: str, token: str) -> bool:
        """Mark a taken event done; False if ``token`` no longer holds it."""
        ...

    async def retry(self, key: str, token: str, *, error: str, delay: float) -> None:
        """Give a taken event back, due again after ``delay`` seconds, keeping ``error``."""
        ...

    async def failures(self) -> list[Pending]:
        """Pending events whose handler has failed at least once."""
        ...

    async def pending(self) -> int:
        """How many accepted events are not yet handled."""
        ...


class _BackendOnly:
    """The processor's claim store, unused by an inbox (its backend keeps the events)."""

    async def claim(self, key: str, *, lease: float) -> Claimed:
        """Never called: ``Inbox`` records events instead of claiming them."""
        raise ConfigurationError("an Inbox records events in its backend")  # pragma: no cover

    async def complete(self, key: str, token: str) -> bool:
        """Never called."""
        raise ConfigurationError("an Inbox records events in its backend")  # pragma: no cover

    async def release(self, key: str, token: str) -> None:
        """Never called."""
        raise ConfigurationError("an Inbox records events in its backend")  # pragma: no cover


def backoff(attempts: int, *, first: float = 5.0, most: float = 3600.0) -> float:
    """Seconds before a failed event is due again: doubling from ``first``, at most ``most``."""
    return min(most, first * 2.0 ** max(0, attempts - 1))


class Inbox(NotificationProcessor):
    """Accept notifications durably and answer at once; ``drain()`` runs the handler later.

    Every ``NotificationProcessor`` entry point accepts: ``process``/``process_sync`` (so the
    framework glue in ``cmpay_async.integrations`` takes an inbox as it takes a processor),
    ``receive`` and ``process_result``. ``SUCCESS`` means recorded, durably; the handler
    runs in ``drain``.
    """

    def __init__(
        self,
        *,
        backend: InboxBackend,
        verifier: Verifier,
        merchant_id: str,
        handler: Handler,
        lease: float = 60.0,
        store_timeout: float = 30.0,
        order_id_pattern: str | re.Pattern[str] | None = None,
        extra_bank_codes: Collection[str] = (),
        retry_after: Callable[[int], float] = backoff,
    ) -> None:
        super().__init__(
            verifier=verifier,
            merchant_id=merchant_id,
            store=_BackendOnly(),
            handler=handler,
            lease=lease,
            store_timeout=store_timeout,
            order_id_pattern=order_id_pattern,
            extra_bank_codes=extra_bank_codes,
        )
        self.backend = backend
        #: Seconds before a failed event is due again, given its attempts so far.
        self.retry_after = retry_after

    async def _once(self, event: PaymentEvent) -> bool:
        """Record the event as pending (a duplicate is recorded already): True once durable."""
        model = event.notification if event.notification is not None else event.query
        data = json.dumps(model.to_dict() if model is not None else {}, ensure_ascii=False)
        await self._store("record", lambda: self.backend.add(event.key, event.source, data))
        return True

    async def drain(self, *, limit: int | None = None) -> DrainReport:
        """Run the handler for due pending events (at most ``limit``), one at a time.

        Raises ``StoreError`` when the backend fails before a handler ran.
        """
        handled = failed = 0
        while limit is None or handled + failed < limit:
            taken = await self._store("take", lambda: self.backend.take(lease=self.lease))
            if taken is None:
                break
            if await self._run(taken):
                handled += 1
            else:
                failed += 1
        return DrainReport(handled=handled, failed=failed)

    def drain_sync(self, *, limit: int | None = None) -> DrainReport:
        """``drain`` for code that cannot await (a Celery task); plain handlers run here."""
        refuse_inside_a_loop("drain_sync", "await inbox.drain(...)")
        return BRIDGE.call(self._drain_positional, limit)

    async def _drain_positional(self, limit: int | None) -> DrainReport:
        return await self.drain(limit=limit)

    async def failures(self) -> list[Pending]:
        """Pending events whose handler failed at least once (attempts, last error)."""
        return await self._store("list", self.backend.failures)

    async def pending(self) -> int:
        """How many accepted events are not yet handled."""
        return await self._store("count", self.backend.pending)

    async def _run(self, taken: Pending) -> bool:
        token = taken.token or ""
        try:
            event = _event_from(taken)
            await call_handler(self.handler, event, is_async=self._handler_is_async)
        except Exception as exc:
            delay = self.retry_after(taken.attempts)
            logger.exception(
                "the payment handler failed for %s (attempt %d); due again in %s s",
                taken.key,
                taken.attempts,
                delay,
            )
            error = scrub(f"{type(exc).__name__}: {exc}")[:2000]
            await self._give_back(taken.key, token, error, delay)
            return False
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._give_back(taken.key, token, "interrupted", 0.0)
            raise
        with anyio.CancelScope(shield=True):
            try:
                done = await self._store("finish", lambda: self.backend.finish(taken.key, token))
            except StoreError as exc:
                logger.error(
                    "the handler for %s ran but the inbox could not record it; it may run "
                    "again after the lease: %s",
                    taken.key,
                    exc,
                )
                return True
            if not done:
                logger.error(
                    "the handler for %s outlived its %s s lease: another drainer may run it too",
                    taken.key,
                    self.lease,
                )
        return True

    async def _give_back(self, key: str, token: str, error: str, delay: float) -> None:
        try:
            await self._store(
                "retry", lambda: self.backend.retry(key, token, error=error, delay=delay)
            )
        except StoreError as exc:
            logger.warning("could not give %s back; it is due when its lease ends: %s", key, exc)


def _event_from(taken: Pending) -> PaymentEvent:
    """The event a recorded row stands for, rebuilt from its model's ``to_dict``."""
    from cmpay_async._processor import event_of

    data = json.loads(taken.data)
    if taken.source == "reconciliation":
        result = OrderQueryResult.from_dict(data)
        return PaymentEvent(
            source="reconciliation",
            key=taken.key,
            order_id=result.order_id,
            paid=result.paid,
            amount=result.amount,
            pay_no=result.pay_no,
            query=result,
        )
    model = PageNotify if taken.source == "PageNotify" else OfflineNotify
    event = event_of(model.from_dict(data))
    source: Source = event.source
    return attrs.evolve(event, key=taken.key, source=source)
