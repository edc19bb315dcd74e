"""DjangoStore: the processor's store on the project's own database, through the ORM.

Add ``"cmpay_async.integrations.django"`` to INSTALLED_APPS and run ``migrate``. A claim is
an INSERT on the event key (the primary key: the database decides who wins) or, when the
key exists, one conditional UPDATE that takes over a lease that ran out; completing and
releasing act only while the caller's token holds the key. Each call runs in a worker
thread (never where an event loop runs) in its own transaction, on the default database
unless ``using`` names another, and is cut off after ``timeout`` seconds; every failure is
a ``StoreError``. Leases use the workers' wall clocks (keep them in sync).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TypeVar, cast

from cmpay_async._exceptions import ConfigurationError, StoreError
from cmpay_async.stores._contract import (
    Claimed,
    ClaimState,
    driver_failure,
    new_token,
    run_abandoning,
)

__all__ = ["DjangoStore"]

T = TypeVar("T")

#: The lease of a done key: never ends (a finite number every database stores).
_FOREVER = 1e18


def _atomic(using: str) -> contextlib.AbstractContextManager[object]:
    """``transaction.atomic(using=using)``, typed: Django ships no type hints."""
    from django.db import transaction

    return cast("contextlib.AbstractContextManager[object]", transaction.atomic(using=using))


class DjangoStore:
    """A store in the ``cmpay_event`` table of a Django project's database."""

    def __init__(
        self,
        *,
        using: str = "default",
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < timeout <= 30:
            raise ConfigurationError(f"timeout must be above 0 and at most 30 s, not {timeout!r}")
        #: The database alias of DATABASES.
        self.using = using
        #: Seconds a call may take before it fails with ``StoreTimeoutError``.
        self.timeout = timeout
        self._clock = clock

    async def _run(self, operation: str, work: Callable[[], T]) -> T:
        """Run ``work`` in a worker thread: the one place Django's errors become ``StoreError``."""
        from django.db import Error, close_old_connections

        def run() -> T:
            close_old_connections()  # a broken or expired connection is replaced
            try:
                with _atomic(self.using):
                    return work()
            finally:
                close_old_connections()

        try:
            return await run_abandoning(run, timeout=self.timeout)
        except StoreError:
            raise
        except (Error, OSError) as exc:
            error = driver_failure(
                exc,
                backend="DjangoStore",
                operation=operation,
                host=None,
                timed_out=isinstance(exc, TimeoutError),
            )
            raise error from error.__cause__

    async def claim(self, key: str, *, lease: float) -> Claimed:
        """Own ``key`` for ``lease`` seconds if nobody handled or holds it."""
        from django.db import IntegrityError

        from .models import CmpayEvent

        now = self._clock()
        token = new_token()
        rows = CmpayEvent.objects.using(self.using)

        def work() -> Claimed:
            try:
                with _atomic(self.using):  # a savepoint: the insert may fail
                    rows.create(
                        key=key,
                        state=ClaimState.IN_PROGRESS.value,
                        token=token,
                        expires=now + lease,
                    )
                return Claimed(ClaimState.NEW, token)
            except IntegrityError:
                pass
            taken = rows.filter(
                key=key, state=ClaimState.IN_PROGRESS.value, expires__lte=now
            ).update(token=token, expires=now + lease)
            if taken == 1:
                return Claimed(ClaimState.NEW, token)
            state = rows.filter(key=key).values_list("state", flat=True).first()
            if state == ClaimState.DONE.value:
                return Claimed(ClaimState.DONE)
            return Claimed(ClaimState.IN_PROGRESS)

        return await self._run("claim", work)

    async def complete(self, key: str, token: str) -> bool:
        """Mark ``key`` handled; False if ``token`` no longer owns it."""
        from .models import CmpayEvent

        def work() -> bool:
            done = (
                CmpayEvent.objects.using(self.using)
                .filter(key=key, token=token, state=ClaimState.IN_PROGRESS.value)
                .update(state=ClaimState.DONE.value, expires=_FOREVER)
            )
            return bool(done == 1)

        return await self._run("complete", work)

    async def release(self, key: str, token: str) -> None:
        """Give ``key`` up so that a retry can claim it at once."""
        from .models import CmpayEvent

        def work() -> None:
            CmpayEvent.objects.using(self.using).filter(
                key=key, token=token, state=ClaimState.IN_PROGRESS.value
            ).delete()

        await self._run("release", work)
