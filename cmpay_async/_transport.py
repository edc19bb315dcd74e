"""The transport: one POST of a prepared request; out comes ``(status, body)`` or our error.

This module is the one place where httpx exceptions become cmpay-async errors: the table
``TRANSLATION`` below, looked up along the exception's class hierarchy, as httpx's own
``_transports/default.py`` maps httpcore's. ``tests/client/test_transport_table.py`` walks
every exception class httpx defines and fails if one has no row. Every error is built once,
with its ``maybe_sent``: nothing here patches an error after it was made.
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import Mapping
from typing import Any

import httpx

from ._exceptions import (
    CmpayError,
    ConnectError,
    DecodeError,
    HTTPStatusError,
    PayloadTooLargeError,
    TransportError,
    TransportTimeoutError,
)
from ._pools import Route
from ._protocol import PreparedRequest
from ._redact import redact_untrusted

__all__ = [
    "MAX_ANSWER",
    "MAYBE",
    "NEVER",
    "TRANSLATION",
    "SentFlag",
    "Verdict",
    "check_answer",
    "excerpt",
    "inflate",
    "post",
    "translate",
]

#: Largest answer read from the gateway, in bytes.
MAX_ANSWER = 64 * 1024

NEVER = "the request never reached the gateway"
MAYBE = "the request may have reached the gateway: query the order before trying again"


# A compressed answer could expand a thousandfold before any size check.
_IDENTITY = (b"Accept-Encoding", b"identity")


class Verdict(enum.Enum):
    """What an httpx failure says about the request."""

    #: Certainly never sent (no connection, no pool slot): safe to send again.
    NEVER = "never"
    #: Never sent because the endpoint or the request is unusable: sending again cannot help.
    ENDPOINT = "endpoint"
    #: Possibly sent and processed: query the order before anything else.
    MAYBE = "maybe"
    #: Not a transport failure httpx means to raise here: as far as the attempt had got.
    UNEXPECTED = "unexpected"


#: Every exception class httpx defines, the error it becomes, and what it says of the request.
#: Looked up along the raised class's MRO, so a subclass httpx adds later finds its parent's row.
TRANSLATION: Mapping[type[Exception], tuple[type[TransportError], Verdict]] = {
    httpx.ConnectTimeout: (TransportTimeoutError, Verdict.NEVER),
    httpx.PoolTimeout: (TransportTimeoutError, Verdict.NEVER),
    httpx.ReadTimeout: (TransportTimeoutError, Verdict.MAYBE),
    httpx.WriteTimeout: (TransportTimeoutError, Verdict.MAYBE),
    httpx.TimeoutException: (TransportTimeoutError, Verdict.MAYBE),
    httpx.ConnectError: (ConnectError, Verdict.NEVER),
    httpx.ProxyError: (ConnectError, Verdict.NEVER),
    httpx.UnsupportedProtocol: (TransportError, Verdict.ENDPOINT),
    httpx.LocalProtocolError: (TransportError, Verdict.ENDPOINT),
    httpx.InvalidURL: (TransportError, Verdict.ENDPOINT),
    # Read/write errors, dropped connections, protocol and decoding errors of the answer:
    # the request may have been processed.
    httpx.ReadError: (TransportError, Verdict.MAYBE),
    httpx.WriteError: (TransportError, Verdict.MAYBE),
    httpx.CloseError: (TransportError, Verdict.MAYBE),
    httpx.NetworkError: (TransportError, Verdict.MAYBE),
    httpx.RemoteProtocolError: (TransportError, Verdict.MAYBE),
    httpx.ProtocolError: (TransportError, Verdict.MAYBE),
    httpx.DecodingError: (TransportError, Verdict.MAYBE),
    httpx.TooManyRedirects: (TransportError, Verdict.MAYBE),
    httpx.HTTPStatusError: (TransportError, Verdict.MAYBE),
    httpx.TransportError: (TransportError, Verdict.MAYBE),
    httpx.RequestError: (TransportError, Verdict.MAYBE),
    httpx.HTTPError: (TransportError, Verdict.MAYBE),
    # Misuse of a response or of cookies: a bug, not a failure of the exchange.
    httpx.StreamConsumed: (TransportError, Verdict.UNEXPECTED),
    httpx.StreamClosed: (TransportError, Verdict.UNEXPECTED),
    httpx.ResponseNotRead: (TransportError, Verdict.UNEXPECTED),
    httpx.RequestNotRead: (TransportError, Verdict.UNEXPECTED),
    httpx.StreamError: (TransportError, Verdict.UNEXPECTED),
    httpx.CookieConflict: (TransportError, Verdict.UNEXPECTED),
    # Anything else a transport raises (its own bug, a closed event loop).
    Exception: (TransportError, Verdict.UNEXPECTED),
}


def _row(exc: Exception) -> tuple[type[TransportError], Verdict]:
    for cls in type(exc).__mro__:
        row = TRANSLATION.get(cls)
        if row is not None:
            return row
    raise AssertionError("Exception has a row")  # pragma: no cover


def translate(
    exc: Exception,
    *,
    order_id: str,
    request_id: str,
    sent: bool = False,
    sent_before: bool = False,
) -> TransportError:
    """The library's error for a failed exchange (the only such place); ``exc`` its cause.

    ``sent``: whether this attempt had started to write its request (for a failure that does
    not tell); ``sent_before``: whether an earlier attempt of the call may have been sent.
    """
    cls, verdict = _row(exc)
    if verdict is Verdict.UNEXPECTED:
        message = f"unexpected {type(exc).__name__} during the exchange: {exc}; "
        error = cls(
            message + (MAYBE if sent else NEVER),
            maybe_sent=sent or sent_before,
            order_id=order_id,
            request_id=request_id,
        )
    else:
        # httpx's class name only where it says more than ours (ConnectError once, not twice).
        name = type(exc).__name__
        # httpx may quote the URL, which may hold a password.
        text = redact_untrusted(str(exc))
        detail = ": ".join(filter(None, ("" if name == cls.__name__ else name, text)))
        if verdict is Verdict.MAYBE:
            note = (
                f"the request may have reached the gateway and created order {order_id!r}: "
                "query the order before trying again, and use a new orderId for a new attempt"
            )
        else:
            note = NEVER if verdict is Verdict.NEVER else f"{NEVER} (check the endpoint setting)"
        error = cls(
            f"{detail or name}; {note}",
            maybe_sent=verdict is Verdict.MAYBE or sent_before,
            order_id=order_id,
            request_id=request_id,
        )
    error.__cause__ = exc
    return error


def excerpt(body: bytes) -> str:
    """The start of an answer for an error's text, with secrets and personal data blanked."""
    # Enough to recognise an HTML error page or a proxy message; blanked before cutting, so
    # that a value cut in half is blanked too. Nobody vouches for this text (an error page, a
    # proxy), so free-text values are blanked too, not only fields.
    return redact_untrusted(body[:600].decode(errors="replace"))[:200]


