"""SqliteStore's file: what it refuses to open, how it is put in WAL mode (a lock is waited
for, anything else is raised at once, a database that cannot use WAL is refused instead of
asked forever), and that a closed store opens its connections again on next use."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from cmpay_async import ConfigurationError, StoreError
from cmpay_async.stores import ClaimState
from cmpay_async.stores.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("path", [":memory:", ""])
def test_an_in_memory_or_temporary_database_is_refused(path: str) -> None:
    """Each connection to such a database is a database of its own, and the store opens one
    per thread: claims would not see each other. Refused when the store is made."""
    with pytest.raises(ConfigurationError) as caught:
        SqliteStore(path)

    assert (
        f"path must name a file, not {path!r}: an in-memory or temporary database is private "
        "to each connection, and the store opens one per thread"
    ) == str(caught.value)


class _Switch:
    """sqlite3.connect, with the WAL switch (``PRAGMA journal_mode=WAL``) answered by script:
    an exception to raise, or a journal mode to report, one entry per attempt."""

    def __init__(self, script: list[BaseException | str]) -> None:
        self.script = script
        self.attempts = 0
        switch = self

        class Connection(sqlite3.Connection):
            def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
                if sql == "PRAGMA journal_mode=WAL":
                    switch.attempts += 1
                if sql == "PRAGMA journal_mode=WAL" and switch.script:
                    step = switch.script.pop(0)
                    if isinstance(step, BaseException):
                        raise step
                    return super().execute(f"SELECT '{step}'")
                return super().execute(sql, *args)

        self.connection_class = Connection


@pytest.fixture
def switch(monkeypatch: pytest.MonkeyPatch) -> _Switch:
    """Every sqlite3 connection opened during the test answers the WAL switch by script."""
    scripted = _Switch([])
    original = sqlite3.connect
    monkeypatch.setattr(
        sqlite3,
        "connect",
        lambda *a, **kw: original(*a, **kw, factory=scripted.connection_class),
    )
    return scripted


async def test_a_locked_file_is_switched_to_wal_once_the_lock_is_gone(
    switch: _Switch, tmp_path: Path
) -> None:
    """Another connection writing makes the switch fail with "locked" at once (no busy
    wait): it is tried again until it succeeds."""
    locked = sqlite3.OperationalError("database is locked")
    switch.script += [locked, locked]
    store = SqliteStore(tmp_path / "events.db", timeout=5)

    claimed = await store.claim("K1", lease=60)

    assert (ClaimState.NEW, 3) == (claimed.state, switch.attempts)
    store.close()


async def test_any_other_failure_of_the_switch_is_raised_at_once(
    switch: _Switch, tmp_path: Path
) -> None:
    """Only a lock is waited for: any other error ends the first call, after one attempt."""
    switch.script += [sqlite3.OperationalError("disk I/O error")] * 1000
    store = SqliteStore(tmp_path / "events.db", timeout=5)

    with pytest.raises(StoreError) as caught:
        await store.claim("K1", lease=60)

    assert 1 == switch.attempts
    assert "disk I/O error" in str(caught.value)
    store.close()


async def test_a_database_that_cannot_use_wal_is_refused_not_asked_forever(
    switch: _Switch, tmp_path: Path
) -> None:
    """SQLite answers the switch with another journal mode, without an error, where WAL is
    impossible: the store says so instead of asking again and again."""
    switch.script += ["memory"] * 1000
    store = SqliteStore(tmp_path / "events.db", timeout=5)

    with pytest.raises(StoreError) as caught:
        await store.claim("K1", lease=60)

    assert 1 == switch.attempts
    assert "the database cannot use WAL (journal mode memory)" in str(caught.value)
    store.close()


async def test_a_closed_store_opens_its_connections_again_on_next_use(tmp_path: Path) -> None:
    """close() drops every connection, the committer included; the next claim and completion
    open new ones and see what was written before."""
    store = SqliteStore(tmp_path / "events.db")
    first = await store.claim("K1", lease=60)
    assert first.token is not None
    assert await store.complete("K1", first.token)

    store.close()
    again = await store.claim("K1", lease=60)
    second = await store.claim("K2", lease=60)
    assert second.token is not None

    assert ClaimState.DONE == again.state
    assert await store.complete("K2", second.token)
    store.close()


async def test_a_locked_switch_is_tried_again_every_five_milliseconds(
    switch: _Switch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between tries of the WAL switch on a locked file the store pauses 5 ms (the switch
    takes no busy wait of SQLite's own)."""
    from cmpay_async.stores import sqlite as sqlite_module

    pauses: list[float] = []
    monkeypatch.setattr(sqlite_module.time, "sleep", pauses.append)
    locked = sqlite3.OperationalError("database is locked")
    switch.script += [locked, locked]
    store = SqliteStore(tmp_path / "events.db", timeout=5)

    await store.claim("K1", lease=60)

    assert [0.005, 0.005] == pauses
    store.close()
