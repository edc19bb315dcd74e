"""The httpx-to-library translation table: every httpx exception class has its row."""

from __future__ import annotations

import inspect

import httpx
import pytest

from cmpay_async import ConnectError, TransportError, TransportTimeoutError
from cmpay_async._transport import TRANSLATION, translate

#: What each httpx failure means for the request, written down here independently of the table.
NEVER_SENT = {
    httpx.ConnectTimeout: TransportTimeoutError,
    httpx.PoolTimeout: TransportTimeoutError,
    httpx.ConnectError: ConnectError,
    httpx.ProxyError: ConnectError,
    httpx.UnsupportedProtocol: TransportError,
    httpx.LocalProtocolError: TransportError,
    httpx.InvalidURL: TransportError,
}
#: Misuse of a response or of cookies: a bug, reported as far as the attempt got.
UNEXPECTED = {
    httpx.StreamError,
    httpx.StreamConsumed,
    httpx.StreamClosed,
    httpx.ResponseNotRead,
    httpx.RequestNotRead,
    httpx.CookieConflict,
}


def _httpx_exception_classes() -> set[type[BaseException]]:
    """Every exception class httpx defines: its public ones and all their subclasses in httpx."""
    found: set[type[BaseException]] = set()
    todo = [
        value
        for value in vars(httpx).values()
        if inspect.isclass(value) and issubclass(value, BaseException)
    ]
    while todo:
        cls = todo.pop()
        if cls in found or not cls.__module__.startswith("httpx"):
            continue
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def _instance(cls: type[BaseException]) -> Exception:
    request = httpx.Request("POST", "https://gw.example/ips")
    if issubclass(cls, httpx.HTTPStatusError):
        return cls("bad status", request=request, response=httpx.Response(503, request=request))
    if issubclass(cls, httpx.StreamError) and cls is not httpx.StreamError:
        return cls()  # type: ignore[call-arg]  # each subclass writes its own message
    return cls("it failed")  # type: ignore[return-value]


HTTPX_CLASSES = sorted(_httpx_exception_classes(), key=lambda c: c.__name__)


def test_the_walk_finds_httpx_s_exception_tree() -> None:
    """The walk reaches the leaves (not only the names httpx exports) and nothing foreign."""
    names = {cls.__name__ for cls in HTTPX_CLASSES}

    assert {"ReadTimeout", "CloseError", "StreamConsumed", "CookieConflict", "InvalidURL"} <= names
    assert len(HTTPX_CLASSES) >= 28


@pytest.mark.parametrize("cls", HTTPX_CLASSES, ids=lambda c: c.__name__)
def test_every_httpx_exception_class_has_its_own_row(cls: type[BaseException]) -> None:
    """A class httpx adds fails here until someone decides what it means for the request."""
    assert cls in TRANSLATION


@pytest.mark.parametrize("cls", HTTPX_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("sent", [False, True])
def test_every_httpx_failure_becomes_one_of_ours_with_the_right_verdict(
    cls: type[BaseException], sent: bool
) -> None:
    """Never-sent failures say so; misuse says how far the attempt got; the rest maybe_sent."""
    exc = _instance(cls)

    error = translate(exc, order_id="O1", request_id="R1", sent=sent)

    if cls in NEVER_SENT:
        expected = (NEVER_SENT[cls], False)
    elif cls in UNEXPECTED:
        expected = (TransportError, sent)
    elif issubclass(cls, httpx.TimeoutException):
        expected = (TransportTimeoutError, True)
    else:
        expected = (TransportError, True)
    assert expected == (type(error), error.maybe_sent)
    assert ("O1", "R1", exc) == (error.order_id, error.request_id, error.__cause__)


def test_an_earlier_attempt_that_may_have_been_sent_is_part_of_the_verdict() -> None:
    """A query's refused retry after a read timeout: ConnectError, yet maybe_sent."""
    error = translate(
        httpx.ConnectError("refused"), order_id="O1", request_id="R1", sent_before=True
    )

    assert (ConnectError, True) == (type(error), error.maybe_sent)


def test_a_class_httpx_adds_later_finds_its_parents_row() -> None:
    """Looked up along the MRO: a new kind of connect timeout is still never sent."""

    class FutureConnectTimeout(httpx.ConnectTimeout):
        pass

    error = translate(FutureConnectTimeout("slow dns"), order_id="O1", request_id="R1")

    assert (TransportTimeoutError, False) == (type(error), error.maybe_sent)
    assert str(error).startswith("FutureConnectTimeout: slow dns; the request never reached")


@pytest.mark.parametrize("sent", [False, True])
def test_any_other_exception_is_an_unexpected_transport_error(sent: bool) -> None:
    """A transport's own bug is ours too, never a bare foreign error."""
    cause = KeyError("x")

    error = translate(cause, order_id="O1", request_id="R1", sent=sent)

    assert (TransportError, sent, cause) == (type(error), error.maybe_sent, error.__cause__)
    assert str(error).startswith("unexpected KeyError during the exchange: 'x'; ")
