"""The store contract, one suite for every store: MemoryStore, SqliteStore, RedisStore and
PostgresStore (the last two against the real servers on 127.0.0.1, each test under a key
prefix or table of its own; a server that is absent skips with the reason, and fails under
CMPAY_REQUIRE_SERVICES=1 as in CI).

The promise (cmpay_async/stores/__init__.py, docs/guarantees.md): ``claim`` answers NEW with a
token (the caller owns the key until its lease runs out), IN_PROGRESS (someone else owns it)
or DONE (handled). A lease that ran out can be claimed again, with a new token. Only the
owner's token completes or releases; a late owner whose lease was taken over is refused and
disturbs nothing. Release after completion changes nothing. A new store object on the same
backend (a restart, another process) sees the same state, a forked child too; MemoryStore is
one process's memory, so a new object or a forked child's changes are its own.

Leases run out on an injected clock where the store takes one (MemoryStore, SqliteStore);
Redis and PostgreSQL keep time themselves, so there a short real lease is waited out. Only
states are asserted, never timings.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
import redis

from cmpay_async.stores import ClaimState, MemoryStore
from cmpay_async.stores.postgres import PostgresStore
from cmpay_async.stores.redis import RedisStore
from cmpay_async.stores.sqlite import SqliteStore
from tests.conftest import BACKENDS
from tests.support.forking import in_child

pytestmark = pytest.mark.anyio

#: Seconds of a lease that is meant to run out during a test on a server's own clock.
REAL_LEASE = 0.3


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Backend:
    """One store kind: makes store objects on one shared backend, and ends leases."""

    def __init__(
        self,
        kind: str,
        make: Callable[[], Any],
        *,
        clock: Clock | None,
        shared: bool,
    ) -> None:
        self.kind = kind
        self._make = make
        self.clock = clock
        #: Whether another store object (another process) on the backend sees the same keys.
        self.shared = shared
        self.made: list[Any] = []
        self.lease = 10.0 if clock is not None else REAL_LEASE

    def store(self) -> Any:
        """A new store object on this backend."""
        store = self._make()
        self.made.append(store)
        return store

    async def outlive_lease(self) -> None:
        """Let every lease taken with ``self.lease`` run out."""
        if self.clock is not None:
            self.clock.now += self.lease
        else:
            # The server's own clock ends the lease; waited out, never measured.
            await anyio.sleep(self.lease + 0.3)

    def outlive_lease_sync(self) -> None:
        """``outlive_lease`` outside an event loop."""
        if self.clock is not None:
            self.clock.now += self.lease
        else:
            time.sleep(self.lease + 0.3)

    def close(self) -> None:
        """Close every store object made."""
        for store in self.made:
            if hasattr(store, "close"):
                store.close()


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each store kind on a fresh backend of its own."""
    kind = request.param
    if kind == "memory":
        clock = Clock()
        found = Backend(kind, lambda: MemoryStore(clock=clock), clock=clock, shared=False)
        yield found
    elif kind == "sqlite":
        clock = Clock()
        path = tmp_path / "events.db"
        found = Backend(kind, lambda: SqliteStore(path, clock=clock), clock=clock, shared=True)
        yield found
        found.close()
    elif kind == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = f"cmpay-contract:{uuid.uuid4().hex[:10]}:"
        found = Backend(kind, lambda: RedisStore(url, prefix=prefix), clock=None, shared=True)
        yield found
        found.close()
        with redis.Redis.from_url(url) as client:
            for key in client.scan_iter(f"{prefix}*"):
                client.delete(key)
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        table = f"cmpay_contract_{uuid.uuid4().hex[:10]}"
        found = Backend(kind, lambda: PostgresStore(dsn, table=table), clock=None, shared=True)
        yield found
        found.close()
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute(f"DROP TABLE IF EXISTS {table}")


# -- NEW, IN_PROGRESS, DONE -----------------------------------------------------------------


