"""The README's notification handlers, run in the real frameworks they are written for."""

from __future__ import annotations

import sys
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cmpay_async import Md5Signer
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, sign_notification
from tests.support.readme import run_examples

pytestmark = pytest.mark.anyio

FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The environment the README's setup block reads; a fresh events file per test."""
    monkeypatch.setenv("CMPAY_SIGN_KEY", PUBLIC_TEST_KEY)
    monkeypatch.setenv("CMPAY_MERCHANT_ID", PUBLIC_TEST_MERCHANT)
    monkeypatch.setenv("CMPAY_EVENTS_DB", str(tmp_path / "events.db"))


Post = Callable[[bytes], Awaitable[tuple[int, bytes]]]


async def check_handler(post: Post, credited: dict[str, int]) -> None:
    """A signed notification is credited once; a forged one never gets SUCCESS nor credit."""
    body = sign_notification(order_id="R1", amount=1250, pay_no="PAY1")
    forged = sign_notification(
        order_id="R2", amount=9999, pay_no="PAY2", signer=Md5Signer("x-not-the-merchants-key")
    )

    assert (200, b"SUCCESS") == await post(body)
    assert (200, b"SUCCESS") == await post(body)  # the retry of the same payment
    status, answer = await post(forged)
    assert (400, b"FAIL") == (status, answer)
    assert {"R1": 1250} == credited


async def test_starlette_handler(env: None) -> None:
    """The Starlette/FastAPI handler, through httpx's ASGI transport."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    ns = run_examples("notify-setup", "starlette")
    app = Starlette(routes=[Route("/cmpay/notify", ns["cmpay_notify"], methods=["POST"])])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:

        async def post(body: bytes) -> tuple[int, bytes]:
            response = await http.post("/cmpay/notify", content=body, headers=FORM)
            return response.status_code, response.content

        await check_handler(post, ns["CREDITED"])


async def test_readme_quickstart_handler(env: None) -> None:
    """The README's first-screen handler: SUCCESS for a signed notification, 400 for a forgery."""
    ns = run_examples("readme-notify")
    body = sign_notification(order_id="Q1", amount=100)
    forged = sign_notification(
        order_id="Q2", amount=100, signer=Md5Signer("x-not-the-merchants-key")
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=ns["app"]), base_url="http://s"
    ) as http:
        ok = await http.post("/cmpay/notify", content=body, headers=FORM)
        again = await http.post("/cmpay/notify", content=body, headers=FORM)
        bad = await http.post("/cmpay/notify", content=forged, headers=FORM)
    assert [(200, b"SUCCESS"), (200, b"SUCCESS"), (400, b"FAIL")] == [
        (r.status_code, r.content) for r in (ok, again, bad)
    ]


async def test_readme_return_handler(env: None) -> None:
    """The README's callback_url handler: a signed PageNotify is handled with the payment's
    OfflineNotify once and redirects the buyer to the order's page; a forged one gets 400."""
    ns = run_examples("readme-notify")
    events: list[Any] = []

    async def count(event: Any) -> None:
        events.append(event)

    ns["PROCESSOR"].handler = count
    page = sign_notification(kind="PageNotify", order_id="P1", amount=100, pay_no="PAY1")
    offline = sign_notification(order_id="P1", amount=100, pay_no="PAY1")
    forged = sign_notification(
        kind="PageNotify", order_id="P2", amount=100, signer=Md5Signer("x-not-the-merchants-key")
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=ns["app"]), base_url="http://s"
    ) as http:
        returned = await http.post("/cmpay/return", content=page, headers=FORM)
        notified = await http.post("/cmpay/notify", content=offline, headers=FORM)
        refused = await http.post("/cmpay/return", content=forged, headers=FORM)

    assert (303, "/orders/P1") == (returned.status_code, returned.headers["location"])
    assert (200, b"SUCCESS") == (notified.status_code, notified.content)
    assert 400 == refused.status_code
    assert [("PageNotify", "P1")] == [(e.source, e.order_id) for e in events]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp runs on asyncio only
async def test_aiohttp_handler(env: None, anyio_backend: str) -> None:
    """The aiohttp handler, on aiohttp's own test server."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    ns = run_examples("notify-setup", "aiohttp")
    app = web.Application()
    app.router.add_post("/cmpay/notify", ns["cmpay_notify"])
    async with TestClient(TestServer(app)) as client:

        async def post(body: bytes) -> tuple[int, bytes]:
            response = await client.post("/cmpay/notify", data=body, headers=FORM)
            return response.status, await response.read()

        await check_handler(post, ns["CREDITED"])


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # Django's async client is asyncio-based
async def test_django_handler(env: None, anyio_backend: str) -> None:
    """The Django async view, through Django's async test client."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            ROOT_URLCONF="readme_django_urls",
            ALLOWED_HOSTS=["*"],
            SECRET_KEY="test-only",
            MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
            INSTALLED_APPS=[],
            DATABASES={},
            USE_TZ=True,
        )
        django.setup()
    from django.test import AsyncClient
    from django.urls import clear_url_caches, path

    ns = run_examples("notify-setup", "django")
    urls: Any = types.ModuleType("readme_django_urls")
    urls.urlpatterns = [path("cmpay/notify", ns["cmpay_notify"])]
    sys.modules["readme_django_urls"] = urls
    clear_url_caches()
    client = AsyncClient(enforce_csrf_checks=True)

    async def post(body: bytes) -> tuple[int, bytes]:
        response = await client.post(
            "/cmpay/notify", data=body, content_type="application/x-www-form-urlencoded"
        )
        return response.status_code, response.content

    await check_handler(post, ns["CREDITED"])


def test_processor_example_credits_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three concurrent copies and a fourth delivery: credited once, answered SUCCESS."""
    monkeypatch.setenv("CMPAY_SIGN_KEY", PUBLIC_TEST_KEY)

    namespace = run_examples("processor")

    assert ["A1001"] == namespace["CREDITED"]
    assert "b'SUCCESS' ['A1001']" == capsys.readouterr().out.strip()
