"""BlockingCmpayClient's surface: CmpayClient's own parameters, and only its public API."""

from __future__ import annotations

import ast
import inspect
import logging
import threading
from pathlib import Path

import pytest

import cmpay_async
from cmpay_async import BlockingCmpayClient, CmpayClient, Md5Signer, RetryPolicy, Timeouts
from cmpay_async._serve import serve_in_thread
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, Sandbox
from tests.support.helpers import valid_order

BLOCKING_SOURCE = Path(cmpay_async.__file__).parent / "_blocking.py"


def test_the_constructor_takes_a_client_or_exactly_the_async_clients_parameters() -> None:
    """What inspect (and help()) shows: an optional client, then CmpayClient's keywords."""
    blocking = list(inspect.signature(BlockingCmpayClient).parameters.values())
    asynchronous = list(inspect.signature(CmpayClient).parameters.values())

    assert ("client", inspect.Parameter.POSITIONAL_ONLY, None) == (
        blocking[0].name,
        blocking[0].kind,
        blocking[0].default,
    )
    assert asynchronous == blocking[1:]


def test_the_keywords_build_the_client_underneath() -> None:
    """Each keyword given to the blocking client is the async client's setting."""
    timeouts, retry = Timeouts(total=7.0), RetryPolicy(attempts=1)

    def doubt(_: object) -> None:
        pass

    client = BlockingCmpayClient(
        merchant_id="M1",
        signer=Md5Signer(PUBLIC_TEST_KEY),
        endpoint="https://gw.example/ips",
        timeouts=timeouts,
        retry=retry,
        on_in_doubt=doubt,
        notify_url="https://shop.example/n",
    ).client

    assert ("M1", "https://gw.example/ips", timeouts, retry, doubt, "https://shop.example/n") == (
        client.merchant_id,
        client.endpoint,
        client.timeouts,
        client.retry,
        client.on_in_doubt,
        client.notify_url,
    )


def test_the_facade_reaches_no_private_attribute_of_another_object() -> None:
    """Only its own underscored names: the async client is used through its public API."""
    tree = ast.parse(BLOCKING_SOURCE.read_text(encoding="utf-8"))
    reaches = [
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]

    assert [] == reaches


def test_closing_after_calls_from_two_threads_closes_everything_without_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each thread's pool closes with its loop; the client underneath ends closed, and no
    "pools still open in other event loops" warning is logged on the way."""
    with serve_in_thread(Sandbox()) as url:
        client = BlockingCmpayClient(
            merchant_id=PUBLIC_TEST_MERCHANT,
            signer=Md5Signer(PUBLIC_TEST_KEY),
            endpoint=f"{url}/ips/cmpayService",
        )

        def pay(suffix: str) -> None:
            client.create_payment(valid_order(order_id=f"BLK2{suffix}"), ip_address="127.0.0.1")

        helper = threading.Thread(target=pay, args=("A",))
        helper.start()
        helper.join(timeout=30)
        pay("B")
        caplog.set_level(logging.WARNING, logger="cmpay_async")
        client.close()

    assert (True, True) == (client.closed, client.client.closed)
    assert [] == [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
