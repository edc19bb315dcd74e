"""Each store's own promises, read from the database itself: rows, leases, TTLs, connections.

test_processor.py proves the stores behave alike; these check what each one writes and how
it manages its connections, with the database's own tools (sqlite3, psycopg, redis-py).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sqlite3
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import psycopg
import pytest
import redis

from cmpay_async import ConfigurationError, StoreError
from cmpay_async.stores import ClaimState, MemoryStore, new_token
from cmpay_async.stores.postgres import PostgresStore
from cmpay_async.stores.redis import RedisStore
from cmpay_async.stores.sqlite import SqliteStore, _close_own
from tests.support.forking import in_child

pytestmark = pytest.mark.anyio


class Clock:
    """A clock the test sets."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _rows(path: Path) -> list[tuple[Any, ...]]:
    # closing(): a sqlite3 connection's own `with` commits but does not close it.
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT key, state, token, expires FROM cmpay_events").fetchall()


# -- SQLite ---------------------------------------------------------------------------------------


async def test_sqlite_rows_hold_the_state_the_token_and_the_lease_end(tmp_path: Path) -> None:
    """A claim writes (in_progress, token, now + lease); complete makes it (done, inf)."""
    clock = Clock()
    store = SqliteStore(tmp_path / "e.db", clock=clock)

    claimed = await store.claim("K1", lease=10)
    assert [("K1", "in_progress", claimed.token, 1_000_010.0)] == _rows(tmp_path / "e.db")
    assert claimed.token is not None
    assert await store.complete("K1", claimed.token)
    assert [("K1", "done", claimed.token, math.inf)] == _rows(tmp_path / "e.db")
    store.close()


async def test_sqlite_lease_ends_exactly_at_its_end(tmp_path: Path) -> None:
    """Just before the lease ends the key is held; at its end another worker may take it."""
    clock = Clock()
    store = SqliteStore(tmp_path / "e.db", clock=clock)
    await store.claim("K2", lease=10)

    clock.now += 9.999
    assert ClaimState.IN_PROGRESS is (await store.claim("K2", lease=10)).state
    clock.now += 0.001
    assert ClaimState.NEW is (await store.claim("K2", lease=10)).state
    store.close()


async def test_sqlite_release_and_complete_need_the_owners_token(tmp_path: Path) -> None:
    """A stale token neither completes nor releases; the owner's releases the row entirely."""
    store = SqliteStore(tmp_path / "e.db", clock=Clock())
    claimed = await store.claim("K3", lease=10)
    assert claimed.token is not None

    assert not await store.complete("K3", "not-the-token")
    await store.release("K3", "not-the-token")
    assert 1 == len(_rows(tmp_path / "e.db"))
    await store.release("K3", claimed.token)
    assert [] == _rows(tmp_path / "e.db")
    store.close()


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    """The file is in WAL mode, so readers in other processes never block a claim."""
    store = SqliteStore(tmp_path / "e.db")
    await store.claim("K4", lease=10)

    with contextlib.closing(sqlite3.connect(tmp_path / "e.db")) as db:
        assert ("wal",) == db.execute("PRAGMA journal_mode").fetchone()
    store.close()


