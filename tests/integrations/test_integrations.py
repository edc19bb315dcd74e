"""Framework glue and the blocking processor: SUCCESS only once the handler ran, in-process."""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import httpx
import pytest

from cmpay_async import (
    CharacterSet,
    ConfigurationError,
    Md5Signer,
    NotificationProcessor,
    PaymentEvent,
)
from cmpay_async.stores import MemoryStore
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, sign_notification
from tests.support.helpers import query_result

FORM = {"content-type": "application/x-www-form-urlencoded"}
SUCCESS_URL, FAILURE_URL = "/paid", "/not-paid"


class Handled:
    """Counts handler runs by order id, and where each ran."""

    def __init__(self, *, fail_first: bool = False) -> None:
        self.runs: list[str] = []
        self.threads: list[int] = []
        self.loop_running: list[bool] = []
        self.fail_first = fail_first
        self._lock = threading.Lock()

    def __call__(self, event: PaymentEvent) -> None:
        try:
            asyncio.get_running_loop()
            running = True
        except RuntimeError:
            running = False
        with self._lock:
            self.loop_running.append(running)
            self.threads.append(threading.get_ident())
            if self.fail_first and not self.runs and not getattr(self, "failed", False):
                self.failed = True
                raise LookupError("the shop's database is down")
            self.runs.append(event.order_id)


def processor_for(handler: Any) -> NotificationProcessor:
    """A processor on the test key with a store of its own."""
    return NotificationProcessor(
        verifier=Md5Signer(PUBLIC_TEST_KEY),
        merchant_id=PUBLIC_TEST_MERCHANT,
        store=MemoryStore(),
        handler=handler,
    )


def offline(order_id: str, **fields: Any) -> bytes:
    """A signed OfflineNotify of a paid order."""
    return sign_notification(order_id=order_id, amount=1250, **fields)


def page(order_id: str, **fields: Any) -> bytes:
    """A signed PageNotify of a paid order."""
    return sign_notification(kind="PageNotify", order_id=order_id, amount=1250, **fields)


def gbk(order_id: str, kind: str = "OfflineNotify") -> bytes:
    """A GBK body with Chinese text, as the gateway posts it (no charset declared)."""
    return sign_notification(
        kind=kind, order_id=order_id, amount=1250, message="支付成功", charset=CharacterSet.GBK
    )


FORGED = sign_notification(order_id="F1", amount=1, signer=Md5Signer("x" * 64))


# -- process_sync ------------------------------------------------------------------------------


def test_process_sync_runs_a_plain_handler_in_the_calling_thread_without_a_loop() -> None:
    """The handler runs in the caller's thread, where no event loop runs (Django's ORM check)."""
    handled = Handled()
    processor = processor_for(handled)

    answer = processor.process_sync(offline("S1"))

    assert (200, b"SUCCESS") == (answer.status_code, answer.body)
    assert ["S1"] == handled.runs
    assert [threading.get_ident()] == handled.threads
    assert [False] == handled.loop_running