async def test_a_first_claim_is_new_and_owns_the_key_with_a_token(backend: Backend) -> None:
    """NEW with a token; while the lease runs, everyone else gets IN_PROGRESS and no token."""
    store = backend.store()

    first = await store.claim("K", lease=30)
    second = await store.claim("K", lease=30)

    assert ClaimState.NEW is first.state
    assert first.token
    assert (ClaimState.IN_PROGRESS, None) == (second.state, second.token)


async def test_keys_are_independent(backend: Backend) -> None:
    """Holding or completing one key says nothing about another."""
    store = backend.store()
    held = await store.claim("A", lease=30)
    assert held.token is not None
    await store.complete("A", held.token)

    assert ClaimState.NEW is (await store.claim("B", lease=30)).state


async def test_a_completed_key_is_done_for_every_later_claim(backend: Backend) -> None:
    """The owner's complete() says True once; every later claim, even past the lease, is DONE."""
    store = backend.store()
    claimed = await store.claim("K", lease=backend.lease)
    assert claimed.token is not None

    assert await store.complete("K", claimed.token) is True
    assert ClaimState.DONE is (await store.claim("K", lease=30)).state
    await backend.outlive_lease()
    later = await store.claim("K", lease=30)
    assert (ClaimState.DONE, None) == (later.state, later.token)
    assert await store.complete("K", claimed.token) is False


# -- leases ----------------------------------------------------------------------------------


async def test_a_lease_that_ran_out_is_claimed_again_with_a_new_token(backend: Backend) -> None:
    """The worker died mid-handler: after its lease another claim owns the key, newly."""
    store = backend.store()
    dead = await store.claim("K", lease=backend.lease)

    await backend.outlive_lease()
    again = await store.claim("K", lease=30)

    assert ClaimState.NEW is again.state
    assert again.token is not None
    assert again.token != dead.token
    assert ClaimState.IN_PROGRESS is (await store.claim("K", lease=30)).state


async def test_a_late_owner_cannot_complete_and_the_new_owner_can(backend: Backend) -> None:
    """After a reclaim the first owner's complete() is refused and leaves the key held."""
    store = backend.store()
    late = await store.claim("K", lease=backend.lease)
    assert late.token is not None
    await backend.outlive_lease()
    new = await store.claim("K", lease=30)
    assert new.token is not None

    assert await store.complete("K", late.token) is False
    assert ClaimState.IN_PROGRESS is (await store.claim("K", lease=30)).state
    assert await store.complete("K", new.token) is True
    assert ClaimState.DONE is (await store.claim("K", lease=30)).state


async def test_a_late_owners_release_does_not_free_the_new_owners_key(backend: Backend) -> None:
    """The first owner's handler failed after its lease ran out: its release changes nothing."""
    store = backend.store()
    late = await store.claim("K", lease=backend.lease)
    assert late.token is not None
    await backend.outlive_lease()
    new = await store.claim("K", lease=30)
    assert new.token is not None

    await store.release("K", late.token)

    assert ClaimState.IN_PROGRESS is (await store.claim("K", lease=30)).state
    assert await store.complete("K", new.token) is True


# -- release ---------------------------------------------------------------------------------


async def test_release_frees_the_key_at_once(backend: Backend) -> None:
    """The handler failed: the key is NEW again for the next delivery, without a lease's wait."""
    store = backend.store()
    claimed = await store.claim("K", lease=3600)
    assert claimed.token is not None

    await store.release("K", claimed.token)

    again = await store.claim("K", lease=30)
    assert ClaimState.NEW is again.state
    assert await store.complete("K", claimed.token) is False  # the released token is spent


async def test_a_strangers_token_neither_completes_nor_releases(backend: Backend) -> None:
    """A token that never owned the key changes nothing."""
    store = backend.store()
    claimed = await store.claim("K", lease=3600)
    assert claimed.token is not None

    assert await store.complete("K", "0" * 32) is False
    await store.release("K", "0" * 32)

    assert ClaimState.IN_PROGRESS is (await store.claim("K", lease=30)).state
    assert await store.complete("K", claimed.token) is True


