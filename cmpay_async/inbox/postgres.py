"""PostgresInbox: the inbox in a PostgreSQL table, for shops on several machines.

It is a ``PostgresStore`` underneath (per-thread connections, connect and statement
timeouts, dropped connections replaced, every failure a ``StoreError``), with a table of its
own. Taking an event is one ``UPDATE ... WHERE key = (SELECT ... FOR UPDATE SKIP LOCKED)``,
so two drainers never take the same one; leases use the database's clock.
"""

from __future__ import annotations

import contextlib
from typing import Any

from cmpay_async.inbox import Pending
from cmpay_async.stores._contract import new_token
from cmpay_async.stores.postgres import PostgresStore

__all__ = ["PostgresInbox"]

_COLUMNS = "key, source, data, attempts, last_error"


class PostgresInbox(PostgresStore):
    """Accepted events in a PostgreSQL table (made on first use, or by ``migrate()``)."""

    def __init__(self, dsn: str, *, table: str = "cmpay_inbox", timeout: float = 5.0) -> None:
        super().__init__(dsn, table=table, timeout=timeout)

    def _create(self, connection: Any) -> None:
        errors = self._psycopg.errors
        with self._lock:
            if self._migrated:
                return
            with contextlib.suppress(errors.UniqueViolation, errors.DuplicateTable):
                connection.execute(
                    f"CREATE TABLE IF NOT EXISTS {self.table} ("
                    "key text PRIMARY KEY, source text NOT NULL, data text NOT NULL, "
                    "state text NOT NULL, token text, due timestamptz NOT NULL, "
                    "attempts integer NOT NULL DEFAULT 0, last_error text, "
                    "accepted timestamptz NOT NULL, done timestamptz)"
                )
            with contextlib.suppress(errors.UniqueViolation, errors.DuplicateTable):
                connection.execute(
                    f"CREATE INDEX IF NOT EXISTS {self.table}_due ON {self.table} (state, due)"
                )
            self._migrated = True

    async def add(self, key: str, source: str, data: str) -> bool:
        """Record a pending event; False when its key is recorded already."""

        def work(db: Any) -> bool:
            added = db.execute(
                f"INSERT INTO {self.table} (key, source, data, state, due, accepted) "  # noqa: S608 - a checked name
                "VALUES (%s, %s, %s, 'pending', now(), now()) ON CONFLICT (key) DO NOTHING",
                (key, source, data),
            )
            return bool(added.rowcount == 1)

        return await self._run("record", work)

    async def take(self, *, lease: float) -> Pending | None:
        """Own the next due pending event for ``lease`` seconds, or None."""
        token = new_token()

        def work(db: Any) -> Pending | None:
            row = db.execute(
                f"UPDATE {self.table} SET token = %s, "  # noqa: S608 - a checked name
                "due = now() + %s * interval '1 second', attempts = attempts + 1 "
                f"WHERE key = (SELECT key FROM {self.table} "
                "WHERE state = 'pending' AND due <= now() ORDER BY due LIMIT 1 "
                f"FOR UPDATE SKIP LOCKED) RETURNING {_COLUMNS}",
                (token, lease),
            ).fetchone()
            if row is None:
                return None
            return Pending(
                key=row[0],
                source=row[1],
                data=row[2],
                attempts=row[3],
                token=token,
                last_error=row[4],
            )

        return await self._run("take", work)

    async def finish(self, key: str, token: str) -> bool:
        """Mark a taken event done; False if ``token`` no longer holds it."""

        def work(db: Any) -> bool:
            done = db.execute(
                f"UPDATE {self.table} SET state = 'done', done = now(), token = NULL "  # noqa: S608
                "WHERE key = %s AND token = %s AND state = 'pending'",
                (key, token),
            )
            return bool(done.rowcount == 1)

        return await self._run("finish", work)

    async def retry(self, key: str, token: str, *, error: str, delay: float) -> None:
        """Give a taken event back, due again after ``delay`` seconds, keeping ``error``."""

        def work(db: Any) -> None:
            db.execute(
                f"UPDATE {self.table} SET due = now() + %s * interval '1 second', "  # noqa: S608
                "last_error = %s, token = NULL "
                "WHERE key = %s AND token = %s AND state = 'pending'",
                (delay, error, key, token),
            )

        await self._run("retry", work)

    async def failures(self) -> list[Pending]:
        """Pending events whose handler has failed at least once."""

        def work(db: Any) -> list[Pending]:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM {self.table} "  # noqa: S608 - a checked name
                "WHERE state = 'pending' AND attempts > 0 ORDER BY accepted"
            ).fetchall()
            return [
                Pending(key=r[0], source=r[1], data=r[2], attempts=r[3], last_error=r[4])
                for r in rows
            ]

        return await self._run("list", work)

    async def pending(self) -> int:
        """How many accepted events are not yet handled."""

        def work(db: Any) -> int:
            row = db.execute(
                f"SELECT count(*) FROM {self.table} WHERE state = 'pending'"  # noqa: S608
            ).fetchone()
            return int(row[0])

        return await self._run("count", work)
