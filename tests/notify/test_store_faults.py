"""Stores that fail, hang or vanish: the processor answers without SUCCESS, in bounded time.

Over real servers: a private redis-server the test starts and kills, the shared PostgreSQL
(its sessions terminated, its table locked), a TCP listener that accepts and never answers
(a hung store), a proxy that stops forwarding mid-session, and a closed port (a gone store).
No timing is asserted: ``fail_after(GUARD)`` only turns a regression into a failure instead
of a hang.
"""

from __future__ import annotations

import logging
import selectors
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
import redis

from cmpay_async import (
    CmpayError,
    Md5Signer,
    NotificationProcessor,
    PaymentEvent,
    StoreError,
    StoreTimeoutError,
    event_key,
)
from cmpay_async.stores import Claimed, ClaimState, MemoryStore, Store
from cmpay_async.stores.postgres import PostgresStore
from cmpay_async.stores.redis import RedisStore
from cmpay_async.stores.sqlite import SqliteStore
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, sign_notification
from tests.support.queues import _answers_ping, redis_server, unavailable

pytestmark = pytest.mark.anyio

#: Seconds after which a call that should have ended is a failure (not a measurement).
GUARD = 10
#: The stores' timeout in these tests.
SHORT = 0.5
SECRET = "s3cret-Pa55word"
#: Where private redis-servers write (they are started without persistence, or killed).
ROOT_TMP = Path(tempfile.gettempdir())


# -- servers and sockets --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def gone_port() -> Iterator[int]:
    """A port nobody listens on: connections are refused (a store that is gone)."""
    yield _free_port()


@contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung store)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            with suppress(TimeoutError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=GUARD)
        for connection in held:
            connection.close()
        server.close()


