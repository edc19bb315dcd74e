"""SqliteInbox: the inbox in an SQLite file, for the processes of one machine.

It is a ``SqliteStore`` underneath (per-thread connections, WAL, ``BEGIN IMMEDIATE``, every
failure a ``StoreError``), with a table of its own, ``cmpay_inbox``. Taking an event is a
read and a write in one immediate transaction, so two drainers never take the same one.
"""

from __future__ import annotations

import sqlite3

from cmpay_async.inbox import Pending
from cmpay_async.stores._contract import new_token
from cmpay_async.stores.sqlite import SqliteStore

__all__ = ["SqliteInbox"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cmpay_inbox (
    key TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    data TEXT NOT NULL,
    state TEXT NOT NULL,
    token TEXT,
    due REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    accepted REAL NOT NULL,
    done REAL
);
CREATE INDEX IF NOT EXISTS cmpay_inbox_due ON cmpay_inbox (state, due);
"""


class SqliteInbox(SqliteStore):
    """Accepted events in an SQLite file (the table is made on first use)."""

    _inbox_ready = False

    def _connect(self) -> sqlite3.Connection:
        connection = super()._connect()
        if not self._inbox_ready:
            with self._setup:
                if not self._inbox_ready:
                    connection.executescript(_SCHEMA)
                    self._inbox_ready = True
        return connection

    async def add(self, key: str, source: str, data: str) -> bool:
        """Record a pending event; False when its key is recorded already."""
        now = self._clock()

        def work(db: sqlite3.Connection) -> bool:
            added = db.execute(
                "INSERT OR IGNORE INTO cmpay_inbox (key, source, data, state, due, accepted) "
                "VALUES (?, ?, ?, 'pending', ?, ?)",
                (key, source, data, now, now),
            )
            return added.rowcount == 1

        return await self._run("record", work)

    async def take(self, *, lease: float) -> Pending | None:
        """Own the next due pending event for ``lease`` seconds, or None."""
        now = self._clock()
        token = new_token()

        def work(db: sqlite3.Connection) -> Pending | None:
            row = db.execute(
                "SELECT key, source, data, attempts, last_error FROM cmpay_inbox "
                "WHERE state = 'pending' AND due <= ? ORDER BY due LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE cmpay_inbox SET token = ?, due = ?, attempts = attempts + 1 WHERE key = ?",
                (token, now + lease, row[0]),
            )
            return Pending(
                key=row[0],
                source=row[1],
                data=row[2],
                attempts=row[3] + 1,
                token=token,
                last_error=row[4],
            )

        return await self._run("take", work)

    async def finish(self, key: str, token: str) -> bool:
        """Mark a taken event done; False if ``token`` no longer holds it."""
        now = self._clock()

        def work(db: sqlite3.Connection) -> bool:
            done = db.execute(
                "UPDATE cmpay_inbox SET state = 'done', done = ?, token = NULL "
                "WHERE key = ? AND token = ? AND state = 'pending'",
                (now, key, token),
            )
            return done.rowcount == 1

        return await self._run("finish", work)

    async def retry(self, key: str, token: str, *, error: str, delay: float) -> None:
        """Give a taken event back, due again after ``delay`` seconds, keeping ``error``."""
        now = self._clock()

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE cmpay_inbox SET due = ?, last_error = ?, token = NULL "
                "WHERE key = ? AND token = ? AND state = 'pending'",
                (now + delay, error, key, token),
            )

        await self._run("retry", work)

    async def failures(self) -> list[Pending]:
        """Pending events whose handler has failed at least once."""

        def work(db: sqlite3.Connection) -> list[Pending]:
            rows = db.execute(
                "SELECT key, source, data, attempts, last_error FROM cmpay_inbox "
                "WHERE state = 'pending' AND attempts > 0 ORDER BY accepted"
            ).fetchall()
            return [
                Pending(key=r[0], source=r[1], data=r[2], attempts=r[3], last_error=r[4])
                for r in rows
            ]

        return await self._run("list", work)

    async def pending(self) -> int:
        """How many accepted events are not yet handled."""

        def work(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT count(*) FROM cmpay_inbox WHERE state = 'pending'").fetchone()
            return int(row[0])

        return await self._run("count", work)