async def test_sqlite_work_that_fails_is_rolled_back(tmp_path: Path) -> None:
    """An error inside a transaction undoes its writes and leaves the connection usable."""
    store = SqliteStore(tmp_path / "e.db", clock=Clock())
    await store.claim("K5", lease=10)

    def failing(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM cmpay_events")
        raise ValueError("in the middle")

    with pytest.raises(ValueError, match="in the middle"):
        await store._run("claim", failing)

    assert 1 == len(_rows(tmp_path / "e.db"))
    assert ClaimState.IN_PROGRESS is (await store.claim("K5", lease=10)).state
    store.close()


def test_sqlite_keeps_one_connection_per_thread_until_closed(tmp_path: Path) -> None:
    """The same thread gets its connection back; another thread gets its own; close() closes
    them all and the next use opens a fresh one."""
    store = SqliteStore(tmp_path / "e.db")
    first = store._connection()
    assert first is store._connection()
    others: list[sqlite3.Connection] = []
    thread = threading.Thread(target=lambda: others.append(store._connection()))
    thread.start()
    thread.join()
    assert others[0] is not first

    store.close()

    for closed in (first, others[0]):
        with pytest.raises(sqlite3.ProgrammingError):
            closed.execute("SELECT 1")
    fresh = store._connection()
    assert fresh is not first
    assert (1,) == fresh.execute("SELECT 1").fetchone()
    store.close()


def test_sqlite_closes_only_this_process_connections(tmp_path: Path) -> None:
    """A forked child's list holds its parent's connections: those are left alone."""
    mine, parents = sqlite3.connect(tmp_path / "a.db"), sqlite3.connect(tmp_path / "b.db")
    import os

    held = [(os.getpid(), mine), (os.getpid() + 1, parents)]

    _close_own(held, threading.Lock())

    assert [] == held
    with pytest.raises(sqlite3.ProgrammingError):
        mine.execute("SELECT 1")
    assert (1,) == parents.execute("SELECT 1").fetchone()
    parents.close()


# -- PostgreSQL -----------------------------------------------------------------------------------


@pytest.fixture
def dsn(postgres_dsn: str) -> str:
    """The shared PostgreSQL (conftest's ``postgres_dsn``), under this module's short name."""
    return postgres_dsn


@pytest.fixture
def pg(dsn: str) -> Iterator[PostgresStore]:
    """A store on a table of its own, dropped afterwards."""
    store = PostgresStore(dsn, table=f"cmpay_detail_{uuid.uuid4().hex[:8]}")
    yield store
    store.close()
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f"DROP TABLE IF EXISTS {store.table}")


@pytest.mark.parametrize(
    "table",
    ["cmpay events", "x;DROP TABLE y", "1abc", "a" * 64, "", "naïve"],
    ids=["space", "injection", "digit-first", "64-chars", "empty", "non-ascii"],
)
def test_postgres_table_must_be_a_plain_name(dsn: str, table: str) -> None:
    """Anything but a plain SQL identifier (at most 63 characters) is refused, quoted short."""
    with pytest.raises(ConfigurationError) as caught:
        PostgresStore(dsn, table=table)

    assert f"table must be a plain SQL name, not {table[:70]!r}" == str(caught.value)


def test_postgres_long_bad_names_are_quoted_to_seventy_characters(dsn: str) -> None:
    """A long bad name is shown by its first 70 characters only."""
    with pytest.raises(ConfigurationError) as caught:
        PostgresStore(dsn, table="é" * 100)

    assert f"table must be a plain SQL name, not {'é' * 70!r}" == str(caught.value)


def test_postgres_accepts_plain_names_up_to_63_characters(dsn: str) -> None:
    """_a1 and a 63-character name are plain names; the store keeps the one given."""
    assert "_a1" == PostgresStore(dsn, table="_a1").table
    assert "b" * 63 == PostgresStore(dsn, table="b" * 63).table
    assert "cmpay_events" == PostgresStore(dsn).table


def test_postgres_timeout_is_five_seconds_up_to_thirty(dsn: str) -> None:
    """5 s by default; 30 s is the longest accepted, and the refusal says the range."""
    assert 5.0 == PostgresStore(dsn).timeout
    assert 30 == PostgresStore(dsn, timeout=30).timeout
    for timeout in (0, 30.001):
        with pytest.raises(ConfigurationError) as caught:
            PostgresStore(dsn, timeout=timeout)
        assert f"timeout must be above 0 and at most 30 s, not {timeout!r}" == str(caught.value)


def test_postgres_dsn_psycopg_refuses_is_refused_without_echoing_it() -> None:
    """A DSN psycopg cannot parse: one fixed sentence, never the DSN (it may hold a password)."""
    with pytest.raises(ConfigurationError) as caught:
        PostgresStore("host=127.0.0.1 password='s3cret-unterminated")
    assert "dsn is not a connection string psycopg accepts" == str(caught.value)