class FreezingProxy:
    """A TCP proxy to a real server that, while frozen, drops what either side sends.

    The server then never sees the query, so only the client's own bound can end the wait.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.frozen = threading.Event()
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.setblocking(False)
        self.port = int(self._server.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        pairs: dict[socket.socket, socket.socket] = {}
        with selectors.DefaultSelector() as selector:
            selector.register(self._server, selectors.EVENT_READ)
            while not self._stop.is_set():
                for ready, _ in selector.select(timeout=0.05):
                    sock = ready.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._server:
                        client = self._server.accept()[0]
                        server = socket.create_connection(self.upstream)
                        self._sockets += [client, server]
                        pairs[client], pairs[server] = server, client
                        selector.register(client, selectors.EVENT_READ)
                        selector.register(server, selectors.EVENT_READ)
                    else:
                        try:
                            data = sock.recv(65536)
                        except OSError:
                            data = b""
                        if not data:
                            for end in (sock, pairs[sock]):
                                selector.unregister(end)
                                end.close()
                        elif not self.frozen.is_set():
                            pairs[sock].sendall(data)
                        # frozen: what was sent is lost, as on a network that went dark

    def close(self) -> None:
        """Stop the proxy and close every socket it holds."""
        self._stop.set()
        self._thread.join(timeout=GUARD)
        for sock in [self._server, *self._sockets]:
            sock.close()


@contextmanager
def private_redis(
    *options: str, directory: Path = ROOT_TMP
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own (killed at the end), started with ``options``."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable(
            "no redis-server binary to start a private Redis (apt-get install redis-server)"
        )
    port = _free_port()
    process = subprocess.Popen(
        [
            str(binary),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory or ROOT_TMP),
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + GUARD
        while not _answers_ping("127.0.0.1", port):
            if time.monotonic() > deadline or process.poll() is not None:
                unavailable(f"a private redis-server {' '.join(options)} did not start")
            time.sleep(0.02)  # waiting for start-up
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        process.kill()
        process.wait(timeout=GUARD)


def _table() -> str:
    return f"cmpay_fault_{uuid.uuid4().hex[:8]}"


def _drop(dsn: str, table: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f"DROP TABLE IF EXISTS {table}")


# -- the processor ---------------------------------------------------------------------------------


class Runs:
    """A handler that records each event it ran for; ``block`` makes it wait to be cancelled."""

    def __init__(self, during: Callable[[], Awaitable[object]] | None = None) -> None:
        self.events: list[PaymentEvent] = []
        self.started = anyio.Event()
        self.block = False
        self.during = during

    async def __call__(self, event: PaymentEvent) -> None:
        self.started.set()
        if self.block:
            await anyio.sleep_forever()
        if self.during is not None:
            await self.during()
        self.events.append(event)


def _processor(store: Store, handler: Runs, **kw: Any) -> NotificationProcessor:
    return NotificationProcessor(
        verifier=Md5Signer(PUBLIC_TEST_KEY),
        merchant_id=PUBLIC_TEST_MERCHANT,
        store=store,
        handler=handler,
        **kw,
    )


def _body(order_id: str) -> bytes:
    return sign_notification(order_id=order_id, amount=100)


async def _answer(processor: NotificationProcessor, order_id: str) -> tuple[int, bytes]:
    """process() a notification; a hang is a failure, not a wait."""
    with anyio.fail_after(GUARD):
        answer = await processor.process(_body(order_id))
    return answer.status_code, answer.body


UNAVAILABLE = (503, b"FAIL")


def _store_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "the handler did not run" in r.getMessage()]


# -- hung and gone stores --------------------------------------------------------------------------


def _redis_at(port: int) -> RedisStore:
    return RedisStore(f"redis://:{SECRET}@127.0.0.1:{port}/0", timeout=SHORT)


def _postgres_at(port: int) -> PostgresStore:
    return PostgresStore(
        f"postgresql://cmpay:{SECRET}@127.0.0.1:{port}/test", table=_table(), timeout=SHORT
    )


STORES_AT: dict[str, Callable[[int], Any]] = {"redis": _redis_at, "postgres": _postgres_at}
PLACES = {"hung": silent_listener, "gone": gone_port}


@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("kind", list(STORES_AT))
async def test_a_hung_or_gone_store_is_answered_503_without_the_handler(
    kind: str, place: str, caplog: pytest.LogCaptureFixture
) -> None:
    """process() answers 503 FAIL, the handler does not run, a WARNING names the store."""
    caplog.set_level(logging.WARNING, logger="cmpay_async")
    handler = Runs()
    with PLACES[place]() as port:
        store = STORES_AT[kind](port)
        try:
            assert UNAVAILABLE == await _answer(_processor(store, handler), "F1")
        finally:
            store.close()

    assert [] == handler.events
    assert not handler.started.is_set()
    [logged] = _store_errors(caplog)
    assert type(store).__name__ in logged
    assert SECRET not in caplog.text


@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("kind", list(STORES_AT))
async def test_a_hung_or_gone_store_raises_a_store_error(kind: str, place: str) -> None:
    """The store itself raises StoreError (a timeout for a hung one), never its driver's error."""
    with PLACES[place]() as port:
        store = STORES_AT[kind](port)
        try:
            with anyio.fail_after(GUARD), pytest.raises(StoreError) as caught:
                await store.claim("K", lease=60)
        finally:
            store.close()

    error = caught.value
    assert isinstance(error, CmpayError)
    assert (place == "hung") is isinstance(error, StoreTimeoutError)
    assert type(store).__name__ == error.backend
    assert error.operation in ("connect", "claim")
    assert f"127.0.0.1:{port}" == error.endpoint_host
    assert SECRET not in str(error)
    assert SECRET not in repr(error)
    if place == "gone":
        assert "connect" == error.operation
        assert not error.maybe_sent  # refused: the claim was certainly not taken


async def test_process_result_raises_the_store_error() -> None:
    """A reconciliation result whose claim fails raises StoreError (a CmpayError), not False."""
    from tests.support.helpers import query_result

    handler = Runs()
    with gone_port() as port:
        store = _redis_at(port)
        try:
            with anyio.fail_after(GUARD), pytest.raises(StoreError):
                await _processor(store, handler).process_result(query_result("F2", "SUCCESS"))
        finally:
            store.close()
    assert [] == handler.events


# -- Redis: a private server killed ----------------------------------------------------------------


