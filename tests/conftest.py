"""Shared fixtures: every async test runs on asyncio and on trio (anyio's pytest plugin).

Also the services on 127.0.0.1 (``redis_url``, ``postgres_dsn``): one per test module that
asks, skipped when absent (a failure under CMPAY_REQUIRE_SERVICES=1, as in CI). Fixtures of
one area live in its own conftest.py (tests/client/conftest.py: the sandbox over TCP).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx
import pytest

from cmpay_async import CmpayClient
from cmpay_async.testing import Sandbox

from .support.helpers import make_client
from .support.queues import postgres_server, redis_server

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@pytest.fixture(autouse=True)
def _fresh_plans_under_mutation_testing() -> None:
    """Under mutmut only: drop the registry's compiled plans and the memo caches per test.

    The library compiles the registry into plans on first use and keeps them; mutmut links a
    function to the tests that call it, so without this a plan builder would be linked to
    the one test that happened to build it first, and judged by that test alone.
    """
    if "MUTANT_UNDER_TEST" in os.environ:
        from cmpay_async import _binding, _codec, _notify, _protocol, _redact, _validate, _values
        from cmpay_async._schema import REGISTRY

        for schema in REGISTRY.values():
            schema._plans.clear()
        for cached in (_values._date, _validate.date_problem, _redact._pattern):
            cached.cache_clear()
        # The hand-kept memos too: a date read while the tests were collected would let a
        # mutant of the reader go unjudged.
        _binding._DATES.clear()
        _protocol._DATE_TEXT.clear()
        for escaped in _codec._ESCAPED.values():
            escaped.clear()
        # And the notification plans that hold compiled functions (split, readers).
        for plans in (_notify._USUAL, _notify._PLANS, _notify._READERS):
            plans.clear()


class _WarnUnclosed(sqlite3.Connection):
    """A connection that warns when collected unclosed, as Python 3.13's own do."""

    _closed = False
    _opened = False  # a connect that failed opened nothing, and 3.13 says nothing of it

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._opened = True

    def close(self) -> None:
        self._closed = True
        super().close()

    def __del__(self) -> None:
        if self._opened and not self._closed:
            warnings.warn(f"unclosed database in {self!r}", ResourceWarning, stacklevel=1)


@pytest.fixture(autouse=True, scope="session")
def _unclosed_sqlite_fails_on_every_python() -> Iterator[None]:
    """Before 3.13 an unclosed sqlite3 connection is collected silently; make it warn.

    `with sqlite3.connect(...)` commits but does not close; on 3.13 the ResourceWarning at
    collection is an unraisable exception that pytest turns into a failure of the test that
    dropped it (filterwarnings = error). Warning the same way on 3.10 to 3.12 catches such a
    leak before it reaches a 3.13 machine.
    """
    if sys.version_info >= (3, 13):
        yield
        return
    connect = sqlite3.connect

    def warning_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs.setdefault("factory", _WarnUnclosed)
        return connect(*args, **kwargs)

    sqlite3.connect = warning_connect  # type: ignore[assignment]
    try:
        yield
    finally:
        sqlite3.connect = connect


# `nox -s mutants` judges each mutant on asyncio alone (CMPAY_ANYIO_BACKENDS=asyncio), which
# halves its cost; every other run, CI included, covers both loops.
BACKENDS = os.environ.get("CMPAY_ANYIO_BACKENDS", "asyncio,trio").split(",")


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each ``@pytest.mark.anyio`` test once per event loop."""
    return str(request.param)


@pytest.fixture
def sandbox() -> Sandbox:
    """A fresh sandbox gateway."""
    return Sandbox()


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[CmpayClient]:
    """A client wired to the sandbox in-process."""
    async with make_client(httpx.ASGITransport(app=sandbox)) as c:
        yield c


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Redis that answers (the machine's, or a private one)."""
    with redis_server() as url:
        yield url


@pytest.fixture(scope="module")
def postgres_dsn() -> Iterator[str]:
    """The shared PostgreSQL (skip, or fail in CI, when it does not answer)."""
    with postgres_server() as dsn:
        yield dsn


class Tracing(NamedTuple):
    """A tracer provider and the exporter its finished spans land in."""

    provider: TracerProvider
    spans: InMemorySpanExporter


@pytest.fixture
def exporter() -> Iterator[Tracing]:
    """A tracer provider whose finished spans land in memory (OpenTelemetry's SDK)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield Tracing(provider, spans)
    provider.shutdown()