class SentFlag:
    """Set once this attempt's request starts to be written (httpcore's trace extension)."""

    __slots__ = ("extensions", "sent")

    def __init__(self, sent: bool) -> None:
        self.sent = sent
        #: The request's extensions, where ``trace`` is dropped once it has told what we need.
        self.extensions: dict[str, Any] = {}

    async def trace(self, event: str, info: object) -> None:
        """httpcore's trace callback: the first byte of the request goes out after this."""
        if event.endswith(".send_request_headers.started"):
            self.sent = True
            # httpcore reads the extension afresh for each step: the remaining steps of the
            # exchange (about nine events) now cost no callback.
            self.extensions.pop("trace", None)


async def post(
    http: httpx.AsyncClient,
    url: httpx.URL,
    request: PreparedRequest,
    *,
    timeout: httpx.Timeout,
    flag: SentFlag,
    sent_before: bool,
    route: Route | None,
) -> tuple[int, bytes]:
    """POST ``request``; return the status and at most ``MAX_ANSWER`` bytes of answer.

    With a ``route`` (a client we made, still open), straight to its transport with the
    headers and timeout the client would add; otherwise through ``http.send``.
    Raises only our errors: a translated ``TransportError``, or a ``DecodeError`` for an
    answer too large or encoded against our wish (``maybe_sent``: something answered).
    """
    try:
        response = await _send(http, url, request, timeout, flag, route)
        try:
            status = response.status_code
            if response.is_stream_consumed:  # made in memory (a mock transport): read already
                return status, _within_cap(response.content, status)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_ANSWER:
                raise too_large(status)
            body = await _read_capped(response, status)
            encoding = response.headers.get("content-encoding", "").strip().lower()
            if encoding and encoding != "identity":
                body = inflate(body, encoding, status)
            return status, body
        finally:
            await response.aclose()
    except CmpayError:
        raise
    except Exception as exc:
        raise translate(
            exc,
            order_id=request.order_id,
            request_id=request.request_id,
            sent=flag.sent,
            sent_before=sent_before,
        ) from exc


