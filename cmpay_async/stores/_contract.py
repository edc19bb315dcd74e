"""The store contract: the ``Store`` protocol, its answers, and what every backend shares.

A store gives each event key a lease: ``claim`` answers NEW (the caller owns the event until
its lease runs out and must ``complete`` or ``release`` it with the token it got),
IN_PROGRESS (another worker owns it now) or DONE (handled already). A claim whose lease ran
out (its worker died mid-handler) can be claimed again. Only the owner's token completes or
releases.

A store that fails raises ``StoreError`` (``StoreTimeoutError`` when it did not answer in
time), never its driver's exception: each backend translates at one point, its ``_run``,
with ``driver_failure`` below, which also blanks credentials out of the driver's message.
"""

from __future__ import annotations

import enum
import re
import secrets
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

import anyio.to_thread
import attrs

from cmpay_async._exceptions import StoreError, StoreTimeoutError

__all__ = [
    "ClaimState",
    "Claimed",
    "Store",
    "driver_failure",
    "new_token",
    "run_abandoning",
    "scrub",
]

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
