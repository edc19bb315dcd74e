"""Notification delivery: the sandbox's clock, the OfflineNotify schedule and the posts.

OfflineNotify is posted to the order's ``notifyUrl`` until the merchant answers exactly
``SUCCESS``, at most 8 times, the gaps in virtual minutes of a ``SandboxClock``.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import anyio
import httpx
from anyio.abc import TaskGroup

from cmpay_async._exceptions import ConfigurationError

from ._faults import NotifyFaults
from ._records import NotifyAttempt, SandboxOrder

__all__ = ["OFFLINE_GAPS_MINUTES", "Delivery", "SandboxClock"]

#: Minutes between the 8 OfflineNotify attempts (section 8.1): about 24.3 hours in all.
OFFLINE_GAPS_MINUTES = (1, 5, 10, 60, 120, 360, 900)


class SandboxClock:
    """Virtual minutes for the notification schedule: scaled real time plus manual advances.

    ``seconds_per_minute=0.01`` runs a virtual minute in 10 ms; ``None`` stops time, so only
    ``advance()`` moves it (for tests that step through the schedule).
    """

    def __init__(self, seconds_per_minute: float | None = 60.0) -> None:
        if seconds_per_minute is not None and seconds_per_minute <= 0:
            raise ConfigurationError("seconds_per_minute must be positive or None")
        self.seconds_per_minute = seconds_per_minute
        self._start = time.monotonic()
        self._offset = 0.0
        self._waiters: list[anyio.Event] = []

    def now(self) -> float:
        """Virtual minutes since the clock started."""
        scaled = 0.0
        if self.seconds_per_minute is not None:
            scaled = (time.monotonic() - self._start) / self.seconds_per_minute
        return self._offset + scaled

    @property
    def sleepers(self) -> int:
        """How many tasks are waiting on this clock right now."""
        return len(self._waiters)

    def advance(self, minutes: float) -> None:
        """Move virtual time forward, waking sleepers whose time has come."""
        self._offset += minutes
        waiters, self._waiters = self._waiters, []
        for event in waiters:
            event.set()

    async def sleep(self, minutes: float) -> None:
        """Sleep this many virtual minutes."""
        target = self.now() + minutes
        while (remaining := target - self.now()) > 1e-9:
            event = anyio.Event()
            self._waiters.append(event)
            real = (
                math.inf if self.seconds_per_minute is None else remaining * self.seconds_per_minute
            )
            with anyio.move_on_after(real):
                await event.wait()


#: One payment's notifications: the order, the OfflineNotify body, its faults, the PageNotify
#: body (posted by the sandbox only when a fault says so).
_Job = tuple[SandboxOrder, bytes, NotifyFaults, bytes]


class Delivery:
    """Posts each payment's notifications on the schedule, while ``running()``."""

    def __init__(
        self,
        clock: SandboxClock,
        transport: httpx.AsyncBaseTransport | None,
        report: Callable[[SandboxOrder, NotifyAttempt], object],
    ) -> None:
        self.clock = clock
        self._transport = transport
        self._report = report
        self._task_group: TaskGroup | None = None
        self._http: httpx.AsyncClient | None = None
        # Payments made before delivery runs, sent once it does.
        self._pending: list[_Job] = []

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Deliver in the background for the duration of the block."""
        async with (
            httpx.AsyncClient(transport=self._transport, timeout=10) as http,
            anyio.create_task_group() as tg,
        ):
            self._task_group, self._http = tg, http
            pending, self._pending = self._pending, []
            for job in pending:
                tg.start_soon(self._deliver, *job)
            try:
                yield
            finally:
                self._task_group = self._http = None
                tg.cancel_scope.cancel()

    def schedule(
        self, order: SandboxOrder, body: bytes, faults: NotifyFaults, page: bytes = b""
    ) -> None:
        """Start delivering a payment's OfflineNotify (now, or once delivery runs)."""
        order.delivery = "delivering"
        if self._task_group is None:
            self._pending.append((order, body, faults, page))
        else:
            self._task_group.start_soon(self._deliver, order, body, faults, page)

    async def _deliver(
        self, order: SandboxOrder, body: bytes, faults: NotifyFaults, page: bytes
    ) -> None:
        url = order.fields["notifyUrl"]
        if faults.forged:
            await self._post(order, url, _break_signature(body), 0, forged=True)
        if await self._first_attempt(order, body, faults, page):
            order.delivery = "acknowledged"
            return
        for attempt, gap in enumerate(OFFLINE_GAPS_MINUTES, start=2):
            await self.clock.sleep(gap)
            if await self._post(order, url, body, attempt):
                order.delivery = "acknowledged"
                return
        order.delivery = "exhausted"

    async def _first_attempt(
        self, order: SandboxOrder, body: bytes, faults: NotifyFaults, page: bytes
    ) -> bool:
        """Attempt 1 with its copies; True once it, and every copy, has been answered."""
        url = order.fields["notifyUrl"]
        if not faults.concurrent:
            for _ in range(faults.duplicates):
                await self._post(order, url, body, 1, duplicate=True)
        acknowledged = False
        # Concurrent copies, a racing PageNotify and the first attempt leave at once.
        async with anyio.create_task_group() as tg:
            for _ in range(faults.duplicates if faults.concurrent else 0):
                tg.start_soon(partial(self._post, order, url, body, 1, duplicate=True))
            if faults.page_at_once:
                callback = order.fields["callbackUrl"]
                tg.start_soon(partial(self._post, order, callback, page, 1, page=True))
            acknowledged = await self._post(order, url, body, 1)
        return acknowledged

    async def _post(
        self,
        order: SandboxOrder,
        url: str,
        body: bytes,
        attempt: int,
        *,
        page: bool = False,
        **flags: bool,
    ) -> bool:
        """Post one notification; True when the merchant answered exactly ``SUCCESS``."""
        if self._http is None:
            raise RuntimeError("notifications are delivered only while the sandbox is running")
        minute = round(self.clock.now(), 3)
        kind = "PageNotify" if page else "OfflineNotify"
        status: int | None = None
        try:
            content_type = f"application/x-www-form-urlencoded; charset={order.charset.http_name}"
            response = await self._http.post(
                url, content=body, headers={"content-type": content_type}
            )
        except httpx.HTTPError as exc:
            answer, content = type(exc).__name__, b""
        else:
            status, content = response.status_code, response.content
            answer = content[:64].decode("utf-8", "replace")
        record = NotifyAttempt(
            kind=kind, attempt=attempt, minute=minute, status=status, answer=answer, **flags
        )
        order.attempts.append(record)
        self._report(order, record)
        return content == b"SUCCESS" and not flags and not page


def _break_signature(body: bytes) -> bytes:
    head, sep, signature = body.rpartition(b"hmac=")
    flipped = b"0" if signature[:1] != b"0" else b"1"
    return head + sep + flipped + signature[1:]
