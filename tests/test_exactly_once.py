"""End to end: two worker processes, one SQLite store, duplicated notifications at once.

The sandbox (over TCP) pays 200 orders; each payment's OfflineNotify goes out with 10
copies at the same instant, and the buyer's PageNotify is posted at the same time. The
notify endpoint is ``tests/notify_app.py`` served by uvicorn with 2 worker processes. The
handler's effect, a counter per order, must be exactly 1 for every order, and every order's
OfflineNotify must end acknowledged (a FAIL for "in progress elsewhere" is retried).
"""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx

from cmpay_async import Order
from cmpay_async._serve import serve_in_thread
from cmpay_async.testing import Sandbox, SandboxClock

from .helpers import sandbox_client
from .queues import ROOT, wait_until

ORDERS = 200


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_two_workers_handle_each_payment_exactly_once(tmp_path: Path) -> None:
    """200 payments × (11 OfflineNotify copies + the PageNotify): each credited once."""
    port = _free_port()
    credits = tmp_path / "credits.db"
    env = {
        "CMPAY_STORE_PATH": str(tmp_path / "events.db"),
        "CMPAY_CREDITS_PATH": str(credits),
        "PYTHONPATH": str(ROOT),
        "PATH": "/usr/bin:/bin",
    }
    command = [sys.executable, "-m", "uvicorn", "tests.notify_app:create_app", "--factory"]
    command += ["--workers", "2", "--port", str(port), "--lifespan", "off"]
    command += ["--log-level", "warning"]
    shop = f"http://127.0.0.1:{port}"
    with (tmp_path / "workers.log").open("wb") as log:
        workers = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log)
    try:
        wait_until(lambda: _answers(shop), 60, "the notify workers")
        sandbox = Sandbox(clock=SandboxClock(0.005))
        with serve_in_thread(sandbox) as url:
            anyio.run(_pay_everything, sandbox, url, shop)
            wait_until(
                lambda: all(o.delivery == "acknowledged" for o in sandbox.orders.values()),
                120,
                "every OfflineNotify acknowledged",
            )
            attempts = [a for o in sandbox.orders.values() for a in o.attempts]
    finally:
        workers.terminate()
        workers.wait(timeout=30)

    with sqlite3.connect(credits) as db:
        counted = dict(db.execute("SELECT order_id, n FROM credits").fetchall())
    assert ORDERS == len(counted)
    assert {1} == set(counted.values())
    offline = [a for a in attempts if a.kind == "OfflineNotify"]
    assert len(offline) >= ORDERS * 11
    assert {200} == {a.status for a in offline}  # SUCCESS, or FAIL while in progress elsewhere


def _answers(shop: str) -> bool:
    try:
        httpx.post(f"{shop}/notify", content=b"x=1", timeout=1)
        return True
    except httpx.TransportError:
        time.sleep(0.05)  # waiting for start-up
        return False


async def _pay_everything(sandbox: Sandbox, url: str, shop: str) -> None:
    client = sandbox_client(url, shop)
    async with client, httpx.AsyncClient() as browser:
        for n in range(ORDERS):
            order = Order(amount=100 + n, order_id=f"E2E{n:04d}", product_name="咖啡")
            payment = await client.create_payment(order, ip_address="127.0.0.1")
            sandbox.duplicate_next_notification(10, concurrent=True)
            done = await browser.post(
                f"{url}/ips/FormTrans3/pay",
                data={"sessionId": payment.pay_url.session_id, "outcome": "pay"},
            )
            page = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', done.text))
            # The buyer's browser returns the PageNotify while the OfflineNotify copies arrive.
            await browser.post(f"{shop}/return", data=page)
