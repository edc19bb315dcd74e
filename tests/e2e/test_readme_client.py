"""The README's usage example runs as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from cmpay_async import Order
from cmpay_async._serve import serve_in_thread
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, Sandbox
from tests.support.helpers import make_client
from tests.support.readme import README, ROOT, examples, run_examples


def test_client_example_prints_a_cashier_redirect(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The example, pasted twice, places two orders on one sandbox over TCP and prints two
    links that open (a fixed order id would fail the second time with RPM22208)."""
    monkeypatch.setenv("CMPAY_SIGN_KEY", PUBLIC_TEST_KEY)
    monkeypatch.setenv("CMPAY_MERCHANT_ID", PUBLIC_TEST_MERCHANT)
    sandbox = Sandbox()
    with serve_in_thread(sandbox) as url:
        monkeypatch.setenv("CMPAY_ENDPOINT", f"{url}/ips/cmpayService")

        run_examples("client")
        run_examples("client")

        printed = capsys.readouterr().out.split()
        assert 2 == len(set(printed))
        assert all(link.startswith(f"{url}/ips/FormTrans3?sessionId=") for link in printed)
        cashiers = [httpx.get(link) for link in printed]
    assert [200, 200] == [cashier.status_code for cashier in cashiers]
    assert all("¥12.50" in cashier.text for cashier in cashiers)
    order_ids = [order.order_id for order in sandbox.orders.values()]
    assert all(order_id.isdigit() and len(order_id) <= 50 for order_id in order_ids)


def _readme_shell_line(start: str) -> str:
    lines = [line for line in README.read_text("utf-8").splitlines() if line.startswith(start)]
    assert 1 == len(lines), f"README has no single line starting {start!r}"
    return lines[0]


def test_readme_shell_setup_gives_the_sandbox_merchant_and_key(tmp_path: Path) -> None:
    """The README's two `export` lines, run by bash with `python` on PATH, set the public test
    merchant id and key the examples read."""
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    # A wrapper, not a symlink: a venv's interpreter reached through a link elsewhere loses
    # the venv (its pyvenv.cfg is looked up beside the link).
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    script = "\n".join(
        [
            _readme_shell_line("export CMPAY_MERCHANT_ID="),
            _readme_shell_line("export CMPAY_SIGN_KEY="),
            'printf "%s\\n%s" "$CMPAY_MERCHANT_ID" "$CMPAY_SIGN_KEY"',
        ]
    )
    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert [PUBLIC_TEST_MERCHANT, PUBLIC_TEST_KEY] == done.stdout.splitlines()


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