@pytest.mark.parametrize(
    ("timeout", "statement_ms", "connect_s"),
    [(1.5, "1500ms", "2"), (0.9, "900ms", "2"), (2.5, "2500ms", "3")],
)
async def test_postgres_sessions_carry_the_timeout(
    dsn: str, timeout: float, statement_ms: str, connect_s: str
) -> None:
    """Each session is opened with statement_timeout = the store's timeout, a connect
    timeout of the timeout rounded up (at least 2 s), and the DSN's own options."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["options"] = "-c search_path=public,pg_catalog"
    table = f"cmpay_detail_{uuid.uuid4().hex[:8]}"
    store = PostgresStore(psycopg.conninfo.make_conninfo(**params), table=table, timeout=timeout)

    def read(db: Any) -> tuple[str, str, str | None]:
        statement = db.execute("SHOW statement_timeout").fetchone()[0]
        path = db.execute("SHOW search_path").fetchone()[0]
        return statement, path, db.info.get_parameters().get("connect_timeout")

    try:
        statement, path, connect = await store._run("check", read)
    finally:
        store.close()
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute(f"DROP TABLE IF EXISTS {table}")
    assert statement_ms == statement
    assert "public,pg_catalog" == path.replace(" ", "")
    assert connect_s == connect


@pytest.mark.parametrize(
    ("conninfo", "where", "operation"),
    [
        # 127.0.0.2 is loopback, where no PostgreSQL listens: the connection is refused.
        ("host=127.0.0.2 dbname=test connect_timeout=2", "127.0.0.2:5432", "connect"),
        ("host=127.0.0.2 port=5439 dbname=test connect_timeout=2", "127.0.0.2:5439", "connect"),
        ("dbname=cmpay_no_such_database", "localhost:5432", "connect"),
    ],
)
async def test_postgres_errors_name_the_server_with_its_defaults(
    conninfo: str, where: str, operation: str
) -> None:
    """A failed connect names the server as host:port (localhost and 5432 when the DSN gives
    none), says it was the connect, and that nothing was applied."""
    store = PostgresStore(conninfo, table=f"cmpay_detail_{uuid.uuid4().hex[:8]}", timeout=2)
    try:
        with pytest.raises(StoreError) as caught:
            await store.migrate()
    finally:
        store.close()
    assert where == caught.value.endpoint_host
    assert operation == caught.value.operation
    assert caught.value.maybe_sent is False
    assert str(caught.value).startswith("PostgresStore failed to connect: ")


async def test_postgres_migrate_creates_the_table(pg: PostgresStore, dsn: str) -> None:
    """migrate() creates the table before any claim (for deployments that prepare schemas)."""
    await pg.migrate()

    with psycopg.connect(dsn, autocommit=True) as db:
        found = db.execute("SELECT to_regclass(%s)", (pg.table,)).fetchone()
        columns = db.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_name = %s ORDER BY ordinal_position",
            (pg.table,),
        ).fetchall()
    assert found is not None
    assert pg.table == found[0]
    assert [
        ("key", "text", "NO"),
        ("state", "text", "NO"),
        ("token", "text", "NO"),
        ("expires", "timestamp with time zone", "NO"),
    ] == columns


async def test_postgres_leases_are_on_the_database_clock(pg: PostgresStore, dsn: str) -> None:
    """The row ends its lease `lease` seconds after the database's now()."""
    claimed = await pg.claim("P1", lease=30)

    with psycopg.connect(dsn, autocommit=True) as db:
        row = db.execute(
            f"SELECT state, token, extract(epoch from expires - now()) FROM {pg.table}"  # noqa: S608
        ).fetchone()
    assert row is not None
    assert ("in_progress", claimed.token) == row[:2]
    assert 25 < float(row[2]) <= 30


