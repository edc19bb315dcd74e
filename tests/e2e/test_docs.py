"""The documentation's code: every Python block of README.md and docs/ is run by a test."""

from __future__ import annotations

import anyio
import pytest

from cmpay_async import Md5Signer, NotificationProcessor, PaymentEvent
from cmpay_async.stores import MemoryStore
from cmpay_async.testing import PUBLIC_TEST_KEY
from tests.support.readme import examples, run_examples, unmarked


def test_every_python_block_is_a_marked_example() -> None:
    """A block without an `<!-- example: NAME -->` marker would be run by no test."""
    assert [] == unmarked()


def test_every_example_is_run_by_some_test() -> None:
    """Each marked example's name appears in a test module (so a test runs it)."""
    from pathlib import Path

    tests = "".join(p.read_text("utf-8") for p in Path(__file__).parents[1].glob("**/test_*.py"))
    missing = [name for name in examples() if f'"{name}"' not in tests]
    assert [] == missing


def test_after_payment_queries_refunds_and_opens_the_mobile_cashier(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/payments.md: query a paid order, refund part of it, place a WAP order."""
    namespace = run_examples("after-payment")
    anyio.run(namespace["main"])

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("1250 ")
    assert "500 SUCCESS" == lines[1]
    assert "http://cmpay-sandbox.invalid/ips/WAPCashier" == lines[2]


def test_signing_example_reproduces_the_protocol_vector(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/signing.md prints PROTOCOL.md's OrderQuery source and hmac."""
    run_examples("signing")

    first, second = capsys.readouterr().out.splitlines()
    assert (
        "8880099411200012011/3/9 15:34:47MD5OrderQuery2.0.02011030953515 "
        "c0353365e28b13e9789973fbec15a9ef"
    ) == first
    assert second.startswith("hmac: signature does not match")


@pytest.mark.anyio
async def test_reconcile_example_feeds_the_processor() -> None:
    """docs/notifications.md: a paid order with every notification lost is handled once."""
    import datetime as dt

    import httpx

    from cmpay_async import Order
    from cmpay_async.testing import Sandbox
    from tests.support.helpers import make_client

    sandbox = Sandbox()
    seen: list[PaymentEvent] = []

    async def handler(event: PaymentEvent) -> None:
        seen.append(event)

    processor = NotificationProcessor(
        verifier=Md5Signer(PUBLIC_TEST_KEY),
        merchant_id="888009941120001",
        store=MemoryStore(),
        handler=handler,
    )
    namespace = run_examples("reconcile")
    async with make_client(httpx.ASGITransport(app=sandbox)) as client:
        order = Order(
            amount=700,
            order_id="LOST1",
            product_name="T",
            callback_url="https://shop.example/r",
            notify_url="https://shop.example/n",
        )
        await client.create_payment(order, ip_address="203.0.113.7")
        sandbox.settle(sandbox.order("LOST1"), paid=True)
        an_hour_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
        for _ in range(2):  # a second run finds it handled: the handler does not run again
            await namespace["reconcile_pending"](client, processor, [("LOST1", an_hour_ago)])

    assert [("LOST1", "reconciliation", True, 700)] == [
        (e.order_id, e.source, e.paid, e.amount) for e in seen
    ]


def test_guarantees_example_declares_the_order_id_form(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/guarantees.md verifies a signed notification with a declared order-id form."""
    run_examples("guarantees-pattern")

    assert "201103091030298930 1250 True" == capsys.readouterr().out.strip()


def test_every_recipe_is_on_the_recipes_page() -> None:
    """docs/recipes.md includes each module of recipes/ from its file (not a pasted copy)."""
    from pathlib import Path

    root = Path(__file__).parents[2]
    page = (root / "docs" / "recipes.md").read_text("utf-8")
    modules = sorted(p.name for p in (root / "recipes").glob("*.py") if p.name != "__init__.py")
    missing = [name for name in modules if f'--8<-- "recipes/{name}"' not in page]
    assert modules
    assert [] == missing
