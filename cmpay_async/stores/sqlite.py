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

from ._contract import Claimed, ClaimState, driver_failure, new_token

__all__ = ["SqliteStore"]

_PENDING = object()
#: Seconds a completion waits for others of this process to join its synced transaction.
_GATHER = 0.005


def _mark_done(db: sqlite3.Connection, batch: list[list[object]]) -> list[bool]:
    """Complete every ``[key, token, _]`` of ``batch`` in ``db``'s open transaction."""
    done = []
    for key, token, _ in batch:
        row = db.execute(
            "UPDATE cmpay_events SET state = ?, expires = ? "
            "WHERE key = ? AND token = ? AND state = ?",
            (ClaimState.DONE.value, math.inf, key, token, ClaimState.IN_PROGRESS.value),
        )
        done.append(row.rowcount == 1)
    return done


def _outcome(result: object) -> bool:
    if isinstance(result, BaseException):
        raise result
    return bool(result)


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
    """A store in an SQLite file (made with its table on first use).

    ``path`` must name a file: ``":memory:"`` and ``""`` are refused, as each connection (one
    per thread) would open a database of its own. The file is put in WAL mode; a file SQLite
    will not put in WAL mode is a ``StoreError``.
    """

    _commits: sqlite3.Connection | None

    def __init__(
        self, path: str | Path, *, clock: Callable[[], float] = time.time, timeout: float = 30.0
    ) -> None:
        if not 0 < timeout <= 30:
            raise ConfigurationError(f"timeout must be above 0 and at most 30 s, not {timeout!r}")
        self.path = str(path)
        if self.path in ("", ":memory:"):
            # Each connection (one per thread) would open a database of its own.
            raise ConfigurationError(
                f"path must name a file, not {self.path!r}: an in-memory or temporary "
                "database is private to each connection, and the store opens one per thread"
            )
        #: Seconds a call waits for a lock another process holds before it fails.
        self.timeout = timeout
        self._clock = clock
        self._ready = False
        self._setup = threading.Lock()
        self._local = threading.local()
        self._connections: list[tuple[int, sqlite3.Connection]] = []
        self._new_batch()
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
        self._commits = None

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            if not self._ready:
                # One thread of this store object sets the file up.
                with self._setup:
                    if not self._ready:
                        self._use_wal(connection)
                        connection.execute(_SCHEMA)
                        self._ready = True
        except BaseException:
            connection.close()  # never handed out: nobody else would close it
            raise
        return connection

    def _use_wal(self, connection: sqlite3.Connection) -> None:
        """Put the file in WAL mode unless it is: the switch takes no busy wait (another
        connection writing makes it fail at once with "database is locked", as when two
        store objects or processes open a new file together), so it is tried again, within
        ``timeout``, until this or another connection has made it."""
        deadline = time.monotonic() + self.timeout
        while connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
                continue
            if mode != "wal":  # refused without an error: asking again would never end
                raise sqlite3.OperationalError(f"the database cannot use WAL (journal mode {mode})")

    async def _run(self, operation: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one unsynced transaction (a claim or a release; see _transaction)."""
        return await self._call(operation, lambda: self._transaction(work))

    async def _call(self, operation: str, call: Callable[[], T]) -> T:
        """``call`` in a worker thread: the one place sqlite3's errors become ``StoreError``."""
        try:
            return await anyio.to_thread.run_sync(call)
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

    def _transaction(
        self, work: Callable[[sqlite3.Connection], T], committer: sqlite3.Connection | None = None
    ) -> T:
        """``work`` in one ``BEGIN IMMEDIATE`` transaction: on the ``committer`` (synced to
        disk), or else on this thread's own connection, unsynced.

        Only a completion must survive a crash of the machine. A claim or a release lost in
        one behaves as a lease that ran out: the next delivery claims the key again, exactly
        what would happen had the claim been synced and its worker died. In WAL mode a synced
        commit also syncs every earlier one, so a completion never outlives its claim.
        """
        if committer is not None:
            connection = committer
        else:
            connection = self._connection()
            # The committer is FULL for good (set when it is opened); this thread's own
            # connection is told OFF once.
            if getattr(self._local, "unsynced", None) is not connection:
                connection.execute("PRAGMA synchronous=OFF")
                self._local.unsynced = connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = work(connection)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return result

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

        # Counted from the start: a claim waiting for the lock is a completion to come.
        self._holding(+1)
        try:
            claimed = await self._run("claim", work)
        except BaseException:
            self._holding(-1)
            raise
        if claimed.state is not ClaimState.NEW:
            self._holding(-1)
        return claimed

    async def complete(self, key: str, token: str) -> bool:
        """Mark ``key`` handled; False if ``token`` no longer owns it.

        Completions that arrive together are written in one synced transaction (group
        commit): a hundred notifications at once cost a few disk syncs, not a hundred.
        """
        return await self._call("complete", lambda: self._group_complete(key, token))

    def _new_batch(self) -> None:
        # Group commit of completions: the batch being gathered, and whether one is written.
        # Per process: a child forked while its parent wrote a batch must not wait for it.
        self._batch_pid = os.getpid()
        self._batch: list[list[object]] = []
        self._batch_lock = threading.Lock()
        self._batch_done = threading.Condition(self._batch_lock)
        self._batch_grew = threading.Condition(self._batch_lock)
        self._writing = False
        self._commits = None
        #: Claims of this process under way or won, not completed or released yet: the
        #: completions likely to come soon.
        self._held = 0

    def _holding(self, change: int) -> None:
        if self._batch_pid != os.getpid():
            self._new_batch()
        with self._batch_lock:
            self._held = max(0, self._held + change)

    def _committer(self) -> sqlite3.Connection:
        """The one connection that writes batches of completions (one leader at a time): a
        connection's first synced commit also syncs the directory, so one pays it once."""
        if self._commits is None:
            self._commits = self._connect()
            self._commits.execute("PRAGMA synchronous=FULL")
            with self._setup:
                self._connections.append((os.getpid(), self._commits))
        return self._commits

    def _group_complete(self, key: str, token: str) -> bool:
        """In a worker thread: join the next batch of completions, or write it (the leader).

        The leader takes the batch only once it holds the write lock, so the completions that
        arrive while it waits for the lock (claims hold it too) are written with it.
        """
        if self._batch_pid != os.getpid():
            self._new_batch()
        mine: list[object] = [key, token, _PENDING]
        with self._batch_lock:
            self._batch.append(mine)
            self._batch_grew.notify()
            while mine[2] is _PENDING and self._writing:
                self._batch_done.wait()
            if mine[2] is not _PENDING:
                return _outcome(mine[2])
            self._writing = True
            # Other claims of this process are being handled: give their completions a
            # moment to join this batch (PostgreSQL's commit_delay), as a sync costs more.
            deadline = time.monotonic() + _GATHER
            while len(self._batch) < self._held and (left := deadline - time.monotonic()) > 0:
                self._batch_grew.wait(left)
        taken: list[list[object]] = []

        def work(db: sqlite3.Connection) -> list[bool]:
            with self._batch_lock:
                taken[:], self._batch = self._batch, []
            return _mark_done(db, taken)

        try:
            outcome: list[bool] | BaseException = self._transaction(work, self._committer())
        except BaseException as exc:
            outcome = exc
        with self._batch_lock:
            for i, item in enumerate(taken):
                item[2] = outcome if isinstance(outcome, BaseException) else outcome[i]
            self._held = max(0, self._held - len(taken))
            if mine[2] is _PENDING:  # the lock was never had: this call fails, others wait on
                self._batch.remove(mine)
                mine[2] = outcome
            self._writing = False
            self._batch_done.notify_all()
        return _outcome(mine[2])

    async def release(self, key: str, token: str) -> None:
        """Give ``key`` up so that a retry can claim it at once."""

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "DELETE FROM cmpay_events WHERE key = ? AND token = ? AND state = ?",
                (key, token, ClaimState.IN_PROGRESS.value),
            )

        await self._run("release", work)
        self._holding(-1)