async def test_redis_refusing_commands_names_each_operation() -> None:
    """A Redis that refuses the store's commands (full at maxmemory with noeviction; scripts
    disabled): each call raises a StoreError naming the call, the server and the cause, and
    says it may have been applied (a command the server received)."""
    options = ("--maxmemory", "1", "--maxmemory-policy", "noeviction")
    with private_redis(*options, "--rename-command", "EVALSHA", "") as (url, _):
        store = RedisStore(url, timeout=SHORT)
        where = url.split("//", 1)[1].split("/", 1)[0]
        try:
            calls = {
                "claim": (lambda: store.claim("W1", lease=60), "OutOfMemoryError: command not"),
                "complete": (lambda: store.complete("W1", "0" * 32), "unknown command"),
                "release": (lambda: store.release("W1", "0" * 32), "unknown command"),
            }
            for operation, (call, cause) in calls.items():
                with anyio.fail_after(GUARD), pytest.raises(StoreError) as caught:
                    await call()
                error = caught.value
                assert operation == error.operation
                assert where == error.endpoint_host
                assert error.maybe_sent is True
                assert str(error).startswith(f"RedisStore failed to {operation}: ")
                assert cause in str(error)
        finally:
            store.close()


async def test_redis_killed_between_deliveries() -> None:
    """A Redis that served a claim and then died: the next delivery is 503, no handler run."""
    handler = Runs()
    with private_redis("--save", "", "--appendonly", "no") as (url, server):
        store = RedisStore(url, timeout=SHORT)
        processor = _processor(store, handler)
        assert (200, b"SUCCESS") == await _answer(processor, "R1")
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=GUARD)

        assert UNAVAILABLE == await _answer(processor, "R2")
        store.close()
    assert ["R1"] == [e.order_id for e in handler.events]


async def test_redis_killed_while_the_handler_runs(caplog: pytest.LogCaptureFixture) -> None:
    """complete() fails after the handler ran: SUCCESS (the work is done), an ERROR, no raise."""
    caplog.set_level(logging.WARNING, logger="cmpay_async")
    with private_redis("--save", "", "--appendonly", "no") as (url, server):

        async def kill() -> None:
            server.send_signal(signal.SIGKILL)
            await anyio.to_thread.run_sync(server.wait)

        handler = Runs(during=kill)
        store = RedisStore(url, timeout=SHORT)
        # Tried until the lease ends (Redis never comes back here): keep that short.
        answer = await _answer(_processor(store, handler, lease=1.0), "R3")
        store.close()

    assert (200, b"SUCCESS") == answer
    assert ["R3"] == [e.order_id for e in handler.events]
    [record] = [r for r in caplog.records if "could not record it" in r.getMessage()]
    assert logging.ERROR == record.levelno
    assert "RedisStore failed to" in record.getMessage()


async def test_redis_restarted_while_the_handler_runs_records_the_completion(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis (append-only, fsync always) SIGKILLed inside the handler and started again a
    moment later, within the lease: the complete is retried until it is recorded, so a later
    delivery is DONE and the handler ran once. (Found by the soak: two tries were not enough,
    and after the lease reconciliation ran the handler again.)"""
    caplog.set_level(logging.WARNING, logger="cmpay_async")
    options = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")
    with private_redis(*options, directory=tmp_path) as (url, server):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        restarted: list[subprocess.Popen[bytes]] = []

        async def restart_later() -> None:
            await anyio.sleep(0.3)  # down for a moment, as a restart is
            restarted.append(_redis_again(port, tmp_path, options))

        async def kill() -> None:
            server.send_signal(signal.SIGKILL)
            await anyio.to_thread.run_sync(server.wait)

        handler = Runs(during=kill)
        store = RedisStore(url, timeout=SHORT)
        processor = _processor(store, handler, lease=8.0)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(restart_later)
                first = await _answer(processor, "R4")
            second = await _answer(processor, "R4")
        finally:
            store.close()
            for process in restarted:
                process.kill()
                process.wait(timeout=GUARD)

    assert [(200, b"SUCCESS")] * 2 == [first, second]
    assert ["R4"] == [e.order_id for e in handler.events]
    assert [] == [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def _redis_again(port: int, directory: Path, options: tuple[str, ...]) -> subprocess.Popen[bytes]:
    """A redis-server started again on ``port`` over the same files (not waited for: the
    processor's retries are what wait)."""
    binary = str(shutil.which("redis-server"))
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# -- PostgreSQL: sessions terminated, a table locked, a proxy frozen -------------------------------


def _terminate(dsn: str, application: str) -> int:
    """Terminate every session of ``application`` and wait until they are gone."""
    with psycopg.connect(dsn, autocommit=True) as db:
        killed = db.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            (application,),
        ).fetchone()
        deadline = time.monotonic() + GUARD
        while db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application,)
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, "the sessions did not end"
            time.sleep(0.02)  # waiting for the backends to exit
    assert killed is not None
    return int(killed[0])


