"""The sandbox's cashier in a real browser: Debian's Chromium driven by Playwright.

For the web and the mobile (WAP) cashier, Pay and Fail: open the pay link from
``create_payment``, press the button, follow the auto-submitted PageNotify to a small shop
over TCP, and check that the shop verified it and that the OfflineNotify arrived. Any
JavaScript console error fails the test. Screenshots of every page go to
``tests/artifacts/browser/`` (git-ignored). Chromium is Debian's (``/usr/bin/chromium``):
Playwright's own browser download is neither needed nor attempted.
"""

from __future__ import annotations

import html
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from cmpay_async import (
    BlockingCmpayClient,
    Channel,
    CmpayError,
    Md5Signer,
    Order,
    PageNotify,
    verify_notification,
)
from cmpay_async._asgi import read_request, respond
from cmpay_async._serve import serve_in_thread
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, Sandbox, SandboxClock
from tests.support.queues import unavailable

#: Browser tests start Chromium: run once by `nox -s integration`, not per Python.
pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("CMPAY_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[1] / "artifacts" / "browser"
VERIFIER = Md5Signer(PUBLIC_TEST_KEY)


class Shop:
    """A merchant over TCP: /return shows the verified PageNotify, /notify answers SUCCESS."""

    def __init__(self) -> None:
        self.pages: list[PageNotify] = []
        self.offline: list[Any] = []
        self.refused = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Verify whatever arrives; never answer SUCCESS to anything unverified."""
        if scope["type"] != "http":
            return
        request = await read_request(scope, receive)
        try:
            note = verify_notification(
                request.body, verifier=VERIFIER, merchant_id=PUBLIC_TEST_MERCHANT
            )
        except CmpayError as exc:
            with self._lock:
                self.refused += 1
            await respond(send, 400, f"refused: {exc}".encode())
            return
        if request.path == "/notify":
            with self._lock:
                self.offline.append(note)
            await respond(send, 200, b"SUCCESS")
            return
        assert isinstance(note, PageNotify)
        with self._lock:
            self.pages.append(note)
        outcome = "paid" if note.paid else "not paid"
        page = (
            '<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
            "<title>Shop</title></head><body>"
            f'<h1 id="result">Order {html.escape(note.order_id)}: {outcome}</h1>'
            f"<p>PageNotify verified, {note.amount} fen, payNo {html.escape(note.pay_no)}</p>"
            "</body></html>"
        )
        await respond(send, 200, page.encode(), "text/html; charset=utf-8")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright, or a visible skip (a failure in CI)."""
    if not Path(CHROMIUM).exists():
        unavailable(f"no Chromium at {CHROMIUM} (apt install chromium fonts-noto-cjk)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (the tests dependency group has it)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class World(NamedTuple):
    """The sandbox's URL, the shop's URL, the shop, and a client of the sandbox."""

    gateway: str
    shop_url: str
    shop: Shop
    client: BlockingCmpayClient


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """The sandbox gateway and the shop, both over TCP, and a client of the sandbox."""
    shop = Shop()
    sandbox = Sandbox(clock=SandboxClock(0.001))
    with serve_in_thread(sandbox) as gateway, serve_in_thread(shop, lifespan="off") as shop_url:
        client = BlockingCmpayClient(
            merchant_id=PUBLIC_TEST_MERCHANT,
            signer=Md5Signer(PUBLIC_TEST_KEY),
            endpoint=f"{gateway}/ips/cmpayService",
            callback_url=f"{shop_url}/return",
            notify_url=f"{shop_url}/notify",
        )
        with client:
            yield World(gateway, shop_url, shop, client)


_CALLER = ThreadPoolExecutor(1, thread_name_prefix="shop-backend")


def _create_payment(client: BlockingCmpayClient, order: Order, **kw: Any) -> Any:
    """The shop's backend call, on a thread of its own: Playwright's sync API runs an event
    loop in the test's thread, where a blocking client refuses to block."""
    return _CALLER.submit(client.create_payment, order, **kw).result(timeout=60)


def _watch(page: Any) -> list[str]:
    """Collect console errors and uncaught page errors."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def _wait(condition: Any, what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)  # polling another thread's record, not measuring time


@pytest.mark.parametrize("channel", [Channel.WEB, Channel.WAP], ids=["web", "wap"])
@pytest.mark.parametrize("button", ["Pay", "Fail"])
def test_the_buyer_pays_or_fails_in_a_real_browser(
    chromium: Any, world: tuple[str, str, Shop, BlockingCmpayClient], channel: Channel, button: str
) -> None:
    """Cashier → button → auto-submitted PageNotify verified by the shop → OfflineNotify."""
    _gateway, shop_url, shop, client = world
    order_id = f"BR{channel.name}{button}{int(time.time() * 1000) % 10**8}"
    payment = _create_payment(
        client,
        Order(amount=1250, order_id=order_id, product_name="咖啡 Coffee"),
        ip_address="203.0.113.7",
        channel=channel,
    )
    mobile = channel is Channel.WAP
    context = chromium.new_context(
        viewport={"width": 390, "height": 844} if mobile else {"width": 1000, "height": 700},
        is_mobile=mobile,
        locale="zh-CN",
    )
    page = context.new_page()
    errors = _watch(page)
    name = f"{channel.name.lower()}-{button.lower()}"
    try:
        page.goto(payment.pay_url.redirect_url)
        assert ("/ips/WAPCashier" if mobile else "/ips/FormTrans3") in page.url
        assert "¥12.50" in page.content()
        assert "咖啡 Coffee" in page.content()
        page.screenshot(path=str(ARTIFACTS / f"{name}-1-cashier.png"), full_page=True)

        with page.expect_navigation(url=f"{shop_url}/return"):
            page.get_by_role("button", name=button).click()
        page.wait_for_selector("#result")
        page.screenshot(path=str(ARTIFACTS / f"{name}-2-shop.png"), full_page=True)

        expected = "paid" if button == "Pay" else "not paid"
        assert f"Order {order_id}: {expected}" == page.inner_text("#result")
        note = next(n for n in shop.pages if n.order_id == order_id)
        assert (button == "Pay") is note.paid
        assert 1250 == note.amount
        _wait(lambda: any(n.order_id == order_id for n in shop.offline), "the OfflineNotify")
        offline = next(n for n in shop.offline if n.order_id == order_id)
        assert offline.pay_no == note.pay_no
        assert 0 == shop.refused
    finally:
        context.close()
    assert [] == errors


def test_the_form_redirect_page_takes_the_buyer_to_the_cashier(
    chromium: Any, world: tuple[str, str, Shop, BlockingCmpayClient]
) -> None:
    """`pay_url.form_html()` served as a page auto-submits to the cashier, without errors."""
    gateway, _, _, client = world
    payment = _create_payment(
        client,
        Order(amount=990, order_id=f"FORM{int(time.time() * 1000) % 10**8}", product_name="茶"),
        ip_address="203.0.113.7",
    )
    context = chromium.new_context(locale="zh-CN")
    page = context.new_page()
    errors = _watch(page)
    try:
        with page.expect_navigation(url=f"{gateway}/ips/FormTrans3"):
            page.set_content(payment.pay_url.form_html())
        page.wait_for_selector("button")
        assert "¥9.90" in page.content()
        page.screenshot(path=str(ARTIFACTS / "form-redirect-cashier.png"), full_page=True)
    finally:
        context.close()
    assert [] == errors
