"""The retry policy and the state of one call: pure decisions, no I/O, no clock, no sleep.

As urllib3's ``Retry``, a frozen policy classifies an error and decides the next step; the
call engine only measures time and sleeps. ``RetryPolicy.next_step`` is the one place that
answers "after this error, on this attempt, with this much time left: wait and retry, or
give up".
"""

from __future__ import annotations

import random

import attrs

from ._exceptions import (
    CmpayError,
    ConnectError,
    HTTPStatusError,
    TransportError,
    TransportTimeoutError,
)

__all__ = ["CallState", "RetryPolicy", "resendable"]


def resendable(error: CmpayError, *, idempotent: bool) -> bool:
    """Whether sending the request again is safe after ``error``.

    A failed exchange is resent when the request certainly never reached the gateway (a
    refused connection, a connect or pool timeout) or, for an ``idempotent`` request (a query,
    which changes nothing), whatever the failure. An answer (a refusal, a bad signature, an
    HTTP status) is never resent.
    """
    if not isinstance(error, TransportError) or isinstance(error, HTTPStatusError):
        return False
    if idempotent:
        return True
    return not error.maybe_sent and isinstance(error, (ConnectError, TransportTimeoutError))


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How often to resend a request that certainly never reached the gateway."""

    #: Total attempts, the first included; 1 disables retries.
    attempts: int = 3
    initial_backoff: float = 0.2
    max_backoff: float = 2.0

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (from 1): capped, with full jitter."""
        cap = min(self.max_backoff, self.initial_backoff * 2.0 ** (retry - 1))
        return cap * (0.5 + rng.random() / 2)

    def next_step(
        self,
        error: CmpayError,
        *,
        attempt: int,
        time_left: float,
        idempotent: bool,
        rng: random.Random,
    ) -> float | None:
        """Seconds to wait before the next attempt after ``error``, or None to give up.

        ``attempt`` counts from 1; ``time_left`` is what remains of the call's total deadline
        (``math.inf`` without one): no retry starts whose backoff would outlast it.
        """
        if attempt >= self.attempts or not resendable(error, idempotent=idempotent):
            return None
        pause = self.backoff(attempt, rng)
        return pause if pause < time_left else None


class CallState:
    """How far one call got: the attempt under way, and whether a request may have been sent."""

    __slots__ = ("attempt", "reported", "sent", "started", "status")

    def __init__(self) -> None:
        #: 0 before the first attempt; then the attempt under way, from 1.
        self.attempt = 0
        #: True once any attempt may have started to write its request.
        self.sent = False
        #: True once the current attempt's end was reported.
        self.reported = False
        #: When the current attempt started (the caller's clock), and the status it got.
        self.started = 0.0
        self.status: int | None = None

    def begin(self, now: float) -> int:
        """Start the next attempt at ``now``; return its number."""
        self.attempt += 1
        self.started, self.status, self.reported = now, None, False
        return self.attempt

    def settle(self, maybe_sent: bool) -> None:
        """Record an attempt's verdict: once a request may have been sent, it stays so."""
        self.sent = self.sent or maybe_sent
