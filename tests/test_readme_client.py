"""The README's usage example runs as written."""

from __future__ import annotations

import anyio
import httpx
import pytest

from cmpay_async import Order
from cmpay_async._serve import serve_in_thread
from cmpay_async.testing import PUBLIC_TEST_KEY, Sandbox

from .helpers import make_client
from .readme import examples, run_examples


def test_client_example_prints_a_cashier_redirect(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The example places an order on the sandbox over TCP and prints a link that opens."""
    monkeypatch.setenv("CMPAY_SIGN_KEY", PUBLIC_TEST_KEY)
    with serve_in_thread(Sandbox()) as url:
        monkeypatch.setenv("CMPAY_ENDPOINT", f"{url}/ips/cmpayService")

        run_examples("client")

        printed = capsys.readouterr().out.strip()
        assert printed.startswith(f"{url}/ips/FormTrans3?sessionId=")
        cashier = httpx.get(printed)
    assert 200 == cashier.status_code
    assert "¥12.50" in cashier.text


def test_client_example_is_short() -> None:
    """The usage example stays a short example (about ten lines of actual code)."""
    code = [
        line
        for line in examples()["client"].splitlines()
        if line.strip() and not line.startswith(("import", "from", "#"))
    ]
    assert len(code) <= 14


def test_lifecycle_example_runs_three_event_loops_on_one_client(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The module-level client serves three asyncio.run() calls; nothing is in doubt."""
    monkeypatch.setenv("CMPAY_SIGN_KEY", PUBLIC_TEST_KEY)

    namespace = run_examples("lifecycle")

    lines = capsys.readouterr().out.split()
    assert 3 == len(lines)
    assert all("/ips/FormTrans3?sessionId=" in line for line in lines)
    assert 3 == len(set(lines))
    assert [] == namespace["IN_DOUBT"]


def test_blocking_example_places_an_order_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The blocking example's redelivered job reports the order instead of failing."""
    monkeypatch.setenv("CMPAY_SIGN_KEY", PUBLIC_TEST_KEY)

    namespace = run_examples("blocking")

    assert namespace["first"].created
    assert not namespace["again"].created
    assert namespace["client"].closed


def test_hooks_example_prints_each_attempt(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's hooks, on a client of the sandbox: one line per attempt's end."""
    namespace = run_examples("hooks")
    assert namespace["client"].on_request_end is namespace["ended"]

    async def pay() -> None:
        async with make_client(
            httpx.ASGITransport(app=Sandbox()),
            on_request_start=namespace["started"],
            on_request_end=namespace["ended"],
            on_in_doubt=namespace["in_doubt"],
        ) as client:
            order = Order(
                amount=100,
                order_id="HOOKS1",
                product_name="T",
                callback_url="https://shop.example/r",
                notify_url="https://shop.example/n",
            )
            await client.create_payment(order, ip_address="203.0.113.7")

    anyio.run(pay)
    assert "create_payment 1 success 000000" == capsys.readouterr().out.strip()
