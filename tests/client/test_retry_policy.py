"""The retry decision and the per-call state, synchronously: no client, no clock, no sleep."""

from __future__ import annotations

import math

import pytest

from cmpay_async import (
    CmpayError,
    ConnectError,
    DecodeError,
    GatewayError,
    HTTPStatusError,
    RetryPolicy,
    TransportError,
    TransportTimeoutError,
)
from cmpay_async._retry import CallState, resendable


class FixedRandom:
    """A stand-in for random.Random whose random() always returns ``value``."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


LOW, HIGH = FixedRandom(0.0), FixedRandom(1.0)


def _refused() -> ConnectError:
    return ConnectError("refused", maybe_sent=False)


def _read_timeout() -> TransportTimeoutError:
    return TransportTimeoutError("no answer", maybe_sent=True)


def _step(
    error: CmpayError,
    *,
    attempt: int = 1,
    time_left: float = math.inf,
    idempotent: bool = False,
    rng: FixedRandom = HIGH,
    policy: RetryPolicy | None = None,
) -> float | None:
    return (policy or RetryPolicy()).next_step(
        error,
        attempt=attempt,
        time_left=time_left,
        idempotent=idempotent,
        rng=rng,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("retry", "low", "high"),
    [(1, 0.1, 0.2), (2, 0.2, 0.4), (3, 0.4, 0.8), (4, 0.8, 1.6), (5, 1.0, 2.0), (9, 1.0, 2.0)],
)
def test_backoff_doubles_from_the_initial_value_up_to_the_cap_with_half_jitter(
    retry: int, low: float, high: float
) -> None:
    """0.2 s doubling per retry, capped at 2 s; the jitter keeps half to all of it."""
    policy = RetryPolicy(attempts=10, initial_backoff=0.2, max_backoff=2.0)

    assert (low, high) == pytest.approx((policy.backoff(retry, LOW), policy.backoff(retry, HIGH)))  # type: ignore[arg-type]


def test_a_refused_connection_is_retried_after_the_backoff() -> None:
    """Never sent, attempt 1 of 3, all the time in the world: wait 0.2 s, then send again."""
    assert 0.2 == pytest.approx(_step(_refused()))


@pytest.mark.parametrize("attempt", [3, 4])
def test_no_retry_once_the_attempts_are_spent(attempt: int) -> None:
    """The third attempt of a three-attempt policy is the last one, whatever failed."""
    assert None is _step(_refused(), attempt=attempt)
    assert None is _step(_read_timeout(), attempt=attempt, idempotent=True)


def test_one_attempt_disables_retries() -> None:
    """RetryPolicy(attempts=1): the first failure is final."""
    assert None is _step(_refused(), policy=RetryPolicy(attempts=1))


@pytest.mark.parametrize(
    ("time_left", "expected"),
    [(0.2001, 0.2), (0.2, None), (0.1, None), (0.0, None), (-1.0, None)],
)
def test_no_retry_starts_whose_backoff_would_outlast_the_deadline(
    time_left: float, expected: float | None
) -> None:
    """A 0.2 s pause needs more than 0.2 s left; a deadline already met ends the call."""
    assert expected == _step(_refused(), time_left=time_left)


@pytest.mark.parametrize(
    "error",
    [
        TransportTimeoutError("read timeout", maybe_sent=True),
        TransportError("connection dropped", maybe_sent=True),
        TransportError("a proxy said nothing useful", maybe_sent=False),
    ],
    ids=["read-timeout", "dropped", "other-unsent"],
)
def test_a_payment_is_not_resent_unless_it_certainly_never_left(error: TransportError) -> None:
    """Maybe sent, or not a connect failure: resending could create a second order."""
    assert None is _step(error)
    assert False is resendable(error, idempotent=False)


@pytest.mark.parametrize(
    "error",
    [
        TransportTimeoutError("read timeout", maybe_sent=True),
        TransportError("connection dropped", maybe_sent=True),
        ConnectError("refused", maybe_sent=True),
    ],
    ids=["read-timeout", "dropped", "refused-after-a-sent-attempt"],
)
def test_a_query_is_resent_after_any_failed_exchange(error: TransportError) -> None:
    """A query changes nothing, so a maybe-sent failure is retried too."""
    assert 0.1 == pytest.approx(_step(error, idempotent=True, rng=LOW))


@pytest.mark.parametrize(
    "error",
    [
        GatewayError("RPM22208", "used", explanation="orderId used"),
        DecodeError("not a form", maybe_sent=True),
        HTTPStatusError("HTTP 503", maybe_sent=True, status_code=503),
        HTTPStatusError("HTTP 404", maybe_sent=False, status_code=404),
    ],
    ids=["gateway-refusal", "bad-answer", "503", "404"],
)
def test_an_answer_is_never_resent_even_for_a_query(error: CmpayError) -> None:
    """Something answered: sending again would not change what it said."""
    assert None is _step(error, idempotent=True)
    assert None is _step(error)


def test_the_call_state_counts_attempts_and_remembers_a_maybe_sent_one() -> None:
    """Once any attempt may have been sent, later never-sent attempts do not undo it."""
    state = CallState()
    seen = []
    for started, verdict in [(10.0, False), (11.0, True), (12.0, False)]:
        attempt = state.begin(started)
        state.status = 200
        state.reported = True
        state.settle(verdict)
        seen.append((attempt, state.started, state.sent))
    state.begin(13.0)

    assert [(1, 10.0, False), (2, 11.0, True), (3, 12.0, True)] == seen
    assert (4, None, False, True) == (state.attempt, state.status, state.reported, state.sent)