async def _send(
    http: httpx.AsyncClient,
    url: httpx.URL,
    request: PreparedRequest,
    timeout: httpx.Timeout,
    flag: SentFlag,
    route: Route | None,
) -> httpx.Response:
    """The response, its body not yet read: by ``route`` when there is one and ``http`` is open."""
    own = [(b"Content-Type", request.content_type.encode()), _IDENTITY]
    if route is not None and not http.is_closed:
        http_request = httpx.Request(
            "POST",
            url,
            content=request.body,
            # After the client's own, as build_request merges them: the same bytes on the wire.
            headers=[*route.headers, *own],
            extensions={"timeout": route.timeout, "trace": flag.trace},
        )
        flag.extensions = http_request.extensions  # httpx's own copy; httpcore reads it
        return await route.transport.handle_async_request(http_request)
    # A caller's client (its hooks, auth, cookies), a closed one (it refuses to send), or
    # an httpx that no longer picks transports as direct_route reads.
    http_request = http.build_request(
        "POST",
        url,
        content=request.body,
        headers=own,
        timeout=timeout,
        extensions={"trace": flag.trace},
    )
    flag.extensions = http_request.extensions
    return await http.send(http_request, stream=True)


def _within_cap(body: bytes, status: int) -> bytes:
    if len(body) > MAX_ANSWER:
        raise too_large(status)
    return body


async def _read_capped(response: httpx.Response, status: int) -> bytes:
    # Raw bytes, at most the limit: a hostile or broken peer cannot exhaust memory. The raw
    # stream itself, closed explicitly: stopping inside response.aiter_raw() leaves httpx's
    # inner async generator to the garbage collector (trio warns).
    chunks: list[bytes] = []
    size = 0
    raw = response.stream.__aiter__()  # type: ignore[union-attr]
    try:
        async for chunk in raw:
            size += len(chunk)
            if size > MAX_ANSWER:
                raise too_large(status)
            chunks.append(chunk)
    finally:
        close = getattr(raw, "aclose", None)
        if close is not None:
            await close()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def too_large(status: int) -> PayloadTooLargeError:
    """An answer past ``MAX_ANSWER`` (something answered: it may have been processed)."""
    return PayloadTooLargeError(
        f"the answer is larger than {MAX_ANSWER} bytes",
        status_code=status,
        excerpt="",
        maybe_sent=True,
    )


def inflate(body: bytes, encoding: str, status: int) -> bytes:
    """Decompress an answer sent compressed although we asked for none, up to the limit."""
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS
    else:
        raise DecodeError(
            f"the answer uses Content-Encoding {encoding[:20]!r}, not accepted",
            status_code=status,
            excerpt="",
            maybe_sent=True,
        )
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, MAX_ANSWER + 1)
    except zlib.error:
        raise DecodeError(
            f"the {encoding} answer does not decompress",
            status_code=status,
            excerpt="",
            maybe_sent=True,
        ) from None
    if len(out) > MAX_ANSWER or inflater.unconsumed_tail:
        raise too_large(status)
    return out


def check_answer(status: int, body: bytes, request: PreparedRequest) -> None:
    """Refuse a non-2xx status, an empty answer and an HTML page before any parsing."""
    if not 200 <= status < 300:
        # A 5xx may come after the gateway processed the order; a 4xx refused it unread.
        shown = excerpt(body)
        raise HTTPStatusError(
            f"gateway answered HTTP {status}: {shown!r}",
            maybe_sent=status >= 500,
            status_code=status,
            excerpt=shown,
            order_id=request.order_id,
            request_id=request.request_id,
        )
    stripped = body.lstrip()
    if not stripped:
        why = "the gateway's answer is empty"
    elif stripped[:1] == b"<":
        why = "the answer is an HTML page, not a gateway answer"
    else:
        return
    # Something answered: the gateway may be behind it.
    raise DecodeError(why, status_code=status, excerpt=excerpt(body), maybe_sent=True)