def test_process_sync_handles_once_across_threads() -> None:
    """Twelve threads deliver one payment's PageNotify and OfflineNotify: one handler run."""
    handled = Handled()
    processor = processor_for(handled)
    bodies = [page("S2"), offline("S2"), gbk("S2")] * 4
    answers: list[bytes] = []
    barrier = threading.Barrier(len(bodies))

    def deliver(body: bytes) -> None:
        barrier.wait()
        answers.append(processor.process_sync(body).body)

    threads = [threading.Thread(target=deliver, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert ["S2"] == handled.runs
    assert answers.count(b"SUCCESS") >= 1
    assert processor.process_sync(offline("S2")).body == b"SUCCESS"  # done: answered at once
    assert ["S2"] == handled.runs


def test_process_sync_runs_an_async_handler() -> None:
    """An async def handler works from sync code too."""
    seen: list[str] = []

    async def handler(event: PaymentEvent) -> None:
        await anyio.sleep(0)
        seen.append(event.order_id)

    assert b"SUCCESS" == processor_for(handler).process_sync(offline("S3")).body
    assert ["S3"] == seen


def test_process_sync_answers_fail_when_the_handler_raises_then_retries() -> None:
    """A handler that raises is answered FAIL, and the next delivery runs it again."""
    handled = Handled(fail_first=True)
    processor = processor_for(handled)

    first = processor.process_sync(offline("S4"))
    second = processor.process_sync(offline("S4"))

    assert (b"FAIL", b"SUCCESS") == (first.body, second.body)
    assert ["S4"] == handled.runs


def test_process_sync_refuses_forged_bodies() -> None:
    """A forged notification is answered 400 FAIL and never reaches the handler."""
    handled = Handled()
    answer = processor_for(handled).process_sync(FORGED)

    assert (400, b"FAIL") == (answer.status_code, answer.body)
    assert [] == handled.runs


@pytest.mark.anyio
async def test_process_sync_refuses_inside_a_running_loop() -> None:
    """Called where a loop runs, it raises ConfigurationError naming the awaitable call."""
    processor = processor_for(Handled())

    with pytest.raises(ConfigurationError, match=r"await processor\.process\(\.\.\.\)"):
        processor.process_sync(offline("S5"))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "instead"),
    [
        ("process_sync", "await processor.process(...)"),
        ("receive_sync", "await processor.receive(...)"),
        ("process_result_sync", "await processor.process_result(...)"),
    ],
)
async def test_each_sync_call_refused_in_a_loop_names_itself_and_its_awaitable(
    method: str, instead: str
) -> None:
    """The refusal names the blocking call that was made and the call to await instead."""
    handled = Handled()
    processor = processor_for(handled)
    argument = query_result("S6", "SUCCESS") if method == "process_result_sync" else offline("S6")

    with pytest.raises(ConfigurationError) as refused:
        getattr(processor, method)(argument)

    expected = (
        f"{method} was called from inside a running event loop, where waiting would block "
        f"that loop: use {instead} instead"
    )
    assert expected == str(refused.value)
    assert [] == handled.runs


@pytest.mark.anyio
async def test_process_runs_a_plain_handler_off_the_loop() -> None:
    """Under ``await process``, a plain-function handler runs in a thread without a loop."""
    handled = Handled()

    answer = await processor_for(handled).process(offline("S6"))

    assert b"SUCCESS" == answer.body
    assert [False] == handled.loop_running
    assert threading.get_ident() not in handled.threads


# -- the frameworks ----------------------------------------------------------------------------

Post = Callable[[str, bytes, dict[str, str]], Awaitable[tuple[int, bytes, str | None]]]


async def check_framework(
    post: Post, get: Callable[[str, str], Awaitable[tuple[int, str]]], handled: Handled
) -> None:
    """The behaviour every adapter owes: SUCCESS only once handled; redirects; refusals."""
    status, body, _ = await post("/cmpay/notify", offline("W1"), FORM)
    assert (200, b"SUCCESS") == (status, body)
    status, body, _ = await post("/cmpay/notify", offline("W1"), FORM)  # a duplicate
    assert (200, b"SUCCESS") == (status, body)
    status, body, _ = await post("/cmpay/notify", gbk("W2"), FORM)  # GBK, no charset declared
    assert (200, b"SUCCESS") == (status, body)
    declared = {"content-type": "application/x-www-form-urlencoded; charset=GBK"}
    status, body, _ = await post("/cmpay/notify", gbk("W3"), declared)
    assert (200, b"SUCCESS") == (status, body)
    # The declared charset is passed on: a GBK body declared UTF-8 does not decode.
    misdeclared = {"content-type": "application/x-www-form-urlencoded; charset=UTF-8"}
    status, body, _ = await post("/cmpay/notify", gbk("W9"), misdeclared)
    assert (400, b"FAIL") == (status, body)
    status, body, _ = await post("/cmpay/notify", FORGED, FORM)
    assert (400, b"FAIL") == (status, body)
    # The buyer's PageNotify on the return URL: recorded once, then a 303 to the shop's page.
    status, _, location = await post("/cmpay/return", page("W4"), FORM)
    assert (303, SUCCESS_URL) == (status, urlsplit(location or "").path)
    status, location_get = await get("/cmpay/return", page("W5").decode("ascii"))
    assert (303, SUCCESS_URL) == (status, urlsplit(location_get).path)
    status, _, location = await post("/cmpay/return", FORGED, FORM)
    assert (303, FAILURE_URL) == (status, urlsplit(location or "").path)
    unpaid = sign_notification(kind="PageNotify", order_id="W6", amount=1250, status="FAILED")
    status, _, location = await post("/cmpay/return", unpaid, FORM)
    assert (303, FAILURE_URL) == (status, urlsplit(location or "").path)
    assert ["W1", "W2", "W3", "W4", "W5", "W6"] == sorted(handled.runs)


