"""PostgresStore: several machines sharing one PostgreSQL. Needs ``cmpay-async[postgres]``.

A claim is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE the lease ran out RETURNING``:
atomic in the database, and every lease is measured on the database's clock, so machines
whose clocks differ still agree. The table is created on first use (or call ``migrate()``
from your deployment). psycopg's synchronous connection runs in anyio worker threads (one
connection per worker thread, kept), so the store works on asyncio and trio alike.

Connecting and each statement give up after ``timeout`` seconds (5 by default; psycopg's
``connect_timeout``, whose floor is 2 s, and the server's ``statement_timeout``), and the
whole call is cut off after twice that whatever psycopg does; a call cut off that way shuts
its connection's socket down, so the worker thread blocked on a server that never
answers ends too. Every failure is a ``StoreError``; a connection the server dropped is
replaced on the next call.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from cmpay_async._exceptions import ConfigurationError, StoreError
from cmpay_async._pools import keep_inherited

from ._contract import Claimed, ClaimState, driver_failure, new_token, run_abandoning

__all__ = ["PostgresStore"]

T = TypeVar("T")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class PostgresStore:
    """A store in a PostgreSQL table; ``dsn`` as psycopg takes it."""

    def __init__(self, dsn: str, *, table: str = "cmpay_events", timeout: float = 5.0) -> None:
        try:
            import psycopg
            import psycopg.conninfo
        except ImportError:
            raise ConfigurationError(
                "PostgresStore needs psycopg 3: pip install 'cmpay-async[postgres]'"
            ) from None
        if not _NAME.fullmatch(table):
            raise ConfigurationError(f"table must be a plain SQL name, not {table[:70]!r}")
        if not 0 < timeout <= 30:
            raise ConfigurationError(f"timeout must be above 0 and at most 30 s, not {timeout!r}")
        try:
            params = psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.Error:
            # Never the DSN itself, nor psycopg's message: both may hold the password.
            raise ConfigurationError("dsn is not a connection string psycopg accepts") from None
        self._psycopg: Any = psycopg
        self._dsn = dsn
        self._secrets = (str(params.get("password") or ""), dsn)
        self._host = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
        # The server ends a statement (or a wait for a lock) that outlives the timeout.
        limit = f"-c statement_timeout={max(1, int(timeout * 1000))}"
        self._options = f"{params.get('options') or ''} {limit}".strip()
        self.table = table
        #: Seconds to connect or to run a statement; a whole call is cut off after twice this.
        self.timeout = timeout
        self._local = threading.local()
        self._connections: list[Any] = []
        #: The thread each connection belongs to, by ``id`` of the connection.
        self._owners: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()
        self._migrated = False
        self._pid = os.getpid()

    def _connection(self) -> Any:
        connection = self._connection_without_migrating()
        if not self._migrated:
            self._create(connection)
        return connection

    def _forget_inherited(self) -> None:
        """In a forked child: leave the parent's connections (its sessions) alone for good.

        Closing one, or letting it be collected, would end the parent's session on the server.
        """
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                keep_inherited(self._connections)
                self._connections = []
                self._owners = {}
                self._local = threading.local()
                self._pid = os.getpid()

    def _connection_without_migrating(self) -> Any:
        self._forget_inherited()
        connection = getattr(self._local, "connection", None)
        if connection is not None and not connection.closed and _spoke(connection):
            # An idle session the server spoke on has ended (pg_terminate_backend, a
            # restart): replaced before use instead of failing the next statement.
            connection.close()
            with self._lock, contextlib.suppress(ValueError, KeyError):  # close() may have run
                self._connections.remove(connection)
                del self._owners[id(connection)]
        if connection is None or connection.closed:
            connection = self._psycopg.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=max(2, math.ceil(self.timeout)),
                options=self._options,
            )
            self._local.connection = connection
            with self._lock:
                # The sessions of threads that have ended (a loop's idle worker threads end
                # after seconds) would stay open until the process exits: close them now.
                ended = [c for c in self._connections if not self._owners[id(c)].is_alive()]
                for old in ended:
                    self._connections.remove(old)
                    del self._owners[id(old)]
                self._connections.append(connection)
                self._owners[id(connection)] = threading.current_thread()
            for old in ended:
                with contextlib.suppress(Exception):  # already broken: nothing to end
                    old.close()
        return connection

    def _create(self, connection: Any) -> None:
        errors = self._psycopg.errors
        with self._lock:
            if self._migrated:
                return
            try:
                connection.execute(
                    f"CREATE TABLE IF NOT EXISTS {self.table} ("
                    "key text PRIMARY KEY, state text NOT NULL, token text NOT NULL, "
                    "expires timestamptz NOT NULL)"
                )
            except (errors.UniqueViolation, errors.DuplicateTable, errors.DuplicateObject):
                # Another process created it at the same moment: "IF NOT EXISTS" races, and
                # the loser fails on the table's row type in one of these ways. Only a table
                # that exists now is that case (another type of the same name is not).
                found = connection.execute(
                    "SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (self.table,)
                ).fetchone()
                if found is None or found[0] != "r":  # the ordinary table every store makes
                    raise
            self._migrated = True

    async def migrate(self) -> None:
        """Create the table if it does not exist (also done on first use)."""
        # Taking a connection creates the table when this store has not yet.
        await self._run("connect", lambda db: None)

    @property
    def call_bound(self) -> float:
        """Seconds within which every call of this store ends.

        Connecting, and each statement and the whole call are cut off at twice ``timeout``.
        """
        return 2 * self.timeout

    def close(self) -> None:
        """Close every connection the store opened (in this process)."""
        self._forget_inherited()
        with self._lock:
            connections, self._connections = self._connections, []
            self._owners = {}
        for connection in connections:
            connection.close()

    async def _run(self, operation: str, work: Callable[[Any], T]) -> T:
        """Run ``work`` in a thread: the one place psycopg's errors become ``StoreError``."""
        using: list[Any] = []
        step = "connect"

        def run() -> T:
            nonlocal step
            connection = self._connection()
            using.append(connection)
            step = operation
            return work(connection)

        try:
            return await run_abandoning(run, timeout=2 * self.timeout)
        except StoreError:
            raise
        except (self._psycopg.Error, OSError) as exc:
            errors = self._psycopg.errors
            if using and type(exc) is TimeoutError:
                _shut(using[0])  # cut off: its thread may be blocked on a silent server
            error = driver_failure(
                exc,
                backend="PostgresStore",
                operation=step,
                host=self._host,
                secrets=self._secrets,
                timed_out=isinstance(
                    exc, (TimeoutError, errors.QueryCanceled, errors.ConnectionTimeout)
                ),
                # A statement that failed may have been applied: a claim then stays held
                # until its lease ends.
                maybe_sent=step != "connect",
            )
            raise error from error.__cause__

    async def claim(self, key: str, *, lease: float) -> Claimed:
        """Own ``key`` for ``lease`` seconds if nobody handled or holds it."""
        token = new_token()

        def work(db: Any) -> Claimed:
            won = db.execute(
                f"INSERT INTO {self.table} AS e (key, state, token, expires) "  # noqa: S608 - a checked name
                "VALUES (%s, 'in_progress', %s, now() + %s * interval '1 second') "
                "ON CONFLICT (key) DO UPDATE SET token = EXCLUDED.token, "
                "expires = EXCLUDED.expires "
                "WHERE e.state = 'in_progress' AND e.expires <= now() RETURNING e.token",
                (key, token, lease),
            ).fetchone()
            if won is not None and won[0] == token:
                return Claimed(ClaimState.NEW, token)
            row = db.execute(
                f"SELECT state FROM {self.table} WHERE key = %s",  # noqa: S608 - a checked name
                (key,),
            ).fetchone()
            if row is not None and row[0] == ClaimState.DONE.value:
                return Claimed(ClaimState.DONE)
            return Claimed(ClaimState.IN_PROGRESS)

        return await self._run("claim", work)

    async def complete(self, key: str, token: str) -> bool:
        """Mark ``key`` handled; False if ``token`` no longer owns it."""

        def work(db: Any) -> bool:
            done = db.execute(
                f"UPDATE {self.table} SET state = 'done', expires = 'infinity' "  # noqa: S608
                "WHERE key = %s AND token = %s AND state = 'in_progress'",
                (key, token),
            )
            return bool(done.rowcount == 1)

        return await self._run("complete", work)

    async def release(self, key: str, token: str) -> None:
        """Give ``key`` up so that a retry can claim it at once."""

        def work(db: Any) -> None:
            db.execute(
                f"DELETE FROM {self.table} "  # noqa: S608 - a checked name
                "WHERE key = %s AND token = %s AND state = 'in_progress'",
                (key, token),
            )

        await self._run("release", work)


def _spoke(connection: Any) -> bool:
    """Whether the server sent anything on an idle connection (only an ending says so)."""
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(connection.pgconn.socket, selectors.EVENT_READ)
            return bool(selector.select(timeout=0))
    except Exception:  # the socket is gone already: the connection is useless too
        return True


def _shut(connection: Any) -> None:
    """Shut a connection's socket down, waking a thread blocked on it (it then fails)."""
    with contextlib.suppress(Exception):  # already closed, or never connected
        duplicate = socket.socket(fileno=os.dup(connection.pgconn.socket))
        with duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)