async def test_release_after_completion_changes_nothing(backend: Backend) -> None:
    """A handled key stays handled, whatever its owner's token asks for afterwards."""
    store = backend.store()
    claimed = await store.claim("K", lease=30)
    assert claimed.token is not None
    assert await store.complete("K", claimed.token) is True

    await store.release("K", claimed.token)

    assert ClaimState.DONE is (await store.claim("K", lease=30)).state


async def test_complete_or_release_of_a_key_never_claimed(backend: Backend) -> None:
    """Nothing to complete: False, and the key is still NEW to the next claim."""
    store = backend.store()

    assert await store.complete("NEVER", "0" * 32) is False
    await store.release("NEVER", "0" * 32)

    assert ClaimState.NEW is (await store.claim("NEVER", lease=30)).state


# -- restart and other processes -------------------------------------------------------------


async def test_a_new_store_object_sees_the_same_state(backend: Backend) -> None:
    """A restart: a new object on the same backend sees DONE and held keys (MemoryStore: its
    memory is its own, so a new one starts empty)."""
    first = backend.store()
    done = await first.claim("DONE", lease=30)
    assert done.token is not None
    await first.complete("DONE", done.token)
    held = await first.claim("HELD", lease=3600)
    assert held.token is not None

    restarted = backend.store()
    seen = (
        (await restarted.claim("DONE", lease=30)).state,
        (await restarted.claim("HELD", lease=30)).state,
    )

    if backend.shared:
        assert (ClaimState.DONE, ClaimState.IN_PROGRESS) == seen
        assert await restarted.complete("HELD", held.token) is True  # the token is the key's
    else:
        assert (ClaimState.NEW, ClaimState.NEW) == seen


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("loop", BACKENDS)
def test_a_forked_child_shares_the_state_and_the_parent_keeps_working(
    backend: Backend, loop: str
) -> None:
    """The store used before fork works in the child: it sees the parent's DONE and held keys,
    and (shared backends) the parent sees what the child completed; the child's close() leaves
    the parent's connections alone. A MemoryStore child has a copy: its changes stay its own."""
    store = backend.store()

    async def before() -> tuple[str, str]:
        done = await store.claim("DONE", lease=30)
        assert done.token is not None
        await store.complete("DONE", done.token)
        held = await store.claim("HELD", lease=3600)
        assert held.token is not None
        return done.token, held.token

    _, held_token = anyio.run(before, backend=loop)

    def child() -> None:
        async def work() -> None:
            assert ClaimState.DONE is (await store.claim("DONE", lease=30)).state
            assert ClaimState.IN_PROGRESS is (await store.claim("HELD", lease=30)).state
            mine = await store.claim("CHILD", lease=30)
            assert ClaimState.NEW is mine.state
            assert mine.token is not None
            assert await store.complete("CHILD", mine.token) is True

        anyio.run(work, backend=loop)
        if hasattr(store, "close"):
            store.close()

    assert 0 == in_child(child)

    async def after() -> tuple[ClaimState, bool, ClaimState]:
        child_key = (await store.claim("CHILD", lease=30)).state
        completed = await store.complete("HELD", held_token)
        fresh = (await store.claim("FRESH", lease=30)).state
        return child_key, completed, fresh

    child_key, completed, fresh = anyio.run(after, backend=loop)
    assert (ClaimState.DONE if backend.shared else ClaimState.NEW) is child_key
    assert completed is True
    assert ClaimState.NEW is fresh


async def test_two_store_objects_race_for_one_key_and_one_wins(backend: Backend) -> None:
    """Twenty claims at once through two objects (two workers): exactly one NEW."""
    stores = [backend.store(), backend.store()] if backend.shared else [backend.store()]
    answers: list[ClaimState] = []

    async def claim(n: int) -> None:
        answers.append((await stores[n % len(stores)].claim("RACE", lease=30)).state)

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(claim, n)

    assert 1 == answers.count(ClaimState.NEW)
    assert 19 == answers.count(ClaimState.IN_PROGRESS)
