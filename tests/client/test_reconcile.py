"""Reconciliation: finds the paid orders whose notifications were all lost, and no others."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from cmpay_async import (
    CmpayClient,
    ConfigurationError,
    Md5Signer,
    NotificationProcessor,
    OrderQueryResult,
    OrderState,
    PaymentEvent,
    PendingOrder,
)
from cmpay_async._cli import main
from cmpay_async._reconcile import due
from cmpay_async._serve import serve_in_thread
from cmpay_async.stores import MemoryStore
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, Sandbox
from tests.support.helpers import _AsyncMock, make_client, valid_order

pytestmark = pytest.mark.anyio

CST = dt.timezone(dt.timedelta(hours=8))
NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=CST)


@pytest.mark.parametrize(
    ("age", "last_checked_ago", "expected"),
    [
        (dt.timedelta(seconds=30), None, False),  # the notification may still come
        (dt.timedelta(minutes=5), None, True),
        (dt.timedelta(minutes=5), dt.timedelta(seconds=30), False),  # asked a moment ago
        (dt.timedelta(minutes=5), dt.timedelta(minutes=1), True),
        (dt.timedelta(hours=3), dt.timedelta(minutes=9), False),
        (dt.timedelta(hours=3), dt.timedelta(minutes=10), True),
        (dt.timedelta(days=3), dt.timedelta(minutes=59), False),
        (dt.timedelta(days=3), dt.timedelta(hours=1), True),
        (dt.timedelta(days=40), None, False),  # for a person to look at
        (dt.timedelta(minutes=1), None, True),  # the first tier ends at exactly one minute
        (dt.timedelta(days=31), None, False),  # and the last at exactly 31 days
        # Each tier boundary: "up to 1 hour" every minute, then every 10 minutes ...
        (dt.timedelta(minutes=59, seconds=59), dt.timedelta(minutes=5), True),
        (dt.timedelta(hours=1), dt.timedelta(minutes=5), False),
        (dt.timedelta(hours=1), dt.timedelta(minutes=10), True),
        # ... "up to 24 hours" every 10 minutes, then hourly ...
        (dt.timedelta(hours=23, minutes=59), dt.timedelta(minutes=30), True),
        (dt.timedelta(days=1), dt.timedelta(minutes=30), False),
        (dt.timedelta(days=1), dt.timedelta(hours=1), True),
        # ... "up to 31 days" hourly, then never.
        (dt.timedelta(days=30, hours=23), None, True),
        (dt.timedelta(days=30, hours=23), dt.timedelta(minutes=59), False),
    ],
)
def test_the_schedule_backs_off_with_age(
    age: dt.timedelta, last_checked_ago: dt.timedelta | None, expected: bool
) -> None:
    """1 min of grace, then every minute, every 10 minutes after 1 h, hourly after 24 h."""
    order = PendingOrder(
        order_id="A",
        created_at=NOW - age,
        last_checked=None if last_checked_ago is None else NOW - last_checked_ago,
    )
    assert expected is due(order, NOW)


async def test_two_hundred_lost_notifications_found_within_the_bound() -> None:
    """200 pending orders, 100 of them paid with every notification lost: exactly those 100."""
    sandbox = Sandbox()
    inner = httpx.ASGITransport(app=sandbox)
    in_flight = peak = 0

    async def counting(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await anyio.sleep(0.001)  # let the queries overlap
            return await inner.handle_async_request(request)
        finally:
            in_flight -= 1

    async with make_client(_AsyncMock(counting), max_connections=50) as client:
        ids = [f"REC{i:03d}" for i in range(200)]
        for n, order_id in enumerate(ids):
            await client.create_payment(valid_order(order_id=order_id), ip_address="1.2.3.4")
            if n % 2 == 0:
                sandbox.settle(sandbox.order(order_id), paid=True)  # its notifications: lost
        young = PendingOrder(order_id=ids[1], created_at=NOW - dt.timedelta(seconds=10))
        pending = [PendingOrder(order_id=i, created_at=NOW - dt.timedelta(minutes=5)) for i in ids]
        in_flight = peak = 0
        seen = sandbox.requests_seen
        reconciling = client.reconcile([young, *pending], now=NOW, concurrency=6, per_second=10_000)
        results = [r async for r in reconciling]

    paid = sorted(r.order_id for r in results if r.state is OrderState.PAID)
    assert ids[::2] == paid
    assert 200 == len(results)
    assert {OrderState.PAID, OrderState.PENDING} == {r.state for r in results}
    assert 200 == sandbox.requests_seen - seen  # the young order was not asked about
    assert 1 < peak <= 6


async def test_a_notification_during_reconciliation_runs_the_handler_once() -> None:
    """The processor sees the same payment from a query and from a notification: one run."""
    sandbox = Sandbox()
    seen: list[PaymentEvent] = []

    async def handler(event: PaymentEvent) -> None:
        await anyio.sleep(0)
        seen.append(event)

    processor = NotificationProcessor(
        verifier=Md5Signer(PUBLIC_TEST_KEY),
        merchant_id=PUBLIC_TEST_MERCHANT,
        store=MemoryStore(),
        handler=handler,
    )
    async with make_client(httpx.ASGITransport(app=sandbox)) as client:
        await client.create_payment(valid_order(order_id="LATE1"), ip_address="1.2.3.4")
        _, offline = sandbox.settle(sandbox.order("LATE1"), paid=True)
        results: list[OrderQueryResult] = []
        pending = [PendingOrder(order_id="LATE1", created_at=NOW - dt.timedelta(minutes=5))]
        async for result in client.reconcile(pending, now=NOW):
            results.append(result)

    async with anyio.create_task_group() as tg:
        tg.start_soon(processor.process_result, results[0])
        tg.start_soon(processor.process, offline)
    await processor.process(offline)  # the gateway's retry, answered from the store
    await processor.process_result(results[0])

    assert 1 == len(seen)
    assert seen[0].paid


def test_the_client_offers_reconcile() -> None:
    """CmpayClient.reconcile is the entry point."""
    client = CmpayClient(merchant_id="M", signer=Md5Signer(PUBLIC_TEST_KEY))
    assert callable(client.reconcile)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"concurrency": 0}, "concurrency must be a whole number >= 1, not 0"),
        ({"concurrency": True}, "concurrency must be a whole number >= 1, not True"),
        ({"concurrency": 2.5}, "concurrency must be a whole number >= 1, not 2.5"),
        ({"per_second": 0}, "per_second must be a number > 0, not 0"),
        ({"per_second": -1.0}, "per_second must be a number > 0, not -1.0"),
        ({"per_second": float("inf")}, "per_second must be a number > 0, not inf"),
        ({"per_second": "20"}, "per_second must be a number > 0, not '20'"),
    ],
)
async def test_unusable_settings_are_configuration_errors(
    setting: dict[str, Any], message: str
) -> None:
    """A setting no reconciliation can run with is named, before any query is sent."""
    sent: list[httpx.Request] = []

    async def recording(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    pending = [PendingOrder(order_id="CFG1", created_at=NOW - dt.timedelta(minutes=5))]
    async with make_client(_AsyncMock(recording)) as client:
        with pytest.raises(ConfigurationError) as caught:
            async for _ in client.reconcile(pending, now=NOW, **setting):
                pass

    assert message == str(caught.value)
    assert caught.value.maybe_sent is False
    assert [] == sent


async def test_queries_start_no_faster_than_the_rate_limit() -> None:
    """per_second=100: the i-th query starts no sooner than (i - 1) x 10 ms after the first.

    Measured where requests reach the transport, so each start may lag its slot a little
    (scheduling); one slot of slack absorbs that without letting a missing limit pass (15
    unlimited queries start within a few ms).
    """
    sandbox = Sandbox()
    inner = httpx.ASGITransport(app=sandbox)
    starts: list[float] = []

    async def stamping(request: httpx.Request) -> httpx.Response:
        if b"type=OrderQuery" in request.content:
            starts.append(anyio.current_time())
        return await inner.handle_async_request(request)

    async with make_client(_AsyncMock(stamping)) as client:
        pending = [
            PendingOrder(order_id=f"RATE{i}", created_at=NOW - dt.timedelta(minutes=5))
            for i in range(15)
        ]
        results = [r async for r in client.reconcile(pending, now=NOW, per_second=100)]

    assert 15 == len(results)
    assert all(r.state is OrderState.NOT_FOUND for r in results)
    late = [i for i, t in enumerate(starts) if t - starts[0] < (i - 1) * 0.01 - 1e-4]
    assert [] == late


def test_cmpay_reconcile_prints_one_line_per_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command reads order ids (and creation times) and prints each order's state."""
    sandbox = Sandbox()
    with serve_in_thread(sandbox) as url:
        endpoint = f"{url}/ips/cmpayService"

        async def place() -> None:
            async with make_client(httpx.AsyncHTTPTransport(), endpoint=endpoint) as client:
                for order_id in ("CLI1", "CLI2"):
                    await client.create_payment(
                        valid_order(order_id=order_id), ip_address="1.2.3.4"
                    )

        anyio.run(place)
        sandbox.settle(sandbox.order("CLI1"), paid=True)
        young = dt.datetime.now(CST).isoformat()
        orders = tmp_path / "pending.txt"
        orders.write_text(f"# order id, created at\nCLI1\nCLI2\nCLI3\nCLI4 {young}\n")

        code = main(
            ["reconcile", "--endpoint", endpoint, "--public-test-key", "--file", str(orders)]
        )

    lines = capsys.readouterr().out.splitlines()
    assert 0 == code
    assert [
        f"CLI1\tpaid\t100\t{sandbox.order('CLI1').pay_no}",
        "CLI2\tpending\t100\t",
        "CLI3\tnot_found\t\t",
        "CLI4\tnot-due",
    ] == lines


