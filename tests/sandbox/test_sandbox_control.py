"""Steering the sandbox from outside Python: faults over HTTP and from the CLI."""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

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
from cmpay_async.testing import (
    CONTROL_TOKEN_HEADER,
    PUBLIC_TEST_KEY,
    PUBLIC_TEST_MERCHANT,
    Merchant,
    Sandbox,
    SandboxKeyWarning,
)
from tests.support.helpers import make_client
from tests.support.queues import ROOT, wait_until

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


class SandboxProcess(NamedTuple):
    """The URL of a `cmpay sandbox` process and the file its output goes to."""

    url: str
    log: Path


@pytest.fixture
def sandbox_process(tmp_path: Path) -> Iterator[SandboxProcess]:
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
        yield SandboxProcess(url, log)
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
    found = re.search(r"token       : (\S+)", log.read_text())
    assert found is not None
    token = {CONTROL_TOKEN_HEADER: found.group(1)}
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

            armed = await http.post(
                f"{url}/_sandbox/faults", json={"tamper_next": True}, headers=token
            )
            assert {"armed": ["tamper_next"]} == armed.json()
            with pytest.raises(SignatureError):
                await client.create_payment(_order("F2", shop), ip_address="203.0.113.7")

            await http.post(f"{url}/_sandbox/faults", json={"drop_next": True}, headers=token)
            with pytest.raises(TransportError) as dropped:
                await client.create_payment(_order("F3", shop), ip_address="203.0.113.7")
            assert dropped.value.maybe_sent is True

            payment = await client.create_payment(_order("F4", shop), ip_address="203.0.113.7")
            await http.post(
                f"{url}/_sandbox/faults",
                json={"duplicate_next_notification": {"times": 2, "concurrent": True}},
                headers=token,
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
    assert "WARNING" not in printed  # 127.0.0.1 is not exposed
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
            headers={CONTROL_TOKEN_HEADER: sandbox.control_token},
        )
    assert 400 == answer.status_code
    assert names in answer.json()["error"]
    assert "fail_next" in answer.json()["faults"]
    assert sandbox.faults.tamper_answer is False  # all or nothing


async def test_not_json_is_400() -> None:
    """A body that is not JSON (though declared so, with the token) is refused, not a crash."""
    sandbox = Sandbox()
    headers = {"content-type": "application/json", CONTROL_TOKEN_HEADER: sandbox.control_token}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox)) as http:
        answer = await http.post(
            "http://gw.test/_sandbox/faults", content=b"fail_next=1", headers=headers
        )
    assert 400 == answer.status_code
    assert "Expecting value" in answer.json()["error"]


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
        answer = await http.post(
            "http://gw.test/_sandbox/faults",
            content=json.dumps(faults),
            headers={
                "Content-Type": "application/json; charset=utf-8",
                CONTROL_TOKEN_HEADER: sandbox.control_token,
            },
        )

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


# -- who may steer the sandbox -----------------------------------------------------------------


def _refusals(token: str) -> dict[str, dict[str, Any]]:
    """Requests a web page could make, or that lack the token; each must arm nothing."""
    faults = json.dumps({"fail_next": "IPS0008"})
    return {
        "form-post": {"data": {"fail_next": "IPS0008"}},
        "form-post-with-token-field": {"data": {"fail_next": "IPS0008", "token": token}},
        "text-plain-json": {"content": faults, "headers": {"content-type": "text/plain"}},
        "text-plain-with-token": {
            "content": faults,
            "headers": {"content-type": "text/plain", CONTROL_TOKEN_HEADER: token},
        },
        "json-no-token": {"json": {"fail_next": "IPS0008"}},
        "json-wrong-token": {
            "json": {"fail_next": "IPS0008"},
            "headers": {CONTROL_TOKEN_HEADER: token[:-1] + ("A" if token[-1] != "A" else "B")},
        },
        "json-empty-token": {
            "json": {"fail_next": "IPS0008"},
            "headers": {CONTROL_TOKEN_HEADER: ""},
        },
    }


EXPECTED_REFUSALS = {
    "form-post": (415, "application/json"),
    "form-post-with-token-field": (415, "application/json"),
    "text-plain-json": (415, "application/json"),
    "text-plain-with-token": (415, "application/json"),
    "json-no-token": (403, "missing or wrong X-Sandbox-Token"),
    "json-wrong-token": (403, "missing or wrong X-Sandbox-Token"),
    "json-empty-token": (403, "missing or wrong X-Sandbox-Token"),
}


