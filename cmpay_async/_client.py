"""CmpayClient: the async shell around the pure core, on httpx. Works on asyncio and trio.

This module is the one place where httpx exceptions become cmpay-async errors
(``_translate``), as httpx's own ``map_httpcore_exceptions`` is for httpcore.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import random
import re
import secrets
import time
from collections.abc import Callable, Collection, Iterator
from types import TracebackType

import anyio
import attrs
import httpx

from ._codec import Payload
from ._enums import Channel, CharacterSet
from ._exceptions import (
    ClientClosedError,
    ConfigurationError,
    ConnectError,
    DecodeError,
    HTTPStatusError,
    PayloadTooLargeError,
    RemoteProtocolError,
    TransportError,
    TransportTimeoutError,
)
from ._models import (
    CHINA_TZ,
    OfflineNotify,
    Order,
    OrderQueryResult,
    PageNotify,
    PaymentResponse,
    RefundResult,
)
from ._notify import verify_notification
from ._protocol import (
    PreparedRequest,
    build_order_request,
    build_payment_request,
    parse_order_query_response,
    parse_payment_response,
    parse_refund_response,
)
from ._signing import Md5Signer, Signer, Verifier

__all__ = [
    "PRODUCTION_ENDPOINT",
    "TEST_ENDPOINT",
    "CmpayClient",
    "RetryPolicy",
    "Timeouts",
]

#: The gateway's production endpoint (PROTOCOL.md section 4).
PRODUCTION_ENDPOINT = "https://ipos.10086.cn/ips/cmpayService"
#: The vendor's test (UAT) endpoint.
TEST_ENDPOINT = "https://uatipos.10086.cn/ips/cmpayService"

#: Largest answer read from the gateway, in bytes.
MAX_ANSWER = 64 * 1024

logger = logging.getLogger("cmpay_async")


@attrs.frozen(kw_only=True)
class Timeouts:
    """Seconds allowed for each phase of a gateway call."""

    connect: float = 5.0
    #: The gateway creates the order before it answers: give it time.
    read: float = 30.0
    write: float = 10.0
    #: Waiting for a free connection from the pool.
    pool: float = 5.0

    def to_httpx(self) -> httpx.Timeout:
        """The same values as an ``httpx.Timeout``."""
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How often to resend a request that certainly never reached the gateway."""

    #: Total attempts, the first included; 1 disables retries.
    attempts: int = 3
    initial_backoff: float = 0.2
    max_backoff: float = 2.0

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (from 1): capped, with full jitter."""
        cap = min(self.max_backoff, self.initial_backoff * 2.0 ** (retry - 1))
        return cap * (0.5 + rng.random() / 2)


def _china_now() -> dt.datetime:
    return dt.datetime.now(CHINA_TZ)


_HMAC_IN_TEXT = re.compile(r"(hmac=)[^&]*", re.IGNORECASE)


def _excerpt(body: bytes) -> str:
    # Enough to recognise an HTML error page or a proxy message; the hmac is blanked.
    text = body[:200].decode("utf-8", "replace")
    return _HMAC_IN_TEXT.sub(r"\1…", text)


def _translate(
    exc: httpx.HTTPError | httpx.InvalidURL, *, order_id: str, request_id: str
) -> TransportError:
    """Map an httpx exception to the library's transport error (the only such place)."""
    never = "the request never reached the gateway"
    maybe = (
        f"the request may have reached the gateway and created order {order_id!r}: "
        "query the order before trying again, and use a new orderId for a new attempt"
    )
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def error(cls: type[TransportError], note: str, *, maybe_sent: bool) -> TransportError:
        return cls(
            f"{detail}; {note}", maybe_sent=maybe_sent, order_id=order_id, request_id=request_id
        )

    if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
        return error(TransportTimeoutError, never, maybe_sent=False)
    if isinstance(exc, httpx.TimeoutException):  # read and write timeouts
        return error(TransportTimeoutError, maybe, maybe_sent=True)
    if isinstance(exc, (httpx.ConnectError, httpx.ProxyError)):
        return error(ConnectError, never, maybe_sent=False)
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL)):
        return error(TransportError, f"{never} (check the endpoint setting)", maybe_sent=False)
    # Read/write errors, dropped connections, protocol and decoding errors of the answer, and
    # anything httpx adds later: the request may have been processed.
    return error(TransportError, maybe, maybe_sent=True)


