"""``scrub`` and ``driver_failure``: the helpers a store (the library's or yours) turns its
driver's exceptions into ``StoreError`` with, credentials blanked (cmpay_async.stores)."""

from __future__ import annotations

import threading

import pytest

from cmpay_async import StoreError, StoreTimeoutError
from cmpay_async.stores import driver_failure, run_abandoning, scrub


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("auth with hunter2 failed", ("hunter2",), "auth with *** failed"),
        ("auth with hunter2 failed", (None, ""), "auth with hunter2 failed"),
        ("host=db password=abc123 port=5432", (), "host=db password=*** port=5432"),
        ("host=db PASSWORD = 'a b\\'c' port=5432", (), "host=db PASSWORD = *** port=5432"),
        ("redis://user:pw@cache:6379/0 refused", (), "redis://user:***@cache:6379/0 refused"),
        ("postgresql://:s3cret@db/test", (), "postgresql://:***@db/test"),
        ("redis://cache:6379/0 refused", (), "redis://cache:6379/0 refused"),
    ],
)
def test_scrub_blanks_given_secrets_and_any_password_in_a_dsn_or_url(
    text: str, secrets: tuple[str | None, ...], expected: str
) -> None:
    """Each given secret becomes ***, as does the password of a key=value DSN or of a URL."""
    assert expected == scrub(text, secrets)


def test_driver_failure_names_the_store_the_call_and_the_driver() -> None:
    """A StoreError (maybe_sent unless told otherwise), one line of text, the driver's error
    as its cause when nothing had to be blanked."""
    cause = OSError("connection reset\n  by peer")

    error = driver_failure(cause, backend="MyStore", operation="claim", host="db:1")

    assert type(error) is StoreError
    assert "MyStore failed to claim: OSError: connection reset by peer" == error.args[0]
    assert ("MyStore", "claim", "db:1", "builtins.OSError") == (
        error.backend,
        error.operation,
        error.endpoint_host,
        error.driver_error,
    )
    assert error.maybe_sent is True
    assert error.__cause__ is cause
    assert error.__suppress_context__ is True


def test_driver_failure_of_a_timeout_that_was_not_sent() -> None:
    """timed_out makes it a StoreTimeoutError; maybe_sent=False is kept."""
    error = driver_failure(
        TimeoutError(), backend="MyStore", operation="connect", host=None, timed_out=True,
        maybe_sent=False,
    )  # fmt: skip

    assert type(error) is StoreTimeoutError
    assert "MyStore failed to connect: TimeoutError: no message" == error.args[0]
    assert error.maybe_sent is False


def test_driver_failure_drops_a_cause_whose_text_held_a_secret() -> None:
    """The driver's message held the password: blanked in ours, and the driver's exception
    (which still holds it) is not chained."""
    cause = RuntimeError("login as shop with s3cret-pw refused")

    error = driver_failure(
        cause, backend="MyStore", operation="claim", host=None, secrets=("s3cret-pw",)
    )

    assert (
        "MyStore failed to claim: RuntimeError: login as shop with *** refused" == (error.args[0])
    )
    assert error.__cause__ is None
    assert error.__suppress_context__ is True
    assert "s3cret-pw" not in repr(error)


@pytest.mark.anyio
async def test_run_abandoning_stops_waiting_for_blocked_work_and_says_how_long_it_waited() -> None:
    """Work blocked in its thread (a driver on a silent server) is left behind: the caller
    gets a TimeoutError naming the time waited, while the work is still blocked."""
    release = threading.Event()

    with pytest.raises(TimeoutError) as caught:
        await run_abandoning(release.wait, timeout=0.01)
    release.set()  # the abandoned thread, if it started, ends now

    assert "no answer within 0.01 s" == str(caught.value)


@pytest.mark.anyio
async def test_run_abandoning_returns_what_the_work_returns() -> None:
    """Work that answers in time is simply awaited."""
    assert 42 == await run_abandoning(lambda: 42, timeout=5)


def test_redis_settings_a_server_leaves_out_count_as_its_defaults() -> None:
    """A server whose CONFIG GET omits a setting (a restricted managed Redis) is judged by
    Redis's defaults for it: no save points means nothing persisted, no maxmemory means no
    eviction. Only what the settings show is named."""
    from cmpay_async.stores.redis import _risks

    nothing = (
        "it persists nothing (appendonly no, no save points): a restart forgets every "
        "handled payment"
    )
    assert [nothing] == _risks({})
    assert [nothing] == _risks({"appendonly": "no", "maxmemory-policy": "allkeys-lru"})
    assert [] == _risks({"appendonly": "yes"})