async def test_postgres_keeps_one_connection_per_thread_until_closed(pg: PostgresStore) -> None:
    """The same thread reuses its connection; close() closes every one it opened."""
    first = pg._connection()
    assert first is pg._connection()
    others: list[Any] = []
    thread = threading.Thread(target=lambda: others.append(pg._connection()))
    thread.start()
    thread.join()
    assert others[0] is not first

    pg.close()

    assert first.closed
    assert others[0].closed
    assert not pg._connection().closed  # a closed connection is replaced on next use


def test_a_store_without_its_driver_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, dsn: str
) -> None:
    """Without psycopg or redis-py installed, a ConfigurationError names the extra."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setitem(sys.modules, "redis", None)

    with pytest.raises(ConfigurationError) as pg_error:
        PostgresStore(dsn)
    with pytest.raises(ConfigurationError) as redis_error:
        RedisStore()

    assert "PostgresStore needs psycopg 3: pip install 'cmpay-async[postgres]'" == str(
        pg_error.value
    )
    assert "RedisStore needs redis-py: pip install 'cmpay-async[redis]'" == str(redis_error.value)


# -- Redis ----------------------------------------------------------------------------------------


class RedisUnderTest(NamedTuple):
    """A RedisStore, a plain redis-py client of the same server, and the store's key prefix."""

    store: RedisStore
    client: redis.Redis
    prefix: str


@pytest.fixture
def rs(redis_url: str) -> Iterator[RedisUnderTest]:
    """A store under a prefix of its own, its keys deleted afterwards."""
    prefix = f"cmpay-detail:{uuid.uuid4().hex[:8]}:"
    store = RedisStore(redis_url, prefix=prefix, done_ttl=1234)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield RedisUnderTest(store, client, prefix)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()
    store.close()


async def test_redis_claim_is_a_token_with_the_lease_as_ttl(
    rs: tuple[RedisStore, redis.Redis, str],
) -> None:
    """The key holds in-progress:<token> and expires in Redis after the lease."""
    store, client, prefix = rs

    claimed = await store.claim("R1", lease=30)

    assert f"in-progress:{claimed.token}" == client.get(f"{prefix}R1")
    assert 29_000 < client.pttl(f"{prefix}R1") <= 30_000


async def test_redis_a_tiny_lease_is_one_millisecond(
    rs: tuple[RedisStore, redis.Redis, str],
) -> None:
    """A lease under a millisecond still sets a TTL (PX 0 would be an error)."""
    store, client, prefix = rs

    claimed = await store.claim("R2", lease=0.0001)

    assert ClaimState.NEW is claimed.state
    assert client.pttl(f"{prefix}R2") in (-2, 0, 1)  # gone, or about to be


async def test_redis_done_is_remembered_for_done_ttl(
    rs: tuple[RedisStore, redis.Redis, str],
) -> None:
    """complete() writes done with the configured TTL; a stale token changes nothing."""
    store, client, prefix = rs
    claimed = await store.claim("R3", lease=30)
    assert claimed.token is not None

    assert not await store.complete("R3", "stale")
    await store.release("R3", "stale")
    assert f"in-progress:{claimed.token}" == client.get(f"{prefix}R3")
    assert await store.complete("R3", claimed.token)

    assert "done" == client.get(f"{prefix}R3")
    assert 1230 < client.ttl(f"{prefix}R3") <= 1234
    assert ClaimState.DONE is (await store.claim("R3", lease=30)).state


async def test_redis_release_frees_the_key(rs: tuple[RedisStore, redis.Redis, str]) -> None:
    """The owner's release deletes the key: the retry claims it at once."""
    store, client, prefix = rs
    claimed = await store.claim("R4", lease=30)
    assert claimed.token is not None

    await store.release("R4", claimed.token)

    assert client.get(f"{prefix}R4") is None
    assert ClaimState.NEW is (await store.claim("R4", lease=30)).state


