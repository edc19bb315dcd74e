"""Shared parts of the real-worker tests: Redis, a sandbox whose answers can be held, workers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import pytest

from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, Sandbox

ROOT = Path(__file__).parents[2]
#: Set by .ci/run: a service that does not answer is then a failure, not a skip.
REQUIRED = os.environ.get("CMPAY_REQUIRE_SERVICES") == "1"


def _answers_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def unavailable(why: str) -> None:
    """Skip with a visible reason, or fail where CI requires the service."""
    if REQUIRED:
        pytest.fail(f"{why} (CMPAY_REQUIRE_SERVICES=1)")
    pytest.skip(why)


@contextmanager
def redis_server() -> Iterator[str]:
    """The Redis on 127.0.0.1:6379 if it answers, else a private redis-server, else skip."""
    if _answers_ping("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
        return
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("no Redis on 127.0.0.1:6379 and no redis-server binary to start one")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [str(binary), "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not _answers_ping("127.0.0.1", port):
            if time.monotonic() > deadline:
                unavailable("a private redis-server did not start")
            time.sleep(0.05)  # waiting for start-up
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=20)


@contextmanager
def postgres_server() -> Iterator[str]:
    """The PostgreSQL on 127.0.0.1:5432 (trust, database test) if it answers, else skip."""
    dsn = os.environ.get("CMPAY_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")
    try:
        import psycopg

        psycopg.connect(dsn, connect_timeout=3).close()
    except Exception as exc:  # any failure to connect: the reason is shown
        unavailable(f"no PostgreSQL at {dsn}: {type(exc).__name__}: {exc}")
    yield dsn


class HeldAnswers:
    """ASGI wrapper: the sandbox processes each request at once, and its answer can be held.

    While ``hold`` is set, answers wait before leaving, so a worker killed then has an order
    created at the gateway and no answer: the case a re-run must recover.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.hold = 0.0
        self.held = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.hold:
            await self.app(scope, receive, send)
            return
        messages: list[Any] = []

        async def keep(message: Any) -> None:
            messages.append(message)

        await self.app(scope, receive, keep)
        with self._lock:
            self.held += 1
        try:
            await anyio.sleep(self.hold)
        finally:
            with self._lock:
                self.held -= 1
        for message in messages:
            await send(message)


def worker_env(redis_url: str, gateway: str, queue: str, **extra: str) -> dict[str, str]:
    """The environment the recipes read."""
    env = dict(os.environ)
    env.update(
        REDIS_URL=redis_url,
        CMPAY_QUEUE=queue,
        CMPAY_MERCHANT_ID=PUBLIC_TEST_MERCHANT,
        CMPAY_SIGN_KEY=PUBLIC_TEST_KEY,
        CMPAY_ENDPOINT=f"{gateway}/ips/cmpayService",
        SHOP_URL="http://127.0.0.1:9",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


@contextmanager
def worker(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[Any]]:
    """A worker process (and its children) for the block; killed at the end."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", *command],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Celery's prefork pool)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(line) for line in found.stdout.split()]


def batch_ids(prefix: str, n: int) -> list[str]:
    """Order ids unique to this run."""
    tag = uuid.uuid4().hex[:8]
    return [f"{prefix}{tag}{i:04d}" for i in range(n)]


def orders_at(sandbox: Sandbox, prefix: str) -> list[str]:
    """Order ids at the sandbox that start with ``prefix``."""
    return [oid for (_, oid) in sandbox.orders if oid.startswith(prefix)]


def wait_until(condition: Any, timeout: float, what: str) -> None:
    """Poll ``condition`` (no timing is asserted; the timeout only ends a hung run)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def new_queue() -> str:
    """A queue name of this run's own."""
    return f"cmpay-test-{uuid.uuid4().hex[:8]}"


def serve_sandbox() -> tuple[Sandbox, HeldAnswers]:
    """A sandbox and its answer-holding wrapper (serve the wrapper)."""
    sandbox = Sandbox()
    return sandbox, HeldAnswers(sandbox)