async def test_postgres_sessions_terminated_between_deliveries(postgres_dsn: str) -> None:
    """pg_terminate_backend on the store's sessions: the next delivery reconnects, SUCCESS,
    and the ended session is dropped from the store's books."""
    application = f"cmpay-fault-{uuid.uuid4().hex[:8]}"
    store = PostgresStore(
        f"{postgres_dsn}?application_name={application}", table=_table(), timeout=SHORT
    )
    handler = Runs()
    processor = _processor(store, handler)
    try:
        assert (200, b"SUCCESS") == await _answer(processor, "P1")
        assert _terminate(postgres_dsn, application) >= 1

        assert (200, b"SUCCESS") == await _answer(processor, "P2")
        # The ended session was dropped from the store's books, not only replaced: what it
        # holds is open, and each connection it holds has its owner recorded once.
        assert all(not connection.closed for connection in store._connections)
        assert len(store._owners) == len(store._connections)
    finally:
        store.close()
        _drop(postgres_dsn, store.table)
    assert ["P1", "P2"] == [e.order_id for e in handler.events]


def _sessions(dsn: str, application: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as db:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_postgres_sessions_of_ended_threads_are_closed(postgres_dsn: str) -> None:
    """Each worker thread has its own session; once the thread ends, its session is closed.

    The soak found sessions piling up: an event loop's worker threads end (idle, or with the
    loop), each later thread opened a session, and the ended threads' sessions stayed open
    until the process exited, towards the server's max_connections.
    """
    application = f"cmpay-threads-{uuid.uuid4().hex[:8]}"
    store = PostgresStore(
        f"{postgres_dsn}?application_name={application}", table=_table(), timeout=SHORT
    )
    try:
        for n in range(4):
            # A loop per thread: its worker thread (and so the session's owner) ends with it.
            thread = threading.Thread(
                target=anyio.run, args=(partial(store.claim, f"T{n}", lease=60),)
            )
            thread.start()
            thread.join(GUARD)
        assert 1 == _sessions(postgres_dsn, application)
    finally:
        store.close()
        _drop(postgres_dsn, store.table)
    assert 0 == _sessions(postgres_dsn, application)


async def test_postgres_sessions_terminated_while_the_handler_runs(postgres_dsn: str) -> None:
    """The store's sessions end mid-handler: complete() still records it; a duplicate is DONE."""
    application = f"cmpay-fault-{uuid.uuid4().hex[:8]}"
    store = PostgresStore(
        f"{postgres_dsn}?application_name={application}", table=_table(), timeout=SHORT
    )

    async def terminate() -> None:
        await anyio.to_thread.run_sync(_terminate, postgres_dsn, application)

    handler = Runs(during=terminate)
    processor = _processor(store, handler)
    try:
        assert (200, b"SUCCESS") == await _answer(processor, "P3")
        handler.during = None
        assert (200, b"SUCCESS") == await _answer(processor, "P3")
    finally:
        store.close()
        _drop(postgres_dsn, store.table)
    assert ["P3"] == [e.order_id for e in handler.events]


async def test_postgres_complete_cut_off_by_the_statement_timeout(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Another session locks the table mid-handler: complete() gives up; SUCCESS and an ERROR."""
    caplog.set_level(logging.WARNING, logger="cmpay_async")
    # statement_timeout 1 s, and the whole call cut off at 2 s: the server's limit comes first.
    store = PostgresStore(postgres_dsn, table=_table(), timeout=1.0)
    locker = psycopg.connect(postgres_dsn)

    async def lock() -> None:
        locker.execute(f"LOCK TABLE {store.table} IN ACCESS EXCLUSIVE MODE")

    handler = Runs(during=lock)
    try:
        # The complete is retried until the lease ends (the lock outlasts it): keep it short.
        assert (200, b"SUCCESS") == await _answer(_processor(store, handler, lease=2.5), "P4")
    finally:
        locker.rollback()
        locker.close()
        store.close()
        _drop(postgres_dsn, store.table)

    assert ["P4"] == [e.order_id for e in handler.events]
    [record] = [r for r in caplog.records if "could not record it" in r.getMessage()]
    assert "QueryCanceled" in record.getMessage()
    assert "[complete host=" in record.getMessage()


async def test_postgres_that_stops_answering_mid_session(postgres_dsn: str) -> None:
    """A proxy stops forwarding: the server never sees the claim, the store's bound ends it."""
    params = psycopg.conninfo.conninfo_to_dict(postgres_dsn)
    proxy = FreezingProxy((str(params.get("host", "127.0.0.1")), int(params.get("port", 5432))))
    table = _table()
    store = PostgresStore(
        f"postgresql://127.0.0.1:{proxy.port}/{params.get('dbname', 'test')}",
        table=table,
        timeout=SHORT,
    )
    handler = Runs()
    processor = _processor(store, handler)
    try:
        assert (200, b"SUCCESS") == await _answer(processor, "P5")
        proxy.frozen.set()
        assert UNAVAILABLE == await _answer(processor, "P6")
        # The connection cut off is shut down, so the thread blocked on it ends as well.
        with anyio.fail_after(GUARD):
            while not any(c.closed for c in store._connections):
                await anyio.sleep(0.01)
        proxy.frozen.clear()
        # The cut-off connection was shut down; a new one serves the retry.
        assert (200, b"SUCCESS") == await _answer(processor, "P6")
    finally:
        store.close()
        proxy.close()
        _drop(postgres_dsn, table)
    assert ["P5", "P6"] == [e.order_id for e in handler.events]


# -- a store of the application's own --------------------------------------------------------------


class HangingStore(MemoryStore):
    """A store whose claim never returns (a driver that ignores its own timeout)."""

    async def claim(self, key: str, *, lease: float) -> Claimed:
        """Never answer."""
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


class RefusingStore(MemoryStore):
    """A store whose driver raises its own error, with a DSN in the message."""

    async def claim(self, key: str, *, lease: float) -> Claimed:
        """Fail as a driver does."""
        raise ConnectionRefusedError(f"cannot reach postgresql://app:{SECRET}@db:5432/x")


async def test_the_processor_bounds_a_store_that_never_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """store_timeout ends a claim that never returns: 503, and no handler run."""
    caplog.set_level(logging.WARNING, logger="cmpay_async")
    handler = Runs()
    processor = _processor(HangingStore(), handler, store_timeout=SHORT)

    assert UNAVAILABLE == await _answer(processor, "C1")
    assert [] == handler.events
    [logged] = _store_errors(caplog)
    assert "HangingStore did not claim within 0.5 s [claim]" in logged


async def test_the_processor_translates_a_custom_stores_own_errors() -> None:
    """A custom store's driver error becomes StoreError, its DSN's password blanked out."""
    processor = _processor(RefusingStore(), Runs())

    with pytest.raises(StoreError) as caught:
        await processor.process_result(_paid("C2"))

    assert "RefusingStore" == caught.value.backend
    assert "claim" == caught.value.operation
    assert "builtins.ConnectionRefusedError" == caught.value.driver_error
    assert SECRET not in str(caught.value)
    assert "postgresql://app:***@db:5432/x" in str(caught.value)
    assert caught.value.__cause__ is None  # the original message held the password


class FlakyCompleteStore(MemoryStore):
    """A store whose first complete() fails as a dropped connection does."""

    def __init__(self) -> None:
        super().__init__()
        self.completes = 0

    async def complete(self, key: str, token: str) -> bool:
        """Fail the first time, then complete."""
        self.completes += 1
        if self.completes == 1:
            raise ConnectionResetError("connection reset by peer")
        return await super().complete(key, token)


async def test_a_complete_that_fails_once_is_tried_again() -> None:
    """complete() fails once after the handler ran: a second try records it; a duplicate is DONE."""
    store, handler = FlakyCompleteStore(), Runs()
    processor = _processor(store, handler)

    assert (200, b"SUCCESS") == await _answer(processor, "C3")
    assert (200, b"SUCCESS") == await _answer(processor, "C3")
    assert 2 == store.completes
    assert ["C3"] == [e.order_id for e in handler.events]


def _paid(order_id: str) -> Any:
    from tests.support.helpers import query_result

    return query_result(order_id, "SUCCESS")


@pytest.mark.parametrize("store_timeout", [0, -1, 30.5])
def test_store_timeout_is_above_zero_and_at_most_thirty_seconds(store_timeout: float) -> None:
    """A store_timeout of 0, below 0 or above 30 s is refused when the processor is made."""
    from cmpay_async import ConfigurationError

    with pytest.raises(ConfigurationError, match="store_timeout"):
        _processor(MemoryStore(), Runs(), store_timeout=store_timeout)


STORE_MAKERS: dict[str, Callable[..., Any]] = {
    "redis": lambda **kw: RedisStore("redis://127.0.0.1:1/0", **kw),
    "postgres": lambda **kw: PostgresStore("postgresql://127.0.0.1:1/test", **kw),
    "sqlite": lambda **kw: SqliteStore("unused.db", **kw),
}


@pytest.mark.parametrize("timeout", [0, -1, 30.5])
@pytest.mark.parametrize("kind", list(STORE_MAKERS))
def test_a_store_timeout_is_above_zero_and_at_most_thirty_seconds(
    kind: str, timeout: float
) -> None:
    """Each store refuses a timeout of 0, below 0 or above 30 s when it is made."""
    from cmpay_async import ConfigurationError

    with pytest.raises(ConfigurationError, match="timeout must be above 0 and at most 30 s"):
        STORE_MAKERS[kind](timeout=timeout)


@pytest.mark.parametrize(
    ("make", "bad"),
    [
        (PostgresStore, f"host=db password={SECRET} port"),
        (PostgresStore, f"postgresql://app:{SECRET}@[db/x"),  # psycopg echoes this one
        (RedisStore, f"http://app:{SECRET}@cache:6379/0"),
    ],
)
def test_an_unusable_dsn_or_url_is_refused_without_echoing_it(make: Any, bad: str) -> None:
    """A connection string the driver cannot read: ConfigurationError, the password not in it."""
    from cmpay_async import ConfigurationError

    with pytest.raises(ConfigurationError) as caught:
        make(bad)
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None


# -- cancellation ----------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each store, on its real server."""
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        sqlite_store = SqliteStore(tmp_path / "events.db")
        yield sqlite_store
        sqlite_store.close()
    elif request.param == "redis":
        with redis_server() as url:
            redis_store = RedisStore(url, prefix=f"cmpay-fault:{uuid.uuid4().hex[:8]}:")
            yield redis_store
            redis_store.close()
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        pg_store = PostgresStore(dsn, table=_table())
        yield pg_store
        pg_store.close()
        _drop(dsn, pg_store.table)


async def test_a_cancelled_process_releases_its_claim(store: Store) -> None:
    """process() cancelled mid-handler frees the key: the next delivery runs the handler now."""
    handler = Runs()
    handler.block = True
    processor = _processor(store, handler, lease=60)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(processor.process, _body("X1"))
            await handler.started.wait()
            tg.cancel_scope.cancel()

    handler.block = False
    assert (200, b"SUCCESS") == await _answer(processor, "X1")  # no 60 s lease to wait out
    assert ["X1"] == [e.order_id for e in handler.events]


async def test_a_cancel_after_the_handler_ran_still_completes(store: Store) -> None:
    """Cancelled while completing: the shielded complete records it; a duplicate is DONE."""
    handler = Runs()
    processor = _processor(store, handler)
    key = event_key(PUBLIC_TEST_MERCHANT, "X2", "SUCCESS")

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tg:

            async def cancel_when_handled() -> None:
                tg.cancel_scope.cancel()  # the handler is done; complete() comes next

            handler.during = cancel_when_handled
            tg.start_soon(processor.process, _body("X2"))

    assert ["X2"] == [e.order_id for e in handler.events]
    assert Claimed(ClaimState.DONE) == await store.claim(key, lease=60)


# -- Redis's durability --------------------------------------------------------------------------


NOTHING = (
    "it persists nothing (appendonly no, no save points): a restart forgets every handled payment"
)
SNAPSHOTS = (
    "it persists only snapshots (appendonly no, save '900 1'): a crash forgets the payments "
    "handled since the last snapshot"
)
FSYNC_NO = "appendfsync no: a machine crash may lose the last seconds of handled payments"


def _evicts(policy: str) -> str:
    return (
        f"maxmemory-policy '{policy}': a full server evicts keys, and a handled payment evicted "
        "is handled again"
    )


REDIS_SETTINGS = {
    "nothing": (("--save", "", "--appendonly", "no"), [NOTHING]),
    "snapshots": (("--save", "900 1", "--appendonly", "no"), [SNAPSHOTS]),
    "fsync-no": (("--appendonly", "yes", "--appendfsync", "no"), [FSYNC_NO]),
    "evicting": (
        ("--appendonly", "yes", "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"),
        [_evicts("allkeys-lru")],
    ),
    "volatile": (
        ("--appendonly", "yes", "--maxmemory", "64mb", "--maxmemory-policy", "volatile-ttl"),
        [_evicts("volatile-ttl")],
    ),
    "nothing-and-evicting": (
        ("--save", "", "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-random"),
        [NOTHING, _evicts("allkeys-random")],
    ),
    "durable": (
        ("--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"),
        [],
    ),
    "bounded-noeviction": (
        ("--appendonly", "yes", "--maxmemory", "64mb", "--maxmemory-policy", "noeviction"),
        [],
    ),
    "unlimited": (("--appendonly", "yes", "--maxmemory-policy", "allkeys-lru"), []),
}


@pytest.mark.parametrize("setting", list(REDIS_SETTINGS))
async def test_redis_check_names_what_could_forget_a_payment(
    setting: str, caplog: pytest.LogCaptureFixture
) -> None:
    """check() lists each risky setting; the first claim logs each once at WARNING, with the
    server's address."""
    caplog.set_level(logging.INFO, logger="cmpay_async")
    options, expected = REDIS_SETTINGS[setting]
    with private_redis(*options) as (url, _):
        store = RedisStore(url)
        try:
            risks = await store.check()
            await store.claim("D1", lease=60)
            await store.claim("D2", lease=60)
        finally:
            store.close()

    assert expected == risks
    where = url.split("//", 1)[1].split("/", 1)[0]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [f"the Redis at {where} may forget handled payments: {risk}" for risk in expected] == (
        warned
    )


async def test_redis_without_config_is_not_checked_and_still_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server that refuses CONFIG (hosted Redis): no risk claimed, an INFO line, claims work."""
    caplog.set_level(logging.INFO, logger="cmpay_async")
    with private_redis("--save", "", "--rename-command", "CONFIG", "") as (url, _):
        store = RedisStore(url)
        try:
            assert [] == await store.check()
            assert ClaimState.NEW is (await store.claim("D3", lease=60)).state
        finally:
            store.close()

    assert [] == [r for r in caplog.records if r.levelno >= logging.WARNING]
    said = [r.getMessage() for r in caplog.records if "settings" in r.getMessage()]
    # check() and the first claim each say it, with the server's own refusal in the line:
    # "unknown command 'CONFIG', with args beginning with: ...".
    assert 2 == len(said)
    for line in said:
        assert line.startswith("RedisStore could not read the server's settings (unknown command")
        assert "'CONFIG'" in line


# -- every driver error is translated --------------------------------------------------------------


def _subclasses(root: type[BaseException]) -> list[type[BaseException]]:
    found = [root]
    for sub in root.__subclasses__():
        found += [c for c in _subclasses(sub) if c not in found]
    return found


def _instance(cls: type[BaseException]) -> BaseException:
    message = f"boom from {cls.__name__}; password={SECRET}"
    try:
        return cls(message)
    except Exception:  # a class that parses its message (redis's cluster redirections)
        exc = cls.__new__(cls)
        exc.args = (message,)
        return exc


async def _each_is_translated(
    classes: list[type[BaseException]], run: Callable[[Callable[..., Any]], Awaitable[Any]]
) -> None:
    for cls in classes:
        exc = _instance(cls)

        def fail(*_: Any, exc: BaseException = exc) -> None:
            raise exc

        with pytest.raises(StoreError) as caught:
            await run(fail)
        assert f"{cls.__module__}.{cls.__qualname__}" == caught.value.driver_error
        assert f"boom from {cls.__name__}" in str(caught.value)
        assert SECRET not in str(caught.value)


async def test_every_redis_error_becomes_a_store_error() -> None:
    """Each redis.exceptions class raised inside the store's call comes out as StoreError."""
    classes = [
        c for c in _subclasses(redis.exceptions.RedisError) if c.__module__ != "redis.cluster"
    ]
    assert len(classes) > 20  # the walk found the driver's tree
    store = RedisStore("redis://127.0.0.1:1/0")
    try:
        await _each_is_translated(classes, lambda fail: store._run("claim", fail))
    finally:
        store.close()


async def test_every_psycopg_error_becomes_a_store_error(postgres_dsn: str) -> None:
    """Each psycopg.Error class (every SQLSTATE's) raised in the store's call is a StoreError."""
    classes = _subclasses(psycopg.Error)
    assert len(classes) > 200
    store = PostgresStore(postgres_dsn, table=_table())
    try:
        await _each_is_translated(classes, lambda fail: store._run("claim", fail))
    finally:
        store.close()
        _drop(postgres_dsn, store.table)


async def test_every_sqlite3_error_becomes_a_store_error(tmp_path: Path) -> None:
    """Each sqlite3.Error class raised inside the store's transaction is a StoreError."""
    classes = _subclasses(sqlite3.Error)
    assert len(classes) >= 8
    store = SqliteStore(tmp_path / "e.db")
    try:
        await _each_is_translated(classes, lambda fail: store._run("claim", fail))
    finally:
        store.close()


async def test_an_unusable_sqlite_path_is_a_store_error(tmp_path: Path) -> None:
    """A file in a directory that does not exist: StoreError naming the store and operation."""
    store = SqliteStore(tmp_path / "missing" / "e.db")

    with pytest.raises(StoreError, match=r"SqliteStore failed to claim: OperationalError"):
        await store.claim("K", lease=1)
    store.close()


# -- what a failure names ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_a_driver_error_that_echoes_the_password_never_shows_it(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """The password of the URL or DSN is a secret of its own, scrubbed from any driver error
    that quotes it bare (not only from a whole URL or a password=... pair)."""
    if kind == "redis":
        store: RedisStore | PostgresStore = _redis_at(1)  # redis-py connects lazily
        driver: type[Exception] = redis.exceptions.ResponseError
    else:  # connected (trust authentication ignores the password), then the statement fails
        params = psycopg.conninfo.conninfo_to_dict(request.getfixturevalue("postgres_dsn"))
        params["password"] = SECRET
        store = PostgresStore(psycopg.conninfo.make_conninfo(**params), table=_table())
        driver = psycopg.OperationalError

    def fail(*_: Any) -> None:
        raise driver(f"authentication failed, tried {SECRET!r} for user cmpay")

    try:
        with pytest.raises(StoreError) as caught:
            await store._run("claim", fail)
    finally:
        store.close()
        if kind == "postgres":
            _drop(request.getfixturevalue("postgres_dsn"), store.table)

    assert "claim" == caught.value.operation
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)


async def test_postgres_names_the_call_whose_statement_failed(postgres_dsn: str) -> None:
    """Connected, then each statement refused (its table dropped under it): a StoreError
    naming the call, which may have been applied."""
    store = PostgresStore(postgres_dsn, table=_table(), timeout=SHORT)
    try:
        await store.migrate()
        _drop(postgres_dsn, store.table)
        calls = {
            "claim": lambda: store.claim("P1", lease=60),
            "complete": lambda: store.complete("P1", "0" * 32),
            "release": lambda: store.release("P1", "0" * 32),
        }
        for operation, call in calls.items():
            with anyio.fail_after(GUARD), pytest.raises(StoreError) as caught:
                await call()
            assert (operation, True) == (caught.value.operation, caught.value.maybe_sent)
            assert str(caught.value).startswith(f"PostgresStore failed to {operation}: ")
    finally:
        store.close()


async def test_redis_check_of_a_server_that_never_answers_is_a_timeout_of_the_check() -> None:
    """check() on a server that accepts and never answers: a StoreTimeoutError naming the
    check, in bounded time."""
    with silent_listener() as port:
        store = _redis_at(port)
        try:
            with anyio.fail_after(GUARD), pytest.raises(StoreTimeoutError) as caught:
                await store.check()
        finally:
            store.close()

    assert ("check", f"127.0.0.1:{port}") == (caught.value.operation, caught.value.endpoint_host)


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_a_call_whose_driver_ignores_its_timeout_is_cut_off_at_twice_it(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """A driver blocked past its own timeouts (here: work that waits on an event) is cut off
    by the store at twice its timeout: a StoreTimeoutError, not a wait without end."""
    release = threading.Event()
    if kind == "redis":
        store: RedisStore | PostgresStore = RedisStore("redis://127.0.0.1:1/0", timeout=0.05)
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        store = PostgresStore(dsn, table=_table(), timeout=0.05)
    try:
        with anyio.fail_after(GUARD), pytest.raises(StoreTimeoutError) as caught:
            await store._run("claim", lambda *_: release.wait())
    finally:
        release.set()
        store.close()
        if kind == "postgres":
            _drop(request.getfixturevalue("postgres_dsn"), store.table)

    assert "claim" == caught.value.operation
