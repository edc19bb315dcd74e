"""The README's usage example runs as written."""

from __future__ import annotations

import pytest

from cmpay_async.testing import PUBLIC_TEST_KEY

from .readme import examples, run_examples


def test_client_example_prints_a_cashier_redirect(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The example places an order on the sandbox and prints the cashier URL."""
    monkeypatch.setenv("CMPAY_SIGN_KEY", PUBLIC_TEST_KEY)

    run_examples("client")

    printed = capsys.readouterr().out.strip()
    assert printed.startswith("https://ipos.10086.cn/ips/FormTrans3?sessionId=")


def test_client_example_is_short() -> None:
    """The usage example stays a short example (about ten lines of actual code)."""
    code = [
        line
        for line in examples()["client"].splitlines()
        if line.strip() and not line.startswith(("import", "from", "#"))
    ]
    assert len(code) <= 14