async def test_redis_defaults_are_the_local_server_and_the_cmpay_prefix(redis_url: str) -> None:
    """RedisStore() talks to redis://127.0.0.1:6379/0 under cmpay:event:, done kept 90 days."""
    if redis_url != "redis://127.0.0.1:6379/0":
        pytest.fail("this check needs the machine's Redis on 127.0.0.1:6379")
    store = RedisStore()
    key = f"detail-{uuid.uuid4().hex[:8]}"
    client = redis.Redis(host="127.0.0.1", port=6379, db=0, decode_responses=True)
    try:
        claimed = await store.claim(key, lease=30)
        assert claimed.token is not None
        assert f"in-progress:{claimed.token}" == client.get(f"cmpay:event:{key}")
        assert 90 * 24 * 3600 == store.done_ttl
    finally:
        client.delete(f"cmpay:event:{key}")
        client.close()
        store.close()


def test_redis_timeout_is_five_seconds_and_bounds_each_socket_wait() -> None:
    """5 s by default, at most 30 s: redis-py connects and reads within it, a whole call
    within twice it."""
    default = RedisStore()
    longest = RedisStore(timeout=30)
    try:
        assert 5.0 == default.timeout
        assert 10.0 == default.call_bound
        assert 30 == longest.timeout
        options = longest._redis.connection_pool.connection_kwargs
        assert (30, 30) == (options["socket_timeout"], options["socket_connect_timeout"])
    finally:
        default.close()
        longest.close()
    for timeout in (0, 30.001):
        with pytest.raises(ConfigurationError) as caught:
            RedisStore(timeout=timeout)
        assert f"timeout must be above 0 and at most 30 s, not {timeout!r}" == str(caught.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/0", "127.0.0.1:6379"])
def test_redis_url_that_redis_py_refuses(url: str) -> None:
    """A URL redis-py cannot read is a ConfigurationError that says which forms it takes."""
    with pytest.raises(ConfigurationError) as caught:
        RedisStore(url)
    assert "url must be a redis://, rediss:// or unix:// URL that redis-py accepts" == str(
        caught.value
    )


@pytest.mark.parametrize(
    ("url", "where"),
    [
        # 127.0.0.2 is loopback, where no Redis listens: the connection is refused.
        ("redis://127.0.0.2/0", "127.0.0.2:6379"),
        ("redis://127.0.0.2:6390/0", "127.0.0.2:6390"),
        ("unix:///nonexistent/cmpay-redis.sock", "/nonexistent/cmpay-redis.sock"),
    ],
)
async def test_redis_errors_name_the_server_with_its_default_port(url: str, where: str) -> None:
    """A failed connect names the server as host:port (6379 when the URL gives none) or the
    socket's path, and says it was the connect that failed."""
    store = RedisStore(url, timeout=2)
    try:
        with pytest.raises(StoreError) as caught:
            await store.claim("E1", lease=30)
    finally:
        store.close()
    assert where == caught.value.endpoint_host
    assert "connect" == caught.value.operation
    assert not caught.value.maybe_sent


# -- every store ----------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Each store, fresh."""
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        store = SqliteStore(tmp_path / "e.db")
        yield store
        store.close()
    elif request.param == "postgres":
        yield request.getfixturevalue("pg")
    else:
        yield request.getfixturevalue("rs")[0]


async def test_a_key_is_completed_once(any_store: Any) -> None:
    """The owner's complete() succeeds once; again, or after a release, it does not."""
    first = await any_store.claim("ONCE", lease=30)
    assert first.token is not None

    assert await any_store.complete("ONCE", first.token)
    assert not await any_store.complete("ONCE", first.token)
    assert ClaimState.DONE is (await any_store.claim("ONCE", lease=30)).state

    second = await any_store.claim("TWICE", lease=30)
    assert second.token is not None
    await any_store.release("TWICE", second.token)
    assert not await any_store.complete("TWICE", second.token)


def test_tokens_are_128_random_bits_in_hex() -> None:
    """A token is 32 lowercase hex digits, never the same twice."""
    tokens = {new_token() for _ in range(1000)}

    assert 1000 == len(tokens)
    assert all(len(t) == 32 and t == t.lower() and int(t, 16) >= 0 for t in tokens)


async def test_memory_lease_ends_exactly_at_its_end() -> None:
    """Just before the lease ends the key is held; at its end another worker may take it."""
    clock = Clock()
    store = MemoryStore(clock=clock)
    await store.claim("M1", lease=10)

    clock.now += 9.999
    assert ClaimState.IN_PROGRESS is (await store.claim("M1", lease=10)).state
    clock.now += 0.001
    assert ClaimState.NEW is (await store.claim("M1", lease=10)).state


class Vanishing:
    """A Redis whose key expires between a refused SET NX and the GET, as many times as told."""

    def __init__(self, vanish: int) -> None:
        self.vanish = vanish
        self.sets = 0

    def set(self, name: str, value: str, *, nx: bool, px: int) -> bool:
        self.sets += 1
        return self.sets > self.vanish

    def get(self, name: str) -> str | None:
        return None


@pytest.mark.parametrize(("vanish", "state"), [(1, ClaimState.NEW), (2, ClaimState.IN_PROGRESS)])
async def test_redis_a_lease_ending_mid_claim_is_retried_once(
    rs: tuple[RedisStore, redis.Redis, str], vanish: int, state: ClaimState
) -> None:
    """The holder's lease ends between SET NX and GET: the claim tries once more, not forever."""
    store = rs[0]
    store._checked = True  # the fake has no server settings to check
    fake, real = Vanishing(vanish), store._redis
    store._redis = fake
    try:
        assert state is (await store.claim("RACE", lease=30)).state
    finally:
        store._redis = real
    assert 2 == fake.sets


def test_postgres_a_table_created_by_another_process_meanwhile_is_fine(dsn: str) -> None:
    """Two processes creating the table at once: the loser's "IF NOT EXISTS" still fails in
    PostgreSQL (a unique violation in the catalog); the store takes that as "it exists"."""
    table = f"cmpay_race_{uuid.uuid4().hex[:8]}"
    store = PostgresStore(dsn, table=table)
    other = psycopg.connect(dsn)  # a transaction of its own, left open for now
    other.execute(
        f"CREATE TABLE {table} (key text PRIMARY KEY, state text NOT NULL, "
        "token text NOT NULL, expires timestamptz NOT NULL)"
    )
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            store._create(store._connection_without_migrating())
        except BaseException as exc:  # reported below
            errors.append(exc)

    waiter = threading.Thread(target=migrate)
    waiter.start()
    with psycopg.connect(dsn, autocommit=True) as watch:
        # Until the store's CREATE waits on the other transaction's lock (no fixed sleep).
        for _ in range(2000):
            waiting = watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE %s",
                (f"CREATE TABLE IF NOT EXISTS {table}%",),
            ).fetchone()
            if waiting and waiting[0]:
                break
            threading.Event().wait(0.005)
    other.commit()
    waiter.join(timeout=30)
    other.close()

    try:
        assert [] == errors
        assert store._migrated
    finally:
        store.close()
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute(f"DROP TABLE IF EXISTS {table}")


