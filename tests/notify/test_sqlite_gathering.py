"""SqliteStore's group commit waits for the completions it can expect, and for no others.

A completion that leads a batch gives the other claims this process holds (won, not yet
completed or released) a moment to join its synced transaction. Here that moment is made a
minute long, so that waiting or not is a fact, not a timing: a batch that should wait does
(the two completions share one transaction), and one that should not returns long before
the minute (``fail_after(GUARD)`` turns such a wait into a failure).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import anyio
import pytest

from cmpay_async import StoreError
from cmpay_async.stores import ClaimState
from cmpay_async.stores import sqlite as sqlite_module
from cmpay_async.stores.sqlite import SqliteStore

#: Seconds after which a completion that should not have waited is a failure; the gathering
#: moment below is far longer.
GUARD = 20


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The keys of each synced transaction of completions, in order; gathering lasts 60 s."""
    written: list[list[str]] = []
    mark_done = sqlite_module._mark_done

    def recording(db: sqlite3.Connection, batch: list[list[object]]) -> list[bool]:
        written.append(sorted(str(item[0]) for item in batch))
        return mark_done(db, batch)

    monkeypatch.setattr(sqlite_module, "_mark_done", recording)
    monkeypatch.setattr(sqlite_module, "_GATHER", 60.0)
    return written


def _claim(store: SqliteStore, key: str) -> str:
    claimed = anyio.run(lambda: store.claim(key, lease=60))
    assert ClaimState.NEW is claimed.state
    assert claimed.token is not None
    return claimed.token


def _completing(
    store: SqliteStore, key: str, token: str, answers: dict[str, bool]
) -> threading.Thread:
    """complete() in a thread of its own (its wait is a sync one, in the store's worker)."""

    def run() -> None:
        answers[key] = anyio.run(store.complete, key, token)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _finished(*threads: threading.Thread) -> bool:
    for thread in threads:
        thread.join(GUARD)
    return not any(thread.is_alive() for thread in threads)


def _other_claims(store: SqliteStore, path: Path) -> None:
    """A claim refused (its key is held), one won and released, one that fails (the write
    lock held elsewhere past the store's timeout): none of them is a completion to come."""
    assert ClaimState.IN_PROGRESS is anyio.run(lambda: store.claim("A", lease=60)).state
    anyio.run(store.release, "R", _claim(store, "R"))
    with sqlite3.connect(path, isolation_level=None) as other:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError):
            anyio.run(lambda: store.claim("F", lease=60))
        other.execute("ROLLBACK")
    other.close()


def test_a_completion_waits_for_the_other_held_claim_to_join_it(
    tmp_path: Path, batches: list[list[str]]
) -> None:
    """Two claims held (and others refused, released or failed): the first completion waits
    for the second, and both are written in one transaction."""
    path = tmp_path / "e.db"
    store = SqliteStore(path, timeout=0.05)
    first, second = _claim(store, "A"), _claim(store, "B")
    _other_claims(store, path)
    answers: dict[str, bool] = {}
    leader = _completing(store, "A", first, answers)
    for _ in range(100_000):  # polled, not timed: until A leads a batch, or has returned
        with store._batch_lock:
            if (store._writing and store._batch) or not leader.is_alive():
                break
        threading.Event().wait(0.0005)
    follower = _completing(store, "B", second, answers)

    assert _finished(leader, follower)
    assert {"A": True, "B": True} == answers
    assert [["A", "B"]] == batches
    store.close()


def test_claims_released_refused_or_failed_are_not_waited_for(
    tmp_path: Path, batches: list[list[str]]
) -> None:
    """Only claims won and not yet completed or released are waited for: with the others
    refused, released or failed, a lone completion is written at once."""
    path = tmp_path / "e.db"
    store = SqliteStore(path, timeout=0.05)
    token = _claim(store, "A")
    _other_claims(store, path)
    answers: dict[str, bool] = {}

    assert _finished(_completing(store, "A", token, answers))
    assert {"A": True} == answers
    assert [["A"]] == batches
    store.close()


def test_completed_claims_are_not_waited_for(tmp_path: Path, batches: list[list[str]]) -> None:
    """A claim completed is no longer a completion to come: the next claim's completion is
    written at once, alone."""
    store = SqliteStore(tmp_path / "e.db")
    answers: dict[str, bool] = {}
    assert _finished(_completing(store, "A", _claim(store, "A"), answers))

    assert _finished(_completing(store, "B", _claim(store, "B"), answers))
    assert {"A": True, "B": True} == answers
    assert [["A"], ["B"]] == batches
    store.close()
