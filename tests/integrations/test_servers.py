"""The framework glue under real servers: each setup handles each payment exactly once.

For each setup (Django under gunicorn sync workers, and with DjangoStore and an ORM-using
handler under gunicorn and under uvicorn (ASGI); Flask under gunicorn with threads;
Starlette and FastAPI under uvicorn with 2 workers; aiohttp under gunicorn with 2 workers),
25 payments are delivered 6 times each at once: OfflineNotify (UTF-8 twice, GBK without a
declared charset once) and PageNotify (to the notify URL, and to the return URL as a form
POST and as a GET). Answers other than SUCCESS are retried as the gateway would. The
handler, counting its runs in a shared SQLite file, must run once per payment; every
payment must get a SUCCESS; forged bodies never.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from cmpay_async import CharacterSet, Md5Signer
from cmpay_async.testing import sign_notification
from tests.support.queues import ROOT, batch_ids, worker, worker_env

pytestmark = pytest.mark.integration

PAYMENTS, AT_ONCE = 25, 6
FORM = {"content-type": "application/x-www-form-urlencoded"}

SETUPS = {
    "django-gunicorn-sync": ["gunicorn", "-w", "2", "tests.support.servers.django_app:application"],
    "flask-gunicorn-threads": [
        "gunicorn",
        "-w",
        "2",
        "-k",
        "gthread",
        "--threads",
        "4",
        "tests.support.servers.flask_app:app",
    ],
    "starlette-uvicorn": ["uvicorn", "--workers", "2", "tests.support.servers.starlette_app:app"],
    "fastapi-uvicorn": [
        "uvicorn",
        "--workers",
        "2",
        "tests.support.servers.starlette_app:fastapi_app",
    ],
    # DjangoStore on the project's database, and a handler using the ORM.
    "django-orm-gunicorn-sync": [
        "gunicorn",
        "-w",
        "2",
        "tests.support.servers.django_orm_app:application",
    ],
    "django-orm-uvicorn-asgi": [
        "uvicorn",
        "--workers",
        "2",
        "tests.support.servers.django_orm_app:asgi_application",
    ],
    "aiohttp-gunicorn": [
        "gunicorn",
        "-w",
        "2",
        "-k",
        "aiohttp.GunicornWebWorker",
        "tests.support.servers.aiohttp_app:app",
    ],
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: Not a supported setup: process_sync refuses under gevent's monkey-patching.
GEVENT = ["gunicorn", "-w", "2", "-k", "gevent", "tests.support.servers.flask_app:app"]


@contextmanager
def _server(setup: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = _free_port()
    command = list(GEVENT if setup == "gevent" else SETUPS[setup])
    if command[0] == "gunicorn":
        command[1:1] = ["-b", f"127.0.0.1:{port}"]
    else:
        command[1:1] = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    handled = tmp_path / "handled.db"
    env = worker_env(
        "redis://unused",
        "http://127.0.0.1:9",
        "unused",
        CMPAY_EVENTS_DB=str(tmp_path / "events.db"),
        CMPAY_HANDLED_DB=str(handled),
        CMPAY_DJANGO_DB=str(tmp_path / "django.db"),
    )
    if "django-orm" in setup:
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from tests.support.servers.django_orm_app import migrate; migrate()",
            ],
            env=env,
            cwd=ROOT,
            check=True,
        )
    with worker(command, env, tmp_path / "server.log"):
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # the server is up when it answers (no timing is asserted)
            try:
                httpx.get(f"{url}/cmpay/notify", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise AssertionError((tmp_path / "server.log").read_text()) from None
                time.sleep(0.1)
        yield url, handled


def _deliveries(order_id: str) -> list[tuple[str, str, bytes]]:
    """Six deliveries of one payment: (method, path, body)."""
    offline = sign_notification(order_id=order_id, amount=100)
    gbk = sign_notification(
        order_id=order_id, amount=100, message="支付成功", charset=CharacterSet.GBK
    )
    page = sign_notification(kind="PageNotify", order_id=order_id, amount=100)
    return [
        ("POST", "/cmpay/notify", offline),
        ("POST", "/cmpay/notify", offline),
        ("POST", "/cmpay/notify", gbk),
        ("POST", "/cmpay/notify", page),
        ("POST", "/cmpay/return", page),
        ("GET", "/cmpay/return", page),
    ]


def _send(client: httpx.Client, method: str, path: str, body: bytes) -> tuple[int, bytes, str]:
    if method == "GET":
        response = client.get(f"{path}?{body.decode('ascii')}")
    else:
        response = client.post(path, content=body, headers=FORM)
    return response.status_code, response.content, response.headers.get("location", "")


def _runs(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        return dict(conn.execute("SELECT order_id, count(*) FROM runs GROUP BY order_id"))


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_each_payment_is_handled_once_under_a_real_server(setup: str, tmp_path: Path) -> None:
    """25 payments x 6 concurrent deliveries: one handler run each, a SUCCESS each."""
    ids = batch_ids("SRV", PAYMENTS)
    forged = [
        sign_notification(order_id=f"FORGED{i}", amount=1, signer=Md5Signer("x" * 64))
        for i in range(5)
    ]
    with (
        _server(setup, tmp_path) as (url, handled),
        httpx.Client(base_url=url, timeout=30) as client,
        ThreadPoolExecutor(AT_ONCE * 2) as pool,
    ):
        jobs = [(oid, d) for oid in ids for d in _deliveries(oid)]
        answers = list(pool.map(lambda job: (job[0], _send(client, *job[1])), jobs))
        forged_answers = [_send(client, "POST", "/cmpay/notify", body) for body in forged]
        forged_returns = [_send(client, "POST", "/cmpay/return", body) for body in forged]
        succeeded = {oid for oid, (_, body, _) in answers if body == b"SUCCESS"}
        # The gateway retries an OfflineNotify not answered SUCCESS (a duplicate in progress).
        for oid in ids:
            for _ in range(20):
                if oid in succeeded:
                    break
                if _send(client, *_deliveries(oid)[0])[1] == b"SUCCESS":
                    succeeded.add(oid)
        runs = _runs(handled)

    assert {oid: 1 for oid in ids} == runs
    assert set(ids) == succeeded
    assert all(body != b"SUCCESS" and status == 400 for status, body, _ in forged_answers)
    assert all(urlsplit(loc).path == "/not-paid" for _, _, loc in forged_returns)
    redirects = [loc for _, (status, _, loc) in answers if status == 303]
    assert 2 * PAYMENTS == len(redirects)
    assert all(urlsplit(loc).path == "/paid" for loc in redirects)


def test_under_gevent_the_blocking_processor_refuses_clearly(tmp_path: Path) -> None:
    """gunicorn -k gevent: every delivery is refused (never SUCCESS), with a clear error."""
    pytest.importorskip("gevent")
    ids = batch_ids("GEV", 5)
    with (
        _server("gevent", tmp_path) as (url, handled),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        answers = [_send(client, *delivery) for oid in ids for delivery in _deliveries(oid)]
        runs = _runs(handled)

    assert {} == runs
    assert all(body != b"SUCCESS" and status >= 500 for status, body, _ in answers)
    log = (tmp_path / "server.log").read_text()
    assert "process_sync cannot run under gevent's monkey-patching" in log