def _retryable(error: TransportError) -> bool:
    return not error.maybe_sent and isinstance(error, (ConnectError, TransportTimeoutError))


class CmpayClient:
    """Async client of the CMPay gateway; share one instance between all tasks.

    Use it as ``async with CmpayClient(...) as client:`` or call ``aclose()``.
    """

    def __init__(
        self,
        *,
        merchant_id: str,
        signer: Signer,
        verifier: Verifier | None = None,
        callback_url: str = "",
        notify_url: str = "",
        character_set: CharacterSet = CharacterSet.UTF8,
        endpoint: str = PRODUCTION_ENDPOINT,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        extra_bank_codes: Collection[str] = (),
        max_connections: int = 20,
        clock: Callable[[], dt.datetime] = _china_now,
        rng: random.Random | None = None,
    ) -> None:
        if not merchant_id:
            raise ConfigurationError("merchant_id is empty")
        if verifier is None:
            if not isinstance(signer, Md5Signer):
                raise ConfigurationError(
                    "an RSA signer needs verifier=RsaVerifier(<gateway public key>)"
                )
            verifier = signer
        if verifier.sign_type is not signer.sign_type:
            raise ConfigurationError(
                f"signer signs {signer.sign_type.value} but verifier checks "
                f"{verifier.sign_type.value}; the gateway answers in the request's signType"
            )
        if http_client is not None and transport is not None:
            raise ConfigurationError("pass either http_client or transport, not both")
        if not endpoint.startswith(("https://", "http://")):
            raise ConfigurationError("endpoint must be an http(s) URL")
        self.merchant_id = merchant_id
        self.callback_url = callback_url
        self.notify_url = notify_url
        self.character_set = CharacterSet(character_set)
        self.endpoint = endpoint
        self._timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.extra_bank_codes = frozenset(extra_bank_codes)
        self._signer = signer
        self._verifier = verifier
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._owns_http = http_client is None
        if max_connections < 1:
            raise ConfigurationError("max_connections must be at least 1")
        # Built once: every request passes it (a caller's http_client has its own defaults).
        self._timeout = self._timeouts.to_httpx()
        self._http = http_client or httpx.AsyncClient(
            transport=transport,
            timeout=self._timeout,
            follow_redirects=False,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        # Callers beyond the pool's size wait here, not in httpcore's queue: its bookkeeping
        # grows with the queue (1,000 waiting tasks made every request time out), while this
        # wait is O(1) and, being before any I/O, never leaves a request half sent. The pool
        # itself stays small by default because httpcore checks every pooled connection on
        # every request (measured: 1,000 orders took 1.2 s with 10 connections, 6.1 s with
        # 100, against the same sandbox).
        self._max_in_flight = max_connections
        self._in_flight: anyio.Semaphore | None = None
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"CmpayClient(merchant_id={self.merchant_id!r}, endpoint={self.endpoint!r}, "
            f"signer={self._signer!r})"
        )

    async def __aenter__(self) -> CmpayClient:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (only if this client created it). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_http:
            await self._http.aclose()

    @property
    def timeouts(self) -> Timeouts:
        """The timeouts every request uses (fixed at construction)."""
        return self._timeouts

    @property
    def closed(self) -> bool:
        """Whether ``aclose()`` was called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("this CmpayClient is closed; create a new one")

    def new_request_id(self) -> str:
        """A unique request id: China-time timestamp and 64 random bits (30 characters)."""
        return f"{self._clock().astimezone(CHINA_TZ):%Y%m%d%H%M%S}{secrets.token_hex(8)}"

    def prepare_payment(
        self,
        order: Order,
        *,
        ip_address: str,
        request_id: str | None = None,
        channel: Channel = Channel.WEB,
    ) -> PreparedRequest:
        """Validate and sign a payment request without sending it."""
        return build_payment_request(
            order,
            merchant_id=self.merchant_id,
            request_id=request_id or self.new_request_id(),
            ip_address=ip_address,
            signer=self._signer,
            today=self._clock().astimezone(CHINA_TZ).date(),
            character_set=self.character_set,
            callback_url=self.callback_url,
            notify_url=self.notify_url,
            extra_bank_codes=self.extra_bank_codes,
            message=Channel(channel).value,
        )

    async def create_payment(
        self,
        order: Order,
        *,
        ip_address: str,
        request_id: str | None = None,
        channel: Channel = Channel.WEB,
    ) -> PaymentResponse:
        """Place an order and return the verified answer with the cashier redirect.

        ``ip_address`` is the buyer's IPv4 address; ``channel=Channel.WAP`` sends the buyer to
        the mobile cashier. Raises ``ValidationError`` before any I/O, ``GatewayError`` for a
        failure return code, ``SignatureError`` for an answer that does not verify, and
        ``TransportError`` (see ``maybe_sent``) when the exchange fails: then call
        ``query_order`` before anything else.
        """
        self._check_open()
        request = self.prepare_payment(
            order, ip_address=ip_address, request_id=request_id, channel=channel
        )
        status, body = await self._exchange(request)
        with _answer_context(status, body):
            return parse_payment_response(
                body,
                verifier=self._verifier,
                merchant_id=self.merchant_id,
                request_id=request.request_id,
                message=request.message + "Response",
            )

    async def query_order(
        self, order_id: str, *, request_id: str | None = None
    ) -> OrderQueryResult:
        """Ask the gateway what became of an order.

        Returns a verified result whose ``state`` is PAID, FAILED, PENDING or NOT_FOUND (the
        gateway's ``RPM22201`` is a result, not an error). A query changes nothing, so unlike
        a payment it is also retried after a timeout or a dropped connection.
        """
        self._check_open()
        request = build_order_request(
            "OrderQuery",
            order_id,
            merchant_id=self.merchant_id,
            request_id=request_id or self.new_request_id(),
            signer=self._signer,
            character_set=self.character_set,
        )
        status, body = await self._exchange(request, idempotent=True)
        with _answer_context(status, body):
            return parse_order_query_response(
                body, verifier=self._verifier, merchant_id=self.merchant_id, order_id=order_id
            )

    async def refund(
        self, order_id: str, amount: int, *, request_id: str | None = None
    ) -> RefundResult:
        """Refund ``amount`` fen (part or all) of a paid order.

        The amount is checked locally (a positive int of fen) before any I/O. A refund the
        gateway refuses (``RPM22401``, ``RPM22407``, ``RPM23190``, ...) raises ``GatewayError``.
        After a ``TransportError`` with ``maybe_sent``, query the order: a refund is never
        resent automatically. Pass the same ``request_id`` to retry one refund safely.
        """
        self._check_open()
        # The registry's OrderRefund rules refuse 0, negatives, floats and bools before I/O.
        request = build_order_request(
            "OrderRefund",
            order_id,
            merchant_id=self.merchant_id,
            request_id=request_id or self.new_request_id(),
            signer=self._signer,
            amount=amount,
            character_set=self.character_set,
        )
        status, body = await self._exchange(request)
        with _answer_context(status, body):
            return parse_refund_response(
                body, verifier=self._verifier, merchant_id=self.merchant_id, order_id=order_id
            )

    def verify_notification(
        self, payload: Payload, *, charset: str | None = None
    ) -> PageNotify | OfflineNotify:
        """``verify_notification`` with this client's verifier and merchant id: the safe default."""
        return verify_notification(
            payload, verifier=self._verifier, merchant_id=self.merchant_id, charset=charset
        )

    async def _exchange(
        self, request: PreparedRequest, *, idempotent: bool = False
    ) -> tuple[int, bytes]:
        """POST a prepared request; retry only what certainly never reached the gateway.

        An ``idempotent`` request (a query) is also retried when it may have been sent.
        """
        attempt = 0
        while True:
            attempt += 1
            self._check_open()
            started = time.perf_counter()
            logger.debug(
                "-> %s orderId=%s requestId=%s attempt=%d",
                request.message,
                request.order_id,
                request.request_id,
                attempt,
            )
            if self._in_flight is None:  # created in the event loop that uses it
                self._in_flight = anyio.Semaphore(self._max_in_flight)
            try:
                async with self._in_flight:
                    status, body = await self._post(request)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                error = _translate(exc, order_id=request.order_id, request_id=request.request_id)
                logger.debug(
                    "<- %s orderId=%s requestId=%s failed: %s maybe_sent=%s elapsed=%.1fms",
                    request.message,
                    request.order_id,
                    request.request_id,
                    type(error).__name__,
                    error.maybe_sent,
                    (time.perf_counter() - started) * 1000,
                )
                if (idempotent or _retryable(error)) and attempt < self.retry.attempts:
                    await anyio.sleep(self.retry.backoff(attempt, self._rng))
                    continue
                raise error from exc
            if logger.isEnabledFor(logging.DEBUG):  # finding the return code costs a scan
                logger.debug(
                    "<- %s orderId=%s requestId=%s status=%d returnCode=%s elapsed=%.1fms",
                    request.message,
                    request.order_id,
                    request.request_id,
                    status,
                    _return_code(body),
                    (time.perf_counter() - started) * 1000,
                )
            self._check_answer(status, body, request)
            return status, body

    async def _post(self, request: PreparedRequest) -> tuple[int, bytes]:
        http_request = self._http.build_request(
            "POST",
            self.endpoint,
            content=request.body,
            headers={"Content-Type": request.content_type},
            timeout=self._timeout,
        )
        response = await self._http.send(http_request, stream=True)
        try:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_ANSWER:
                raise _too_large(response.status_code)
            chunks: list[bytes] = []
            size = 0
            # Read at most the limit, so a hostile or broken peer cannot exhaust memory.
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_ANSWER:
                    raise _too_large(response.status_code)
                chunks.append(chunk)
            return response.status_code, b"".join(chunks)
        finally:
            await response.aclose()

    @staticmethod
    def _check_answer(status: int, body: bytes, request: PreparedRequest) -> None:
        if not 200 <= status < 300:
            # A 5xx may come after the gateway processed the order; a 4xx refused it unread.
            raise HTTPStatusError(
                f"gateway answered HTTP {status}: {_excerpt(body)!r}",
                maybe_sent=status >= 500,
                status_code=status,
                excerpt=_excerpt(body),
                order_id=request.order_id,
                request_id=request.request_id,
            )
        stripped = body.lstrip()
        if not stripped:
            exc = DecodeError("the gateway's answer is empty")
        elif stripped[:1] == b"<":
            exc = DecodeError("the answer is an HTML page, not a gateway answer")
        else:
            return
        exc.status_code, exc.excerpt = status, _excerpt(body)
        raise exc


def _too_large(status: int) -> PayloadTooLargeError:
    exc = PayloadTooLargeError(f"the answer is larger than {MAX_ANSWER} bytes")
    exc.status_code, exc.excerpt = status, ""
    return exc


@contextlib.contextmanager
def _answer_context(status: int, body: bytes) -> Iterator[None]:
    """Attach the HTTP status and a redacted excerpt to a protocol error about an answer."""
    try:
        yield
    except RemoteProtocolError as exc:
        exc.status_code, exc.excerpt = status, _excerpt(body)
        raise


def _return_code(body: bytes) -> str:
    start = body.find(b"returnCode=")
    if start < 0:
        return "-"
    end = body.find(b"&", start)
    return body[start + 11 : end if end >= 0 else start + 30].decode("ascii", "replace")