async def test_the_control_endpoint_over_tcp_takes_only_json_with_the_token() -> None:
    """Form posts, other content types and a missing or wrong token are refused with a reason
    and arm nothing; JSON with the sandbox's token arms the fault."""
    sandbox = Sandbox()
    with serve_in_thread(sandbox) as url:
        async with httpx.AsyncClient() as http:
            seen = {}
            for name, request in _refusals(sandbox.control_token).items():
                answer = await http.post(f"{url}/_sandbox/faults", **request)
                reason = answer.json()["error"]
                expected = EXPECTED_REFUSALS[name]
                seen[name] = (answer.status_code, expected[1] if expected[1] in reason else reason)
                assert sandbox.faults.return_code is None, name
            preflight = await http.options(
                f"{url}/_sandbox/faults",
                headers={
                    "origin": "https://evil.example",
                    "access-control-request-method": "POST",
                    "access-control-request-headers": "content-type,x-sandbox-token",
                },
            )
            accepted = await http.post(
                f"{url}/_sandbox/faults",
                json={"fail_next": "IPS0008"},
                headers={CONTROL_TOKEN_HEADER: sandbox.control_token},
            )
            orders = await http.get(f"{url}/_sandbox/orders")  # a read: no token needed

    assert EXPECTED_REFUSALS == seen
    assert "access-control-allow-origin" not in preflight.headers
    assert (200, {"armed": ["fail_next"]}) == (accepted.status_code, accepted.json())
    assert "IPS0008" == sandbox.faults.return_code
    assert (200, []) == (orders.status_code, orders.json())


def test_each_sandbox_has_its_own_control_token() -> None:
    """Random per instance and long enough not to be guessed, unless one is given."""
    tokens = {Sandbox().control_token for _ in range(3)}

    assert 3 == len(tokens)
    assert all(len(token) >= 32 for token in tokens)
    assert "fixed-for-ci" == Sandbox(control_token="fixed-for-ci").control_token


# -- exposure and keys ------------------------------------------------------------------------


def test_serving_beyond_loopback_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """serve_in_thread on 0.0.0.0 logs a WARNING; on 127.0.0.1 it says nothing."""
    caplog.set_level(logging.DEBUG, logger="cmpay_async")
    with serve_in_thread(Sandbox(), host="127.0.0.1"):
        pass
    assert [] == [r for r in caplog.records if r.name.startswith("cmpay_async")]

    with serve_in_thread(Sandbox(), host="0.0.0.0"):  # noqa: S104 - the case under test
        pass

    warned = [r for r in caplog.records if r.name == "cmpay_async.sandbox"]
    assert [logging.WARNING] == [r.levelno for r in warned]
    assert (
        warned[0]
        .getMessage()
        .startswith(
            "the sandbox listens on 0.0.0.0, beyond loopback: anyone who can reach this machine"
        )
    )


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])  # noqa: S104
def test_cmpay_sandbox_warns_on_stderr_beyond_loopback(
    tmp_path: Path, host: str, warned: bool
) -> None:
    """`cmpay sandbox --host 0.0.0.0` prints a WARNING line on stderr; loopback does not."""
    out, err = tmp_path / "out", tmp_path / "err"
    command = [sys.executable, "-m", "cmpay_async", "sandbox", "--host", host, "--port", "0"]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, stdout=stdout, stderr=stderr)
    try:
        wait_until(lambda: "token       :" in out.read_text(), 30, "the sandbox's banner")
    finally:
        process.terminate()
        process.wait(timeout=20)

    lines = [line for line in err.read_text().splitlines() if "WARNING" in line]
    expected = f"cmpay sandbox: WARNING: the sandbox listens on {host}, beyond loopback"
    assert warned == any(line.startswith(expected) for line in lines)
    assert warned == bool(lines)
    token = re.search(r"token       : (\S+)", out.read_text())
    assert token is not None
    assert len(token.group(1)) >= 32


def test_a_sandbox_given_another_signkey_warns() -> None:
    """A merchant whose MD5 signKey is not the public test key draws a SandboxKeyWarning,
    which never quotes the key."""
    key = "Real" * 16
    with pytest.warns(SandboxKeyWarning) as caught:
        Sandbox(merchants=[Merchant.md5("888000000000009", key)])

    assert 1 == len(caught)
    message = str(caught[0].message)
    assert "888000000000009 signs with a signKey that is not the public test key" in message
    assert "never give it a real merchant's key" in message
    assert key[:8] not in message


def test_the_public_test_key_draws_no_warning() -> None:
    """The default sandbox, and another merchant id on the public test key, say nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Sandbox()
        Sandbox(merchants=[Merchant.md5("888000000000009", PUBLIC_TEST_KEY)])