def test_sqlite_waits_up_to_thirty_seconds_for_another_writer(tmp_path: Path) -> None:
    """Each connection waits 30 s for a lock another process holds (a long handler's commit)."""
    store = SqliteStore(tmp_path / "e.db")

    assert (30_000,) == store._connection().execute("PRAGMA busy_timeout").fetchone()
    store.close()


def test_sqlite_connections_close_when_the_store_is_collected(tmp_path: Path) -> None:
    """A store dropped without close() still closes its connections when collected."""
    import gc

    store = SqliteStore(tmp_path / "e.db")
    connection = store._connection()

    del store
    gc.collect()

    with pytest.raises(sqlite3.ProgrammingError):
        connection.execute("SELECT 1")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_postgres_a_forked_childs_close_leaves_the_parents_sessions_alone(
    pg: PostgresStore, dsn: str
) -> None:
    """A child that uses and closes the store it inherited opens sessions of its own and ends
    only those: the parent's sessions (its open transactions, its statements in flight) live."""
    anyio.run(pg.migrate)
    parents = {c.info.backend_pid for c in pg._connections}

    def child() -> None:
        anyio.run(functools.partial(pg.claim, "CHILD", lease=30))
        pg.close()

    assert 0 == in_child(child)

    with psycopg.connect(dsn, autocommit=True) as db:
        alive = {row[0] for row in db.execute("SELECT pid FROM pg_stat_activity").fetchall()}
    assert parents
    assert parents <= alive
    assert parents == {c.info.backend_pid for c in pg._connections}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_postgres_a_forked_child_keeps_one_session_of_its_own(pg: PostgresStore) -> None:
    """After the fork a child opens a session of its own once, and keeps using it: the
    same server process answers its calls, and it is not one of the parent's."""
    anyio.run(pg.migrate)
    parents = {c.info.backend_pid for c in pg._connections}
    pids: list[int] = []

    def child() -> None:
        async def calls() -> None:
            for _ in range(3):
                pid = await pg._run("claim", lambda db: db.execute("SELECT pg_backend_pid()"))
                pids.append(pid.fetchone()[0])

        anyio.run(calls)
        assert 1 == len(set(pids))
        assert not set(pids) & parents
        pg.close()

    assert 0 == in_child(child)


