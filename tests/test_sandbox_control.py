"""Steering the sandbox from outside Python: faults over HTTP and from the CLI."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cmpay_async import (
    CmpayClient,
    GatewayError,
    Md5Signer,
    Order,
    SignatureError,
    TransportError,
)
from cmpay_async._serve import serve_in_thread
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, Sandbox

from .helpers import make_client
from .queues import ROOT, wait_until

pytestmark = pytest.mark.anyio


def _order(order_id: str, shop: str = "http://shop.test") -> Order:
    return Order(
        amount=1250,
        order_id=order_id,
        product_name="咖啡",
        callback_url=f"{shop}/return",
        notify_url=f"{shop}/notify",
    )


class Shop:
    """Answers every notification SUCCESS."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Drain the body, answer SUCCESS."""
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"SUCCESS"})


@pytest.fixture
def sandbox_process(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`cmpay sandbox` in its own process, a fault armed from its command line."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "sandbox.out"
    command = [sys.executable, "-m", "cmpay_async", "sandbox", "--port", str(port)]
    command += ["--minute-seconds", "0.001", "--fault", "fail_next=IPS0008"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: "armed       : fail_next" in log.read_text(), 30, "the sandbox")
        wait_until(lambda: _listening(port), 30, "the sandbox's port")
        yield url, log
    finally:
        process.terminate()
        process.wait(timeout=20)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


async def test_faults_driven_over_http_from_another_process(
    sandbox_process: tuple[str, Path],
) -> None:
    """CLI fault, then faults posted as JSON: each shows up as its own error class."""
    url, log = sandbox_process
    with serve_in_thread(Shop()) as shop:
        client = CmpayClient(
            merchant_id=PUBLIC_TEST_MERCHANT,
            signer=Md5Signer(PUBLIC_TEST_KEY),
            endpoint=f"{url}/ips/cmpayService",
        )
        async with client, httpx.AsyncClient() as http:
            with pytest.raises(GatewayError) as refused:  # armed by --fault
                await client.create_payment(_order("F1", shop), ip_address="203.0.113.7")
            assert "IPS0008" == refused.value.code

            armed = await http.post(f"{url}/_sandbox/faults", json={"tamper_next": True})
            assert {"armed": ["tamper_next"]} == armed.json()
            with pytest.raises(SignatureError):
                await client.create_payment(_order("F2", shop), ip_address="203.0.113.7")

            await http.post(f"{url}/_sandbox/faults", json={"drop_next": True})
            with pytest.raises(TransportError) as dropped:
                await client.create_payment(_order("F3", shop), ip_address="203.0.113.7")
            assert dropped.value.maybe_sent is True

            payment = await client.create_payment(_order("F4", shop), ip_address="203.0.113.7")
            await http.post(
                f"{url}/_sandbox/faults",
                json={"duplicate_next_notification": {"times": 2, "concurrent": True}},
            )
            paid = await http.post(
                f"{url}/ips/FormTrans3/pay",
                data={"sessionId": payment.pay_url.session_id, "outcome": "pay"},
            )
            assert 200 == paid.status_code

        # The CLI sandbox prints each notification attempt with the shop's answer.
        wait_until(
            lambda: (
                len(re.findall(r"notify OfflineNotify orderId=F4 attempt 1", log.read_text())) == 3
            ),
            30,
            "the three OfflineNotify lines",
        )
    printed = log.read_text()
    line = r"notify OfflineNotify orderId=F4 attempt 1 at minute [\d.]+: HTTP 200 'SUCCESS'"
    assert re.search(line, printed)
    assert 2 == printed.count("orderId=F4 attempt 1 (duplicate)")


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"explode_next": True}, "unknown fault 'explode_next'"),
        ({"drop_next": 1}, "drop_next: give true"),
        ({"fail_next": ""}, "fail_next: give a return code"),
        ({"delay_next": -1}, "delay_next: give seconds"),
        ({"answer_next": {"status": "500"}}, "answer_next: give"),
        ({"duplicate_next_notification": {"times": 0}}, "times must be a positive integer"),
        ([1, 2], "JSON object"),
    ],
)
async def test_bad_fault_requests_are_400_naming_the_problem(body: object, names: str) -> None:
    """Nothing is armed by a request with a bad entry; the answer says which and why."""
    sandbox = Sandbox()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox)) as http:
        answer = await http.post(
            "http://gw.test/_sandbox/faults",
            json={"tamper_next": True, **body} if isinstance(body, dict) else body,
        )
    assert 400 == answer.status_code
    assert names in answer.json()["error"]
    assert "fail_next" in answer.json()["faults"]
    assert sandbox.faults.tamper_answer is False  # all or nothing


async def test_not_json_is_400() -> None:
    """A body that is not JSON is refused, not a crash."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=Sandbox())) as http:
        answer = await http.post("http://gw.test/_sandbox/faults", content=b"fail_next=1")
    assert 400 == answer.status_code


async def test_http_faults_arm_the_same_state_as_the_methods() -> None:
    """Each JSON fault sets what its Python method sets."""
    sandbox = Sandbox()
    faults = {
        "fail_next": "RPM22208",
        "delay_next": 0.5,
        "answer_next": {"status": 502, "body": "busy"},
        "forge_next_notification": True,
        "duplicate_next_notification": 3,
        "lose_next_notifications": True,
        "race_next_page_notify": True,
    }
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox)) as http:
        answer = await http.post("http://gw.test/_sandbox/faults", content=json.dumps(faults))

    assert sorted(faults) == sorted(answer.json()["armed"])
    assert ("RPM22208", 0.5, (502, b"busy")) == (
        sandbox.faults.return_code,
        sandbox.faults.delay,
        sandbox.faults.raw_answer,
    )
    notify = sandbox.notify_faults
    assert (True, 3, False, True, True) == (
        notify.forged,
        notify.duplicates,
        notify.concurrent,
        notify.lost,
        notify.page_at_once,
    )


async def test_in_process_drop_is_a_transport_error_not_a_private_class() -> None:
    """On httpx.ASGITransport a dropped answer reads as it does over TCP."""
    sandbox = Sandbox()
    sandbox.drop_next()
    async with make_client(httpx.ASGITransport(app=sandbox)) as client:
        with pytest.raises(TransportError) as caught:
            await client.create_payment(_order("D1"), ip_address="203.0.113.7")

    assert caught.value.maybe_sent is True
    assert type(caught.value) is TransportError
    assert "_Dropped" not in str(caught.value)
    assert str(caught.value).startswith("RemoteProtocolError: peer closed connection")
    assert "unexpected" not in str(caught.value)
