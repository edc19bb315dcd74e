"""Where the notification processor remembers which payment events it has handled.

A store gives each event key a lease: ``claim`` answers NEW (the caller owns the event until
its lease runs out and must ``complete`` or ``release`` it with the token it got),
IN_PROGRESS (another worker owns it now) or DONE (handled already). A claim whose lease ran
out (its worker died mid-handler) can be claimed again. Only the owner's token completes or
releases. Backends: ``MemoryStore`` (one process, tests) and ``SqliteStore`` (the embedded
default: several processes on one machine); each imports its driver only in its own module.

A store that fails raises ``StoreError`` (``StoreTimeoutError`` when it did not answer in
time), never its driver's exception: each backend translates at one point, its ``_run``,
with ``driver_failure`` below, which also blanks credentials out of the driver's message.
"""

from __future__ import annotations

import enum
import itertools
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

import anyio.to_thread
import attrs

from cmpay_async._exceptions import StoreError, StoreTimeoutError

__all__ = ["ClaimState", "Claimed", "MemoryStore", "Store"]

T = TypeVar("T")

#: A ``password=...`` pair of a conninfo string, or the ``user:password@`` of a URL.
_CREDENTIALS = re.compile(
    r"(password\s*=\s*)(?:'(?:[^'\\]|\\.)*'|\S+)|(//[^/@\s:]*:)[^@\s]*@", re.IGNORECASE
)


class ClaimState(str, enum.Enum):
    """What a claim found."""

    NEW = "new"
    IN_PROGRESS = "in_progress"
    DONE = "done"


@attrs.frozen
class Claimed:
    """The answer to ``claim``: the state, and the lease token when the caller owns the key."""

    state: ClaimState
    token: str | None = None


class Store(Protocol):
    """Lease-based, once-only bookkeeping of event keys, shared by every worker."""

    async def claim(self, key: str, *, lease: float) -> Claimed:
        """Own ``key`` for ``lease`` seconds if nobody handled or holds it."""
        ...

    async def complete(self, key: str, token: str) -> bool:
        """Mark ``key`` handled; False if ``token`` no longer owns it (its lease ran out)."""
        ...

    async def release(self, key: str, token: str) -> None:
        """Give ``key`` up (the handler failed), so that a retry can claim it at once."""
        ...


def new_token() -> str:
    """A lease token: only its holder completes or releases the key."""
    return secrets.token_hex(16)


# The answers that carry no token, shared (they are frozen).
_DONE = Claimed(ClaimState.DONE)
_HELD = Claimed(ClaimState.IN_PROGRESS)


class MemoryStore:
    """A store in this process's memory: for tests and single-process apps."""

    #: Every call returns without waiting (a lock held only for a dict update), so no call of
    #: it can be cut off half-way.
    call_bound = 0.0

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # threads and event loops may share it
        self._rows: dict[str, tuple[ClaimState, str, float]] = {}
        self._tokens = itertools.count(1)

    async def claim(self, key: str, *, lease: float) -> Claimed:
        """Own ``key`` for ``lease`` seconds if nobody handled or holds it."""
        now = self._clock()
        with self._lock:
            row = self._rows.get(key)
            if row is not None:
                state, _, expires = row
                if state is ClaimState.DONE:
                    return _DONE
                if expires > now:
                    return _HELD
            # Unique within the process is all a token in this process's memory needs.
            token = f"m{next(self._tokens)}"
            self._rows[key] = (ClaimState.IN_PROGRESS, token, now + lease)
            return Claimed(ClaimState.NEW, token)

    async def complete(self, key: str, token: str) -> bool:
        """Mark ``key`` handled; False if ``token`` no longer owns it."""
        with self._lock:
            row = self._rows.get(key)
            if row is None or row[1] != token or row[0] is ClaimState.DONE:
                return False
            self._rows[key] = (ClaimState.DONE, token, math.inf)
            return True

    async def release(self, key: str, token: str) -> None:
        """Give ``key`` up so that a retry can claim it at once."""
        with self._lock:
            row = self._rows.get(key)
            if row is not None and row[1] == token and row[0] is ClaimState.IN_PROGRESS:
                del self._rows[key]


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with the given secrets and any password of a DSN or URL in it blanked out."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _CREDENTIALS.sub(lambda m: f"{m[1]}***" if m[1] else f"{m[2]}***@", text)


def driver_failure(
    exc: BaseException,
    *,
    backend: str,
    operation: str,
    host: str | None,
    secrets: Iterable[str | None] = (),
    timed_out: bool = False,
    maybe_sent: bool = True,
) -> StoreError:
    """The library error for a driver's exception, its message scrubbed of credentials."""
    text = str(exc)
    scrubbed = scrub(text, secrets)
    detail = " ".join(scrubbed.split()) or "no message"  # one line, for logs
    cls = StoreTimeoutError if timed_out else StoreError
    error = cls(
        f"{backend} failed to {operation}: {type(exc).__name__}: {detail}",
        backend=backend,
        operation=operation,
        host=host,
        driver_error=f"{type(exc).__module__}.{type(exc).__qualname__}",
        maybe_sent=maybe_sent,
    )
    # The driver's traceback helps, but not when its message held a credential.
    error.__cause__ = exc if scrubbed == text else None
    error.__suppress_context__ = True
    return error


async def run_abandoning(work: Callable[[], T], *, timeout: float) -> T:
    """Run blocking ``work`` in a worker thread; stop waiting for it after ``timeout`` seconds.

    A driver blocked on a server that never answers ignores cancellation; the thread is left
    to finish (or fail) on its own, and the caller gets a ``TimeoutError`` in time.
    """
    with anyio.move_on_after(timeout):
        return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
    raise TimeoutError(f"no answer within {timeout} s")
