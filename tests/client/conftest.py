"""Fixtures of the client's tests: the sandbox over loopback TCP, in a thread or a process."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import NamedTuple

import httpx
import pytest

from cmpay_async._serve import serve_in_thread
from cmpay_async.testing import Sandbox


class ServedSandbox(NamedTuple):
    """A sandbox and the loopback URL it is served at."""

    sandbox: Sandbox
    url: str


@pytest.fixture
def without_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's own pools made without a route (as on an httpx whose transports it
    cannot read): every request then goes through ``AsyncClient.send``."""
    monkeypatch.setattr("cmpay_async._pools.direct_route", lambda http, url: None)


@pytest.fixture(scope="module")
def gateway() -> Iterator[ServedSandbox]:
    """A sandbox served over loopback TCP in a thread."""
    sandbox = Sandbox()
    with serve_in_thread(sandbox) as url:
        yield ServedSandbox(sandbox, url)


@pytest.fixture(scope="module")
def gateway_process() -> Iterator[str]:
    """The sandbox in a process of its own, so that forking this one copies no server thread."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cmpay_async", "sandbox", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = ""
        for line in process.stdout:
            if "endpoint" in line:
                url = line.split(":", 1)[1].split()[0].removesuffix("/ips/cmpayService")
                break
        deadline = time.monotonic() + 30
        while True:  # wait until it accepts connections
            try:
                httpx.get(f"{url}/_sandbox/orders", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