def test_sqlite_completions_that_arrive_together_share_one_synced_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: while one completion is being written, the others that arrive wait and
    are then written together, one transaction (one disk sync) for all of them; each still
    gets its own answer, and a stale token's answer is False."""
    from cmpay_async.stores import sqlite as sqlite_module

    store = SqliteStore(tmp_path / "e.db")
    tokens = [anyio.run(functools.partial(store.claim, f"K{i}", lease=60)).token for i in range(20)]
    tokens[7] = "stale"
    batches: list[list[str]] = []
    first_held = threading.Event()
    let_go = threading.Event()
    mark_done = sqlite_module._mark_done

    def recording(db: sqlite3.Connection, batch: list[list[object]]) -> list[bool]:
        batches.append([str(item[0]) for item in batch])
        if len(batches) == 1:
            first_held.set()
            let_go.wait(10)
        return mark_done(db, batch)

    monkeypatch.setattr(sqlite_module, "_mark_done", recording)
    answers: dict[int, bool] = {}

    def complete(i: int) -> None:
        answers[i] = anyio.run(store.complete, f"K{i}", tokens[i])

    first = threading.Thread(target=complete, args=(0,))
    first.start()
    assert first_held.wait(10)
    others = [threading.Thread(target=complete, args=(i,)) for i in range(1, 20)]
    for thread in others:
        thread.start()
    for _ in range(10_000):  # polled, not timed: until every other completion has joined
        if len(store._batch) == 19:
            break
        threading.Event().wait(0.001)
    let_go.set()
    for thread in [first, *others]:
        thread.join(10)

    assert [["K0"], sorted(f"K{i}" for i in range(1, 20))] == [batches[0], sorted(batches[1])]
    assert {i: i != 7 for i in range(20)} == answers
    fresh = SqliteStore(tmp_path / "e.db")
    states = [
        anyio.run(functools.partial(fresh.claim, f"K{i}", lease=60)).state for i in (0, 7, 19)
    ]
    assert [ClaimState.DONE, ClaimState.IN_PROGRESS, ClaimState.DONE] == states
    store.close()
    fresh.close()


def test_sqlite_a_new_file_written_by_another_connection_still_becomes_wal(
    tmp_path: Path,
) -> None:
    """Switching a new file to WAL takes no busy wait: while another connection writes it,
    the switch fails at once with "database is locked" (two store objects or processes
    opening a new file together). The store tries again within its timeout instead of
    failing the claim."""
    path = tmp_path / "e.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE other (x)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO other VALUES (1)")
    store = SqliteStore(path, timeout=10)
    claimed: list[ClaimState] = []

    def claim() -> None:
        claimed.append(anyio.run(functools.partial(store.claim, "K", lease=60)).state)

    thread = threading.Thread(target=claim)
    thread.start()
    thread.join(0.3)  # the claim is still waiting for the writer (it used to fail at once)
    writer.execute("COMMIT")
    writer.close()
    thread.join(10)

    assert [ClaimState.NEW] == claimed
    with contextlib.closing(sqlite3.connect(path)) as check:
        assert "wal" == check.execute("PRAGMA journal_mode").fetchone()[0]
    store.close()