async def check_over_httpx(client: httpx.AsyncClient, handled: Handled) -> None:
    """check_framework through an httpx client (ASGI apps)."""

    async def post(path: str, body: bytes, headers: dict[str, str]) -> Any:
        response = await client.post(path, content=body, headers=headers)
        return response.status_code, response.content, response.headers.get("location")

    async def get(path: str, query: str) -> tuple[int, str]:
        response = await client.get(f"{path}?{query}")
        return response.status_code, response.headers["location"]

    await check_framework(post, get, handled)


@pytest.mark.anyio
async def test_starlette_endpoints() -> None:
    """Starlette: notify answers SUCCESS once handled; the return endpoint redirects (303)."""
    from starlette.applications import Starlette

    from cmpay_async.integrations.starlette import notify_endpoint, return_endpoint

    handled = Handled()
    processor = processor_for(handled)
    app = Starlette()
    app.add_route("/cmpay/notify", notify_endpoint(processor), methods=["POST"])
    app.add_route(
        "/cmpay/return",
        return_endpoint(processor, success_url=SUCCESS_URL, failure_url=FAILURE_URL),
        methods=["GET", "POST"],
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        await check_over_httpx(client, handled)


@pytest.mark.anyio
async def test_fastapi_router() -> None:
    """FastAPI: the router helper mounts both routes."""
    from fastapi import FastAPI

    from cmpay_async.integrations.starlette import notify_router

    handled = Handled()
    app = FastAPI()
    app.include_router(
        notify_router(
            processor_for(handled),
            return_path="/cmpay/return",
            success_url=SUCCESS_URL,
            failure_url=FAILURE_URL,
        )
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        await check_over_httpx(client, handled)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp runs on asyncio only
async def test_aiohttp_handlers(anyio_backend: str) -> None:
    """aiohttp, on its own test server."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from cmpay_async.integrations.aiohttp import notify_handler, return_handler

    handled = Handled()
    processor = processor_for(handled)
    app = web.Application()
    app.router.add_post("/cmpay/notify", notify_handler(processor))
    back = return_handler(processor, success_url=SUCCESS_URL, failure_url=FAILURE_URL)
    app.router.add_route("*", "/cmpay/return", back)
    async with TestClient(TestServer(app)) as client:

        async def post(path: str, body: bytes, headers: dict[str, str]) -> Any:
            response = await client.post(path, data=body, headers=headers, allow_redirects=False)
            return response.status, await response.read(), response.headers.get("Location")

        async def get(path: str, query: str) -> tuple[int, str]:
            response = await client.get(f"{path}?{query}", allow_redirects=False)
            return response.status, response.headers["Location"]

        await check_framework(post, get, handled)


def test_flask_views() -> None:
    """Flask's test client (WSGI, sync views)."""
    from flask import Flask

    from cmpay_async.integrations.flask import notify_view, return_view

    handled = Handled()
    processor = processor_for(handled)
    app = Flask("shop")
    app.add_url_rule("/cmpay/notify", view_func=notify_view(processor), methods=["POST"])
    app.add_url_rule(
        "/cmpay/return",
        view_func=return_view(processor, success_url=SUCCESS_URL, failure_url=FAILURE_URL),
        methods=["GET", "POST"],
    )
    client = app.test_client()

    # Each request in a thread of its own, as a threaded WSGI server runs them.
    async def post(path: str, body: bytes, headers: dict[str, str]) -> Any:
        response = await anyio.to_thread.run_sync(
            lambda: client.post(path, data=body, headers=headers)
        )
        return response.status_code, response.data, response.headers.get("Location")

    async def get(path: str, query: str) -> tuple[int, str]:
        response = await anyio.to_thread.run_sync(lambda: client.get(f"{path}?{query}"))
        return response.status_code, response.headers["Location"]

    anyio.run(check_framework, post, get, handled)
    assert not any(handled.loop_running)


def django_ready() -> None:
    """Django configured for view tests (no database, no URLconf needed)."""
    import django
    from django.conf import settings

    if not settings.configured:
        # The same settings as tests/e2e/test_readme_notify.py: whichever runs first configures.
        settings.configure(
            ROOT_URLCONF="readme_django_urls",
            MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
            ALLOWED_HOSTS=["*"],
            SECRET_KEY="test-only",
            INSTALLED_APPS=[],
            DATABASES={},
            USE_TZ=True,
        )
        django.setup()


def django_request(factory: Any, path: str, body: bytes, headers: dict[str, str]) -> Any:
    """A POST of ``body`` with its content type."""
    return factory.post(path, data=body, content_type=headers["content-type"])


def test_django_sync_views() -> None:
    """Django with a plain-function handler: sync, CSRF-exempt views (WSGI and ASGI)."""
    django_ready()
    from django.test import RequestFactory

    from cmpay_async.integrations.django import notify_view, return_view

    handled = Handled()
    processor = processor_for(handled)
    notify = notify_view(processor)
    back = return_view(processor, success_url=SUCCESS_URL, failure_url=FAILURE_URL)
    assert notify.csrf_exempt
    assert back.csrf_exempt
    assert not inspect.iscoroutinefunction(notify)
    factory = RequestFactory()
    views = {"/cmpay/notify": notify, "/cmpay/return": back}

    async def post(path: str, body: bytes, headers: dict[str, str]) -> Any:
        request = django_request(factory, path, body, headers)
        response = await anyio.to_thread.run_sync(views[path], request)
        return response.status_code, response.content, response.get("Location")

    async def get(path: str, query: str) -> tuple[int, str]:
        response = await anyio.to_thread.run_sync(views[path], factory.get(f"{path}?{query}"))
        return response.status_code, response["Location"]

    anyio.run(check_framework, post, get, handled)
    assert not any(handled.loop_running)
    assert 405 == notify(factory.get("/cmpay/notify")).status_code


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # Django's async views run on asyncio
async def test_django_async_views(anyio_backend: str) -> None:
    """Django with an async def handler: async views (ASGI)."""
    django_ready()
    from django.test import AsyncRequestFactory

    from cmpay_async.integrations.django import notify_view, return_view

    handled = Handled()

    async def handler(event: PaymentEvent) -> None:
        handled(event)

    processor = processor_for(handler)
    notify = notify_view(processor)
    back = return_view(processor, success_url=SUCCESS_URL, failure_url=FAILURE_URL)
    assert inspect.iscoroutinefunction(notify)
    assert inspect.iscoroutinefunction(back)
    factory = AsyncRequestFactory()
    views = {"/cmpay/notify": notify, "/cmpay/return": back}

    async def post(path: str, body: bytes, headers: dict[str, str]) -> Any:
        response = await views[path](django_request(factory, path, body, headers))
        return response.status_code, response.content, response.get("Location")

    async def get(path: str, query: str) -> tuple[int, str]:
        response = await views[path](factory.get(f"{path}?{query}"))
        return response.status_code, response["Location"]

    await check_framework(post, get, handled)


def test_a_return_endpoint_needs_both_urls_or_a_policy() -> None:
    """Half a redirect configuration is refused when the endpoint is built."""
    from cmpay_async.integrations import redirect_policy

    with pytest.raises(ConfigurationError, match="success_url and failure_url"):
        redirect_policy(SUCCESS_URL, None, None)
    with pytest.raises(ConfigurationError, match="not both"):
        redirect_policy(SUCCESS_URL, FAILURE_URL, lambda receipt: "/x")


def test_charset_of_reads_the_declared_charset() -> None:
    """Only a declared charset parameter is passed on."""
    from cmpay_async.integrations import charset_of

    assert "GBK" == charset_of('application/x-www-form-urlencoded; charset="GBK"')
    assert None is charset_of("application/x-www-form-urlencoded")
    assert None is charset_of(None)


# -- docs/integrations.md ----------------------------------------------------------------------


def test_docs_integrations_examples(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """docs/integrations.md: each framework's pasted code answers SUCCESS once handled."""
    from tests.support.readme import run_examples

    monkeypatch.setenv("CMPAY_SIGN_KEY", PUBLIC_TEST_KEY)
    monkeypatch.setenv("CMPAY_MERCHANT_ID", PUBLIC_TEST_MERCHANT)
    monkeypatch.setenv("CMPAY_EVENTS_DB", str(tmp_path / "events.db"))
    monkeypatch.setenv("CMPAY_INBOX_DB", str(tmp_path / "inbox.db"))
    django_ready()
    ns = run_examples(
        "integrations-setup",
        "integrations-starlette",
        "integrations-fastapi",
        "integrations-django",
        "integrations-flask",
        "integrations-aiohttp",
        "integrations-redirect",
        "integrations-sync",
        "integrations-inbox",
    )
    paid = ns["PAID"]

    async def over_asgi(app: Any, order_id: str) -> tuple[bytes, str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            notified = await client.post("/cmpay/notify", content=offline(order_id))
            back = await client.post("/cmpay/return", content=page(order_id + "P"))
        return notified.content, back.headers["location"]

    assert (b"SUCCESS", "/orders/paid") == anyio.run(over_asgi, ns["app"], "DOC-ST")
    assert (b"SUCCESS", "/orders/paid") == anyio.run(over_asgi, ns["api"], "DOC-FA")

    flask_client = ns["shop"].test_client()
    assert b"SUCCESS" == flask_client.post("/cmpay/notify", data=offline("DOC-FL")).data

    from django.test import RequestFactory

    notify, back = (pattern.callback for pattern in ns["urlpatterns"])
    request = RequestFactory().post(
        "/cmpay/notify", data=offline("DOC-DJ"), content_type=FORM["content-type"]
    )
    assert b"SUCCESS" == notify(request).content
    request = RequestFactory().get(f"/cmpay/return?{page('DOC-DJP').decode()}")
    assert "/orders/paid" == back(request)["Location"]

    async def over_aiohttp() -> bytes:
        from aiohttp.test_utils import TestClient, TestServer

        async with TestClient(TestServer(ns["web_app"])) as client:
            response = await client.post("/cmpay/notify", data=offline("DOC-AI"))
            return await response.read()

    assert b"SUCCESS" == asyncio.run(over_aiohttp())

    async def own_redirect() -> str:
        from starlette.applications import Starlette

        app = Starlette()
        app.add_route("/", ns["back"], methods=["POST"])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            response = await client.post("/", content=page("DOC-RD"))
        return response.headers["location"]

    assert "/orders/DOC-RD" == anyio.run(own_redirect)
    expected = {"DOC-ST", "DOC-STP", "DOC-FA", "DOC-FAP", "DOC-FL", "DOC-DJ", "DOC-DJP"}
    expected |= {"DOC-AI", "DOC-RD", "SYNC-1", "LATER-1"}
    assert expected == set(paid)


def test_django_store_keeps_the_store_contract(tmp_path: Any) -> None:
    """DjangoStore (in a process of its own: its settings name a database) on both loops."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).parents[2]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.servers.django_store_check",
            str(tmp_path / "shop.db"),
            "integrations-django-settings",  # docs/integrations.md's settings line
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert (0, "ok") == (done.returncode, done.stdout.strip()), done.stderr[-3000:]


def test_process_sync_re_raises_an_interrupt_and_releases_the_claim() -> None:
    """A KeyboardInterrupt in the handler reaches the caller; the next delivery runs it."""
    calls: list[str] = []

    def handler(event: PaymentEvent) -> None:
        calls.append(event.order_id)
        if len(calls) == 1:
            raise KeyboardInterrupt

    processor = processor_for(handler)

    with pytest.raises(KeyboardInterrupt):
        processor.process_sync(offline("K1"))
    assert b"SUCCESS" == processor.process_sync(offline("K1")).body
    assert ["K1", "K1"] == calls


def test_process_result_sync_feeds_reconciliation_through_the_same_path() -> None:
    """A paid query result from sync code is handled once, with its notification after it."""

    handled = Handled()
    processor = processor_for(handled)
    result = query_result("Q2", amount=1250)

    assert processor.process_result_sync(result)
    assert b"SUCCESS" == processor.process_sync(offline("Q2")).body
    assert ["Q2"] == handled.runs


def test_process_sync_works_in_a_forked_child_after_the_parent_used_it() -> None:
    """gunicorn --preload: the child makes its own loop thread (the parent's is not there)."""
    from tests.support.forking import in_child

    handled = Handled()
    processor = processor_for(handled)
    assert b"SUCCESS" == processor.process_sync(offline("P1")).body  # the parent's loop runs

    def child() -> None:
        answer = processor.process_sync(offline("P2"))
        assert b"SUCCESS" == answer.body
        assert ["P1", "P2"] == handled.runs

    assert 0 == in_child(child)
    assert b"SUCCESS" == processor.process_sync(offline("P3")).body  # the parent's still runs
    assert ["P1", "P3"] == handled.runs


def test_receipts_survive_pickling() -> None:
    """A Receipt (answer, notification, error) crosses a process pool intact."""
    import pickle

    processor = processor_for(Handled())
    refused = processor.receive_sync(FORGED)
    accepted = processor.receive_sync(offline("PK1"))

    for receipt in (refused, accepted):
        copy = pickle.loads(pickle.dumps(receipt))
        assert (receipt.ack, receipt.notification, receipt.handled) == (
            copy.ack,
            copy.notification,
            copy.handled,
        )
    assert str(refused.error) == str(pickle.loads(pickle.dumps(refused)).error)


def test_process_sync_refuses_under_gevents_monkey_patching(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where gevent made threads greenlets, a ConfigurationError says so (no handler runs)."""
    import types

    monkey = types.SimpleNamespace(is_module_patched=lambda name: name == "threading")
    monkeypatch.setitem(sys.modules, "gevent.monkey", monkey)
    handled = Handled()

    with pytest.raises(ConfigurationError, match="cannot run under gevent's monkey-patching"):
        processor_for(handled).process_sync(offline("GV1"))
    assert [] == handled.runs


@pytest.mark.anyio
async def test_the_glue_never_answers_success_when_the_store_fails_or_the_handler_raises() -> None:
    """A store that fails: 503 FAIL; a handler that raises: FAIL (the gateway retries both)."""
    from starlette.applications import Starlette

    from cmpay_async import StoreError
    from cmpay_async.integrations.starlette import notify_endpoint

    class BrokenStore(MemoryStore):
        async def claim(self, key: str, *, lease: float) -> Any:
            raise StoreError("down", backend="BrokenStore", operation="claim", maybe_sent=False)

    def raising(event: PaymentEvent) -> None:
        raise LookupError("the shop's database is down")

    broken = processor_for(Handled())
    broken.store = BrokenStore()
    app = Starlette()
    app.add_route("/broken", notify_endpoint(broken), methods=["POST"])
    app.add_route("/raising", notify_endpoint(processor_for(raising)), methods=["POST"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        store_failed = await client.post("/broken", content=offline("X1"))
        handler_failed = await client.post("/raising", content=offline("X2"))

    assert (503, b"FAIL") == (store_failed.status_code, store_failed.content)
    assert (200, b"FAIL") == (handler_failed.status_code, handler_failed.content)
