"""The README's usage example runs as written."""

from __future__ import annotations

import httpx
import pytest

from cmpay_async._serve import serve_in_thread
from cmpay_async.testing import PUBLIC_TEST_KEY, Sandbox

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
