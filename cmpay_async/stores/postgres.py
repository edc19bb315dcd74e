"""PostgresStore: several machines sharing one PostgreSQL. Needs ``cmpay-async[postgres]``.

A claim is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE the lease ran out RETURNING``:
atomic in the database, and every lease is measured on the database's clock, so machines
whose clocks differ still agree. The table is created on first use (or call ``migrate()``
from your deployment). psycopg's synchronous connection runs in anyio worker threads (one
connection per worker thread, kept), so the store works on asyncio and trio alike.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread

from cmpay_async._exceptions import ConfigurationError

from . import Claimed, ClaimState, new_token

__all__ = ["PostgresStore"]

T = TypeVar("T")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class PostgresStore:
    """A store in a PostgreSQL table; ``dsn`` as psycopg takes it."""

    def __init__(self, dsn: str, *, table: str = "cmpay_events") -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigurationError(
                "PostgresStore needs psycopg 3: pip install 'cmpay-async[postgres]'"
            ) from None
        if not _NAME.fullmatch(table):
            raise ConfigurationError(f"table must be a plain SQL name, not {table[:70]!r}")
        self._psycopg: Any = psycopg
        self._dsn = dsn
        self.table = table
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._migrated = False

    def _connection(self) -> Any:
        connection = self._connection_without_migrating()
        if not self._migrated:
            self._create(connection)
        return connection

    def _connection_without_migrating(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None or connection.closed:
            connection = self._psycopg.connect(self._dsn, autocommit=True)
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def _create(self, connection: Any) -> None:
        errors = self._psycopg.errors
        with self._lock:
            if self._migrated:
                return
            # Another process may create it at the same moment: "IF NOT EXISTS" races.
            with contextlib.suppress(errors.UniqueViolation, errors.DuplicateTable):
                connection.execute(
                    f"CREATE TABLE IF NOT EXISTS {self.table} ("
                    "key text PRIMARY KEY, state text NOT NULL, token text NOT NULL, "
                    "expires timestamptz NOT NULL)"
                )
            self._migrated = True

    async def migrate(self) -> None:
        """Create the table if it does not exist (also done on first use)."""
        # Taking a connection creates the table when this store has not yet.
        await anyio.to_thread.run_sync(self._connection)

    def close(self) -> None:
        """Close every connection the store opened."""
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    async def _run(self, work: Callable[[Any], T]) -> T:
        return await anyio.to_thread.run_sync(lambda: work(self._connection()))

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

        return await self._run(work)

    async def complete(self, key: str, token: str) -> bool:
        """Mark ``key`` handled; False if ``token`` no longer owns it."""

        def work(db: Any) -> bool:
            done = db.execute(
                f"UPDATE {self.table} SET state = 'done', expires = 'infinity' "  # noqa: S608
                "WHERE key = %s AND token = %s AND state = 'in_progress'",
                (key, token),
            )
            return bool(done.rowcount == 1)

        return await self._run(work)

    async def release(self, key: str, token: str) -> None:
        """Give ``key`` up so that a retry can claim it at once."""

        def work(db: Any) -> None:
            db.execute(
                f"DELETE FROM {self.table} "  # noqa: S608 - a checked name
                "WHERE key = %s AND token = %s AND state = 'in_progress'",
                (key, token),
            )

        await self._run(work)