@pytest.mark.parametrize("race", ["UniqueViolation", "DuplicateTable", "DuplicateObject"])
def test_postgres_a_table_another_process_just_created_is_taken_as_is(dsn: str, race: str) -> None:
    """Two processes creating the table at once: the loser's CREATE TABLE IF NOT EXISTS fails
    with UniqueViolation (a wait on the winner's transaction, this server), DuplicateObject
    (the winner committed between the loser's two catalog checks: "type ... already exists")
    or DuplicateTable (others, by the SQL standard's reading); the table exists, and the
    store goes on."""
    table = f"cmpay_detail_{uuid.uuid4().hex[:8]}"
    store = PostgresStore(dsn, table=table)
    error = getattr(psycopg.errors, race)
    winner = psycopg.connect(dsn, autocommit=True)  # the other process
    winner.execute(f"CREATE TABLE {table} (key text PRIMARY KEY)")

    class LosingConnection:
        """A session whose CREATE TABLE lost the race to another process."""

        def execute(self, statement: str, params: Any = None) -> Any:
            if statement.startswith("CREATE"):
                raise error(f"{race}: {statement[:20]}")
            return winner.execute(statement, params)

    try:
        store._create(LosingConnection())
        assert store._migrated
    finally:
        winner.execute(f"DROP TABLE {table}")
        winner.close()
        store.close()


async def test_postgres_a_type_of_the_tables_name_is_not_taken_for_the_table(dsn: str) -> None:
    """A type that is not a table's (an enum here) already named like the table fails
    CREATE TABLE with the same DuplicateObject a lost race gives: the store says so, and
    does not take the table for made (every later call would fail on a missing relation)."""
    table = f"cmpay_detail_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE TYPE {table} AS ENUM ('a')")
    store = PostgresStore(dsn, table=table)
    try:
        with pytest.raises(StoreError) as caught:
            await store.migrate()
        assert f'DuplicateObject: type "{table}" already exists' in str(caught.value)
        assert not store._migrated
    finally:
        store.close()
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"DROP TYPE {table}")


def test_redis_a_lease_under_a_millisecond_is_one_millisecond() -> None:
    """The lease is given to Redis in whole milliseconds, at least one (PX 0 is refused)."""
    store = RedisStore("redis://127.0.0.1:6379/0")
    leases: list[int] = []
    original = store._redis.set

    def recording(name: str, value: str, **options: Any) -> Any:
        leases.append(options["px"])
        return original(name, value, **options)

    store._redis.set = recording  # type: ignore[method-assign]
    key = f"cmpay-px-{uuid.uuid4().hex[:8]}"
    try:
        anyio.run(functools.partial(store.claim, key, lease=0.0004))
        anyio.run(functools.partial(store.claim, key + "b", lease=1.5))
    finally:
        store._redis.delete(f"cmpay:event:{key}", f"cmpay:event:{key}b")
        store.close()

    assert [1, 1500] == leases


def test_postgres_a_connection_already_closed_is_replaced_and_shut_without_error(
    dsn: str,
) -> None:
    """A session whose socket is gone (closed, here) counts as one the server spoke on, to
    be replaced before use; shutting its socket down (after a timeout) does nothing."""
    from cmpay_async.stores.postgres import _shut, _spoke

    connection = psycopg.connect(dsn, autocommit=True)
    assert not _spoke(connection)  # idle and alive: the server said nothing
    connection.close()

    assert _spoke(connection)
    _shut(connection)
