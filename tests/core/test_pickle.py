"""Errors cross process boundaries (pickle, a process pool) with every attribute intact."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import pickle
from collections.abc import Callable, Iterator

import pytest

import cmpay_async
from cmpay_async import (
    ClientClosedError,
    CmpayError,
    ConfigurationError,
    ConnectError,
    DecodeError,
    DuplicateFieldError,
    EncodingError,
    GatewayError,
    HTTPStatusError,
    PayloadTooLargeError,
    Problem,
    RemoteProtocolError,
    SignatureError,
    SignTypeMismatchError,
    StoreError,
    StoreTimeoutError,
    TransportError,
    TransportTimeoutError,
    UnexpectedMessageError,
    ValidationError,
)

#: Every attribute an error may carry; compared after a round trip.
ATTRIBUTES = (
    "args",
    "code",
    "gateway_message",
    "explanation",
    "hint",
    "verified",
    "maybe_sent",
    "order_id",
    "request_id",
    "problems",
    "field",
    "status_code",
    "excerpt",
    "backend",
    "driver_error",
    "operation",
    "endpoint_host",
)


def _remote(cls: type[RemoteProtocolError]) -> RemoteProtocolError:
    exc = cls("signature does not match", field="hmac")
    exc.status_code, exc.excerpt = 200, "returnCode=IPS0008&hmac=…"
    exc.maybe_sent, exc.order_id, exc.request_id = True, "A1001", "R1"
    return exc


def _transport(cls: type[TransportError]) -> TransportError:
    return cls(
        "ReadTimeout; the request may have reached the gateway",
        maybe_sent=True,
        status_code=502,
        excerpt="<html>",
        order_id="A1001",
        request_id="R1",
    )


def _gateway() -> GatewayError:
    exc = GatewayError(
        "RPM22208",
        "订单号重复",
        explanation="duplicate order",
        hint="use a new orderId",
        verified=False,
    )
    exc.order_id, exc.request_id = "A1001", "R1"
    return exc


def _store(cls: type[StoreError]) -> StoreError:
    return cls(
        "RedisStore failed to claim: TimeoutError: Timeout reading from socket",
        backend="RedisStore",
        operation="claim",
        host="127.0.0.1:6379",
        driver_error="redis.exceptions.TimeoutError",
        maybe_sent=True,
    )


TWO_PROBLEMS = [
    Problem("amount", "must be at least 1", "min_value"),
    Problem("orderId", "required"),
]

#: One realistic instance of every error class; the test below fails when a class is missing.
EXAMPLES: dict[type[CmpayError], Callable[[], CmpayError]] = {
    CmpayError: lambda: CmpayError("plain"),
    ConfigurationError: lambda: ConfigurationError("merchant_id is empty"),
    ValidationError: lambda: ValidationError(TWO_PROBLEMS),
    EncodingError: lambda: EncodingError([Problem("productName", "character '€'", "charset")]),
    ClientClosedError: lambda: ClientClosedError("this CmpayClient is closed"),
    RemoteProtocolError: lambda: _remote(RemoteProtocolError),
    DecodeError: lambda: _remote(DecodeError),
    PayloadTooLargeError: lambda: _remote(PayloadTooLargeError),
    DuplicateFieldError: lambda: _remote(DuplicateFieldError),
    SignatureError: lambda: _remote(SignatureError),
    SignTypeMismatchError: lambda: _remote(SignTypeMismatchError),
    UnexpectedMessageError: lambda: _remote(UnexpectedMessageError),
    GatewayError: _gateway,
    TransportError: lambda: _transport(TransportError),
    ConnectError: lambda: _transport(ConnectError),
    TransportTimeoutError: lambda: _transport(TransportTimeoutError),
    HTTPStatusError: lambda: _transport(HTTPStatusError),
    StoreError: lambda: _store(StoreError),
    StoreTimeoutError: lambda: _store(StoreTimeoutError),
}


def _tree(cls: type[CmpayError]) -> Iterator[type[CmpayError]]:
    yield cls
    for sub in cls.__subclasses__():
        yield from _tree(sub)


def _public_errors() -> set[type[CmpayError]]:
    return {c for c in _tree(CmpayError) if c.__module__.startswith("cmpay_async")}


def _same(expected: CmpayError, actual: CmpayError) -> None:
    assert type(expected) is type(actual)
    assert str(expected) == str(actual)
    for name in ATTRIBUTES:
        assert getattr(expected, name, None) == getattr(actual, name, None), name


def test_every_error_class_has_an_example() -> None:
    """A new error class must be added to EXAMPLES, so that its pickling is tested."""
    assert _public_errors() == set(EXAMPLES)
    assert all(name in cmpay_async.__all__ for name in (c.__name__ for c in EXAMPLES))


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_error_round_trips_through_pickle(cls: type[CmpayError], protocol: int) -> None:
    """Every attribute and the message survive pickling, whatever the class's __init__."""
    original = EXAMPLES[cls]()
    copy = pickle.loads(pickle.dumps(original, protocol=protocol))
    _same(original, copy)


def test_validation_error_keeps_its_problems() -> None:
    """ValidationError's message is not re-read as a list of problems (it was garbled)."""
    copy = pickle.loads(pickle.dumps(ValidationError(TWO_PROBLEMS)))
    assert tuple(TWO_PROBLEMS) == copy.problems
    assert "2 problems: amount: must be at least 1; orderId: required" == str(copy)
    assert ("amount", "orderId") == copy.fields


def test_gateway_error_says_maybe_sent_only_when_unverified() -> None:
    """A verified refusal is a definite answer; an unverified one may hide an accepted order."""
    verified = GatewayError("RPM22208", "", explanation="duplicate", verified=True)
    unverified = GatewayError("IPS0008", "", explanation="bad signature", verified=False)
    assert verified.maybe_sent is False
    assert unverified.maybe_sent is True


def _raise_in_child(name: str) -> None:
    raise EXAMPLES[getattr(cmpay_async, name)]()


@pytest.mark.parametrize("name", ["GatewayError", "TransportTimeoutError", "ValidationError"])
def test_error_raised_in_a_process_pool_arrives_whole(name: str) -> None:
    """A worker process's error reaches the parent with its class and attributes."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        future = pool.submit(_raise_in_child, name)
        with pytest.raises(CmpayError) as info:
            future.result(timeout=60)
    _same(EXAMPLES[getattr(cmpay_async, name)](), info.value)
