"""End to end: two worker processes, one store, duplicated notifications at once.

For each store (SQLite on disk, Redis and PostgreSQL on 127.0.0.1), the sandbox (over TCP)
pays 200 orders; each payment's OfflineNotify goes out with 10 copies at the same instant,
and the sandbox posts the PageNotify at that instant too. The notify endpoint is
``tests/support/notify_app.py`` served by uvicorn with 2 worker processes. The handler's effect, a
counter per order, must be exactly 1 for every order, and every order's OfflineNotify must
end acknowledged (a FAIL for "in progress elsewhere" is retried). A variant kills a worker
inside the handler: the claim it held is freed only by its lease running out.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from cmpay_async import Order
from cmpay_async._serve import serve_in_thread
from cmpay_async.testing import NotifyAttempt, Sandbox, SandboxClock
from tests.support.helpers import sandbox_client
from tests.support.queues import ROOT, postgres_server, redis_server, wait_until

#: Real worker processes or servers: run once by `nox -s integration`, not per Python.
pytestmark = pytest.mark.integration

STORES = ["sqlite", "redis", "postgres"]
ORDERS = 200
KILLED_ORDERS = 20
#: Short, so that the test waits for a dead worker's claim about this long, not a minute.
LEASE_SECONDS = 1.5


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _store_env(kind: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for tests/support/notify_app.py: one store of this kind, fresh for the test."""
    name = f"cmpay_e2e_{uuid.uuid4().hex[:8]}"
    if kind == "sqlite":
        yield {"CMPAY_STORE_URL": str(tmp_path / "events.db"), "CMPAY_STORE_PREFIX": ""}
    elif kind == "redis":
        with redis_server() as url:
            yield {"CMPAY_STORE_URL": url, "CMPAY_STORE_PREFIX": f"{name}:"}
            import redis

            with redis.Redis.from_url(url) as db:
                for key in db.scan_iter(f"{name}:*"):
                    db.delete(key)
    else:
        with postgres_server() as dsn:
            yield {"CMPAY_STORE_URL": dsn, "CMPAY_STORE_PREFIX": name}
            import psycopg

            with psycopg.connect(dsn, autocommit=True) as db:
                db.execute(f"DROP TABLE IF EXISTS {name}")


@contextmanager
def _workers(tmp_path: Path, store: dict[str, str], **env: str) -> Iterator[str]:
    """Two uvicorn worker processes serving the notify endpoint; yields the shop's URL."""
    port = _free_port()
    environment = {
        **store,
        **env,
        "CMPAY_CREDITS_PATH": str(tmp_path / "credits.db"),
        "PYTHONPATH": str(ROOT),
        "PATH": "/usr/bin:/bin",
    }
    command = [sys.executable, "-m", "uvicorn", "tests.support.notify_app:create_app", "--factory"]
    command += ["--workers", "2", "--port", str(port), "--lifespan", "off"]
    command += ["--log-level", "warning"]
    shop = f"http://127.0.0.1:{port}"
    with (tmp_path / "workers.log").open("wb") as log:
        workers = subprocess.Popen(command, env=environment, cwd=ROOT, stdout=log, stderr=log)
    try:
        wait_until(lambda: _answers(shop), 60, "the notify workers")
        yield shop
    finally:
        workers.terminate()
        workers.wait(timeout=30)


def _credits(tmp_path: Path) -> dict[str, int]:
    with closing(sqlite3.connect(tmp_path / "credits.db")) as db:
        return dict(db.execute("SELECT order_id, n FROM credits").fetchall())


def _deliver_all(shop: str, orders: list[str]) -> dict[str, list[NotifyAttempt]]:
    """Pay every order on a sandbox over TCP; wait until each OfflineNotify is acknowledged."""
    sandbox = Sandbox(clock=SandboxClock(0.005))
    with serve_in_thread(sandbox) as url:
        anyio.run(_pay_everything, sandbox, url, shop, orders)
        wait_until(
            lambda: all(o.delivery == "acknowledged" for o in sandbox.orders.values()),
            120,
            "every OfflineNotify acknowledged",
        )
        return {o.order_id: list(o.attempts) for o in sandbox.orders.values()}


@pytest.mark.parametrize("kind", STORES)
def test_two_workers_handle_each_payment_exactly_once(kind: str, tmp_path: Path) -> None:
    """200 payments × (11 OfflineNotify copies + the PageNotify), all at once: credited once."""
    orders = [f"E2E{n:04d}" for n in range(ORDERS)]
    with _store_env(kind, tmp_path) as store, _workers(tmp_path, store, CMPAY_STORE=kind) as shop:
        delivered = _deliver_all(shop, orders)

    assert dict.fromkeys(orders, 1) == _credits(tmp_path)
    for order_id, attempts in delivered.items():
        offline = [a for a in attempts if a.kind == "OfflineNotify"]
        assert 11 == sum(a.attempt == 1 for a in offline), order_id
        assert 1 == sum(a.kind == "PageNotify" for a in attempts), order_id
        # Every delivery was answered: SUCCESS once handled, FAIL while in progress elsewhere;
        # the gateway's own series ends on SUCCESS.
        assert {(200, "SUCCESS"), (200, "FAIL")} >= {(a.status, a.answer) for a in attempts}
        assert "SUCCESS" == [a for a in offline if not a.duplicate][-1].answer


@pytest.mark.parametrize("kind", STORES)
def test_a_worker_killed_mid_handler_leaves_the_payment_to_the_lease(
    kind: str, tmp_path: Path
) -> None:
    """Workers die inside the handler holding claims; after the lease each order runs once."""
    orders = [f"KILL{n:03d}" for n in range(KILLED_ORDERS)]
    killed = orders[::5]
    env = {"CMPAY_STORE": kind, "CMPAY_LEASE": str(LEASE_SECONDS), "CMPAY_CRASH": "exit"}
    env["CMPAY_CRASH_ORDERS"] = ",".join(killed)
    with _store_env(kind, tmp_path) as store, _workers(tmp_path, store, **env) as shop:
        delivered = _deliver_all(shop, orders)

    log = (tmp_path / "workers.log").read_text("utf-8", "replace")[-3000:]
    assert dict.fromkeys(orders, 1) == _credits(tmp_path), log
    assert set(killed) == {p.name for p in (tmp_path / "credits.crashed").iterdir()}
    for order_id in killed:
        attempts = delivered[order_id]
        # The request whose handler died got no answer (connection lost); copies answered
        # FAIL while the dead worker's lease lasted; a later attempt ran the handler.
        assert any(a.status is None for a in attempts), attempts
        assert "SUCCESS" == [a for a in attempts if not a.duplicate][-1].answer


def _answers(shop: str) -> bool:
    try:
        httpx.post(f"{shop}/notify", content=b"x=1", timeout=1)
        return True
    except httpx.TransportError:
        time.sleep(0.05)  # waiting for start-up
        return False


async def _pay_everything(sandbox: Sandbox, url: str, shop: str, orders: list[str]) -> None:
    client = sandbox_client(url, shop)
    async with client, httpx.AsyncClient() as browser:
        for n, order_id in enumerate(orders):
            order = Order(amount=100 + n, order_id=order_id, product_name="咖啡")
            payment = await client.create_payment(order, ip_address="127.0.0.1")
            # The first OfflineNotify, 10 copies and the PageNotify leave at the same instant.
            sandbox.duplicate_next_notification(10, concurrent=True)
            sandbox.race_next_page_notify()
            paid = await browser.post(
                f"{url}/ips/FormTrans3/pay",
                data={"sessionId": payment.pay_url.session_id, "outcome": "pay"},
            )
            assert 200 == paid.status_code