def test_slow_rates_are_allowed() -> None:
    """A rate under one query a second (0.5: one every 2 s) is a valid setting."""
    from cmpay_async._reconcile import reconcile_orders

    async def query(order_id: str) -> OrderQueryResult:
        raise AssertionError("not due: never asked")

    async def run() -> list[OrderQueryResult]:
        fresh = [PendingOrder(order_id="S1", created_at=NOW)]
        return [r async for r in reconcile_orders(query, fresh, now=NOW, per_second=0.5)]

    assert [] == anyio.run(run)


def test_cmpay_reconcile_refuses_the_test_key_without_an_endpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The public test key with no --endpoint would query production: refused, naming why."""

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the command sent a query")

    monkeypatch.setattr(CmpayClient, "reconcile", no_network)
    orders = tmp_path / "pending.txt"
    orders.write_text("CLI1\n")

    code = main(["reconcile", "--public-test-key", "--file", str(orders)])

    err = capsys.readouterr().err
    assert 2 == code
    assert "--public-test-key needs --endpoint" in err
    assert "http://127.0.0.1:8800/ips/cmpayService" in err


def test_cmpay_reconcile_names_where_the_merchant_id_comes_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No merchant id: the error names both the option and the environment variable."""
    monkeypatch.delenv("CMPAY_MERCHANT_ID", raising=False)
    monkeypatch.setenv("CMPAY_SIGN_KEY", PUBLIC_TEST_KEY)
    orders = tmp_path / "pending.txt"
    orders.write_text("CLI1\n")

    code = main(["reconcile", "--file", str(orders)])

    err = capsys.readouterr().err
    assert 2 == code
    assert "merchant id is empty: pass --merchant-id or set $CMPAY_MERCHANT_ID" in err
    assert PUBLIC_TEST_KEY not in err


def test_cmpay_reconcile_fails_when_an_order_stays_unanswered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gateway that answers nothing: each order is 'unanswered' and the exit status is 1."""
    sandbox = Sandbox()
    with serve_in_thread(sandbox) as url:
        endpoint = f"{url}/ips/cmpayService"
    # The server has stopped: every connection to its port is refused.
    orders = tmp_path / "pending.txt"
    orders.write_text("CLI1\nCLI2\n")

    code = main(["reconcile", "--endpoint", endpoint, "--public-test-key", "--file", str(orders)])

    out = capsys.readouterr()
    assert ["CLI1\tunanswered", "CLI2\tunanswered"] == out.out.splitlines()
    assert 1 == code
    assert "2 order(s) unanswered" in out.err
