"""Shared fixtures: every async test runs on asyncio and on trio (anyio's pytest plugin)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from cmpay_async import CmpayClient
from cmpay_async.testing import Sandbox

from .helpers import make_client


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each ``@pytest.mark.anyio`` test once per event loop."""
    return str(request.param)


@pytest.fixture
def sandbox() -> Sandbox:
    """A fresh sandbox gateway."""
    return Sandbox()


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[CmpayClient]:
    """A client wired to the sandbox in-process."""
    async with make_client(httpx.ASGITransport(app=sandbox)) as c:
        yield c
