"""SqliteStore: the embedded default; safe for several processes on one machine.

Each operation runs in an anyio worker thread (sqlite3 blocks) on that thread's connection
(opened once per thread and process, since opening a file costs more than a claim), in WAL
mode, inside ``BEGIN IMMEDIATE`` so that a claim's read and write are one atomic step
across processes. Leases use the wall clock, which every process on the machine shares.
A lock held by another process is waited for up to ``timeout`` seconds (30 by default: a
long handler's commit); every failure is a ``StoreError``.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio.to_thread

from cmpay_async._exceptions import ConfigurationError, StoreError

from . import Claimed, ClaimState, driver_failure, new_token

__all__ = ["SqliteStore"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cmpay_events (
    key TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    token TEXT NOT NULL,
    expires REAL NOT NULL
)
"""


def _close_own(connections: list[tuple[int, sqlite3.Connection]], lock: threading.Lock) -> None:
    """Close (and forget) the connections of this process; a forked child's are its parent's."""
    with lock:
        held, connections[:] = list(connections), []
    for pid, connection in held:
        if pid == os.getpid():
            connection.close()


class SqliteStore:
    """A store in an SQLite file (made with its table on first use)."""

    def __init__(
        self, path: str | Path, *, clock: Callable[[], float] = time.time, timeout: float = 30.0
    ) -> None:
        if not 0 < timeout <= 30:
            raise ConfigurationError(f"timeout must be above 0 and at most 30 s, not {timeout!r}")
        self.path = str(path)
        #: Seconds a call waits for a lock another process holds before it fails.
        self.timeout = timeout
        self._clock = clock
        self._ready = False
        self._setup = threading.Lock()
        self._local = threading.local()
        self._connections: list[tuple[int, sqlite3.Connection]] = []
        # A store dropped without close() still closes its connections (Python 3.13 warns
        # about each unclosed one); the finalizer holds the list, not the store.
        weakref.finalize(self, _close_own, self._connections, self._setup)

    def _connection(self) -> sqlite3.Connection:
        held: tuple[int, sqlite3.Connection] | None = getattr(self._local, "held", None)
        # A forked child must not use its parent's connection (SQLite forbids it).
        if held is not None and held[0] == os.getpid():
            return held[1]
        connection = self._connect()
        self._local.held = held = (os.getpid(), connection)
        with self._setup:
            self._connections.append(held)
        return connection

    @property
    def call_bound(self) -> float:
        """Seconds within which every call of this store ends.

        A lock is waited for at most ``timeout``; the rest is local file I/O.
        """
        return self.timeout

    def close(self) -> None:
        """Close the connections this process opened (threads open new ones on next use)."""
        _close_own(self._connections, self._setup)
        self._local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        if not self._ready:
            # One thread sets the file up: switching to WAL while another connection of this
            # process is doing the same fails at once with "database is locked".
            with self._setup:
                if not self._ready:
                    connection.execute("PRAGMA journal_mode=WAL")
                    connection.execute(_SCHEMA)
                    self._ready = True
        return connection

    async def _run(self, operation: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one transaction: the one place sqlite3's errors become ``StoreError``."""
        try:
            return await self._run_in_thread(work)
        except StoreError:
            raise
        except (sqlite3.Error, OSError) as exc:
            error = driver_failure(
                exc,
                backend="SqliteStore",
                operation=operation,
                host=None,
                # "database is locked": another process held the lock for the whole timeout.
                timed_out="locked" in str(exc),
                maybe_sent=False,  # the transaction was rolled back (or never began)
            )
            raise error from error.__cause__

    async def _run_in_thread(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            connection = self._connection()
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = work(connection)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return result

        return await anyio.to_thread.run_sync(run)

    async def claim(self, key: str, *, lease: float) -> Claimed:
        """Own ``key`` for ``lease`` seconds if nobody handled or holds it."""
        now = self._clock()

        def work(db: sqlite3.Connection) -> Claimed:
            row = db.execute(
                "SELECT state, expires FROM cmpay_events WHERE key = ?", (key,)
            ).fetchone()
            if row is not None:
                if row[0] == ClaimState.DONE.value:
                    return Claimed(ClaimState.DONE)
                if row[1] > now:
                    return Claimed(ClaimState.IN_PROGRESS)
            token = new_token()
            db.execute(
                "INSERT OR REPLACE INTO cmpay_events (key, state, token, expires) "
                "VALUES (?, ?, ?, ?)",
                (key, ClaimState.IN_PROGRESS.value, token, now + lease),
            )
            return Claimed(ClaimState.NEW, token)

        return await self._run("claim", work)

    async def complete(self, key: str, token: str) -> bool:
        """Mark ``key`` handled; False if ``token`` no longer owns it."""

        def work(db: sqlite3.Connection) -> bool:
            done = db.execute(
                "UPDATE cmpay_events SET state = ?, expires = ? "
                "WHERE key = ? AND token = ? AND state = ?",
                (ClaimState.DONE.value, math.inf, key, token, ClaimState.IN_PROGRESS.value),
            )
            return done.rowcount == 1

        return await self._run("complete", work)

    async def release(self, key: str, token: str) -> None:
        """Give ``key`` up so that a retry can claim it at once."""

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "DELETE FROM cmpay_events WHERE key = ? AND token = ? AND state = ?",
                (key, token, ClaimState.IN_PROGRESS.value),
            )

        await self._run("release", work)
