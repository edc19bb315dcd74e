"""CmpayClient: the async shell around the pure core, on httpx. Works on asyncio and trio.

This module is the one place where httpx exceptions become cmpay-async errors
(``_translate``), as httpx's own ``map_httpcore_exceptions`` is for httpcore.

Three promises hold for every call, whatever happens around it:

- **A total deadline** (``Timeouts.total``) bounds the call: queueing for a slot, every
  attempt, backoff and the reading of a slow answer. It ends in ``TransportTimeoutError``
  whose ``maybe_sent`` says whether the request had started to be written.
- **Cancel-safety.** Once a request may be written, the exchange runs shielded from the
  caller's cancel scopes (bounded by the deadline), so its outcome is returned or raised
  rather than lost; a native asyncio cancellation (``Task.cancel``, ``asyncio.timeout``),
  which no shield stops, is reported to ``on_in_doubt`` with the order id.
- **No foreign error escapes.** Anything unexpected after the request may have been written
  becomes a ``TransportError`` with ``maybe_sent=True``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import math
import random
import re
import secrets
import time
import zlib
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import anyio
import attrs
import httpx

from ._codec import Payload
from ._endpoints import is_loopback, safe_url
from ._enums import Channel, CharacterSet, OrderState
from ._exceptions import (
    ClientClosedError,
    CmpayError,
    ConfigurationError,
    ConnectError,
    DecodeError,
    GatewayError,
    HTTPStatusError,
    PayloadTooLargeError,
    RemoteProtocolError,
    TransportError,
    TransportTimeoutError,
    UnexpectedMessageError,
)
from ._models import (
    CHINA_TZ,
    OfflineNotify,
    Order,
    OrderQueryResult,
    PageNotify,
    PaymentResponse,
    Placement,
    RefundResult,
)
from ._notify import verify_notification
from ._observe import RequestEnd, RequestStart, Tracing, call_hook, outcome_of
from ._pools import LoopPools, shared_ssl_context
from ._protocol import (
    PreparedRequest,
    build_order_request,
    build_payment_request,
    parse_order_query_response,
    parse_payment_response,
    parse_refund_response,
)
from ._reconcile import CONCURRENCY, PER_SECOND, PendingOrder, reconcile_orders
from ._redact import redact_untrusted
from ._signing import Md5Signer, Signer, Verifier

R = TypeVar("R")

__all__ = [
    "PRODUCTION_ENDPOINT",
    "TEST_ENDPOINT",
    "CmpayClient",
    "InDoubt",
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


def _positive(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ConfigurationError(f"Timeouts.{attribute.name} must be a positive number of seconds")


@attrs.frozen(kw_only=True)
class Timeouts:
    """Seconds allowed for each phase of a gateway call, and for the whole call."""

    connect: float = attrs.field(default=5.0, validator=_positive)
    #: The gateway creates the order before it answers: give it time. Restarts on every byte.
    read: float = attrs.field(default=30.0, validator=_positive)
    write: float = attrs.field(default=10.0, validator=_positive)
    #: Waiting for one of the client's ``max_connections`` request slots.
    pool: float = attrs.field(default=5.0, validator=_positive)
    #: The whole call: queueing, every attempt and backoff, and reading the answer however
    #: slowly it drips. None removes the bound (not recommended).
    total: float | None = attrs.field(default=45.0, validator=_positive)

    def to_httpx(self) -> httpx.Timeout:
        """The per-phase values as an ``httpx.Timeout``."""
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


@attrs.frozen(kw_only=True)
class InDoubt:
    """A call that may have acted at the gateway while its caller did not get the outcome.

    Handed to ``on_in_doubt``: record ``order_id`` and query the order later (or reconcile).
    """

    #: ``create_payment`` or ``refund`` (a query changes nothing, so is never in doubt).
    operation: str
    order_id: str
    request_id: str
    #: ``cancelled``: the caller was cancelled while the request was in flight;
    #: ``error``: the call raised an error with ``maybe_sent=True``.
    reason: Literal["cancelled", "error"]
    #: The error the caller got, for ``reason == "error"``.
    error: CmpayError | None = None

    @classmethod
    def of(
        cls,
        operation: str,
        request: PreparedRequest,
        reason: Literal["cancelled", "error"],
        error: CmpayError | None = None,
    ) -> InDoubt:
        """The record of ``request`` (its order and request ids)."""
        return cls(
            operation=operation,
            order_id=request.order_id,
            request_id=request.request_id,
            reason=reason,
            error=error,
        )


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


def _excerpt(body: bytes) -> str:
    # Enough to recognise an HTML error page or a proxy message; secrets and personal data
    # blanked before cutting, so that a value cut in half is blanked too. Nobody vouches for
    # this text (an error page, a proxy), so free-text values are blanked too, not only fields.
    return redact_untrusted(body[:600].decode(errors="replace"))[:200]


_NEVER = "the request never reached the gateway"
_MAYBE = "the request may have reached the gateway: query the order before trying again"


def _translate(
    exc: httpx.HTTPError | httpx.InvalidURL, *, order_id: str, request_id: str
) -> TransportError:
    """Map an httpx exception to the library's transport error (the only such place)."""
    maybe = (
        f"the request may have reached the gateway and created order {order_id!r}: "
        "query the order before trying again, and use a new orderId for a new attempt"
    )

    def error(cls: type[TransportError], note: str, *, maybe_sent: bool) -> TransportError:
        # httpx's class name only where it says more than ours (ConnectError once, not twice).
        name = type(exc).__name__
        # httpx may quote the URL, which may hold a password.
        text = redact_untrusted(str(exc))
        detail = ": ".join(filter(None, ("" if name == cls.__name__ else name, text)))
        return cls(
            f"{detail or name}; {note}",
            maybe_sent=maybe_sent,
            order_id=order_id,
            request_id=request_id,
        )

    if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
        return error(TransportTimeoutError, _NEVER, maybe_sent=False)
    if isinstance(exc, httpx.TimeoutException):  # read and write timeouts
        return error(TransportTimeoutError, maybe, maybe_sent=True)
    if isinstance(exc, (httpx.ConnectError, httpx.ProxyError)):
        return error(ConnectError, _NEVER, maybe_sent=False)
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL)):
        return error(TransportError, f"{_NEVER} (check the endpoint setting)", maybe_sent=False)
    # Read/write errors, dropped connections, protocol and decoding errors of the answer, and
    # anything httpx adds later: the request may have been processed.
    return error(TransportError, maybe, maybe_sent=True)


def _retryable(error: TransportError) -> bool:
    return not error.maybe_sent and isinstance(error, (ConnectError, TransportTimeoutError))


def _check_plain_http(
    endpoint: str,
    host: str,
    transport: httpx.AsyncBaseTransport | None,
    *,
    allow_insecure_http: bool,
) -> None:
    """Refuse ``http://`` beyond loopback unless opted in; log the opt-in once."""
    if not endpoint.startswith("http://") or is_loopback(host):
        return
    # These two never open a socket: no byte leaves the process, whatever the URL says.
    if isinstance(transport, (httpx.ASGITransport, httpx.MockTransport)):
        return
    if not allow_insecure_http:
        raise ConfigurationError(
            f"endpoint is plain http:// to {host}, which is not a loopback address: signed "
            "orders and buyers' userTokens would cross the network in clear text; use "
            "https://, or pass allow_insecure_http=True if a trusted network encrypts it"
        )
    logger.warning(
        "allow_insecure_http=True: requests to %s go over plain http://, unencrypted", host
    )


class _Progress:
    """How far a call got: has a request started to be written, and which attempt is on."""

    __slots__ = ("attempt", "ended", "sent", "started", "status")

    def __init__(self, sent: bool) -> None:
        self.sent = sent
        self.attempt = 0
        self.started = 0.0
        self.status: int | None = None
        #: True once the current attempt's end was reported (a transport failure).
        self.ended = False

    async def trace(self, event: str, info: object) -> None:
        # httpcore's trace extension: the first byte of the request goes out after this.
        if event.endswith(".send_request_headers.started"):
            self.sent = True


class CmpayClient:
    """Async client of the CMPay gateway; configure one per process and share it.

    It works from any event loop (successive ``asyncio.run()`` calls, threads with their own
    loops, trio and asyncio) and after ``fork``: each loop and process gets its own connection
    pool, made on first use and closed when that loop ends. Use it as
    ``async with CmpayClient(...) as client:`` or call ``aclose()``.

    ``endpoint`` must be ``https://``, or ``http://`` to a loopback host (``127.0.0.0/8``,
    ``::1``, ``localhost``: a local sandbox); any other ``http://`` endpoint raises
    ``ConfigurationError`` before anything is sent, unless ``allow_insecure_http=True``
    (logged at WARNING once, here). A ``transport=`` that is ``httpx.ASGITransport`` or
    ``httpx.MockTransport`` never opens a socket, so with one any ``http://`` endpoint is
    accepted (the in-process sandbox, ``http://cmpay-sandbox.invalid``); any other transport
    and any ``http_client=`` may reach a network and follow the rule. The client's repr and
    errors never show a password held in the endpoint URL.
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
        on_in_doubt: Callable[[InDoubt], object] | None = None,
        on_request_start: Callable[[RequestStart], object] | None = None,
        on_request_end: Callable[[RequestEnd], object] | None = None,
        tracing: bool = False,
        tracer_provider: Any = None,
        clock: Callable[[], dt.datetime] = _china_now,
        rng: random.Random | None = None,
        allow_insecure_http: bool = False,
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
        host = urlsplit(endpoint).hostname if endpoint.startswith(("https://", "http://")) else None
        if not host:
            raise ConfigurationError("endpoint must be an http(s) URL")
        _check_plain_http(endpoint, host, transport, allow_insecure_http=allow_insecure_http)
        if max_connections < 1:
            raise ConfigurationError("max_connections must be at least 1")
        self.merchant_id = merchant_id
        self.callback_url = callback_url
        self.notify_url = notify_url
        self.character_set = CharacterSet(character_set)
        self.endpoint = endpoint
        self._host = host
        self._timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.extra_bank_codes = frozenset(extra_bank_codes)
        self.on_in_doubt = on_in_doubt
        self.on_request_start = on_request_start
        self.on_request_end = on_request_end
        # None unless asked for: the untraced path pays one test per call and attempt.
        self._tracing = Tracing(tracer_provider) if tracing or tracer_provider else None
        self._signer = signer
        self._verifier = verifier
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not cryptography
        # Built once: every request passes it (a caller's http_client has its own defaults).
        self._timeout = self._timeouts.to_httpx()
        self._transport = transport
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )

        def make_http() -> httpx.AsyncClient:
            if http_client is not None:
                return http_client
            if transport is not None:
                return httpx.AsyncClient(
                    transport=transport, timeout=self._timeout, follow_redirects=False
                )
            return httpx.AsyncClient(
                verify=shared_ssl_context(),
                timeout=self._timeout,
                follow_redirects=False,
                limits=limits,
            )

        # Callers beyond the pool's size wait for a slot, not in httpcore's queue: its
        # bookkeeping grows with the queue (1,000 waiting tasks made every request time out),
        # while this wait is O(1) and, being before any I/O, never leaves a request half sent.
        # The pool itself stays small by default because httpcore checks every pooled
        # connection on every request (measured: 1,000 orders took 1.2 s with 10 connections,
        # 6.1 s with 100, against the same sandbox).
        self._pools = LoopPools(
            max_in_flight=max_connections,
            make_http=make_http,
            owns_pools=http_client is None and transport is None,
            single_loop=http_client is not None,
            # Only httpcore's own transports report when the request starts to be written.
            precise=http_client is None
            and (transport is None or isinstance(transport, httpx.AsyncHTTPTransport)),
        )
        self._owns_transport = http_client is None and transport is not None
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"CmpayClient(merchant_id={self.merchant_id!r}, endpoint={safe_url(self.endpoint)!r}, "
            f"signer={self._signer!r})"
        )

    def __enter__(self) -> None:
        """Refuse plain ``with``: this client is async."""
        raise TypeError(
            "CmpayClient is async: use `async with CmpayClient(...)`, or BlockingCmpayClient "
            "in code that cannot await"
        )

    def __exit__(self, *exc_info: object) -> None:
        """Never reached: ``__enter__`` refuses."""

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
        """Close this loop's connection pool and refuse new calls. Idempotent.

        Pools of other event loops (other threads) cannot be closed from here: each closes
        when its own loop ends, or at its next call, which raises ``ClientClosedError``. How
        many were left open is logged.
        """
        self._closed = True
        others = await self._pools.aclose_current()
        if self._owns_transport and self._transport is not None:
            await self._transport.aclose()
            self._owns_transport = False
        if others:
            logger.warning(
                "CmpayClient closed with %d connection pool(s) still open in other event "
                "loops; each closes when its loop ends or at its next call",
                others,
            )

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
        ``TransportError`` when the exchange fails. Whenever the error says ``maybe_sent``,
        call ``query_order`` before anything else.
        """
        with self._context("create_payment", order, request_id):
            self._check_open()
            request = self.prepare_payment(
                order, ip_address=ip_address, request_id=request_id, channel=channel
            )
        return await self._call(
            "create_payment",
            request,
            lambda body: parse_payment_response(
                body,
                verifier=self._verifier,
                merchant_id=self.merchant_id,
                request_id=request.request_id,
                message=request.message + "Response",
            ),
        )

    async def place_order(
        self, order: Order, *, ip_address: str, channel: Channel = Channel.WEB
    ) -> Placement:
        """Create the payment, or, if this order may exist already, say what became of it.

        For jobs that may run twice (a redelivery, a retry after ``maybe_sent``, a re-run after
        SIGTERM): when the gateway refuses the orderId as used (``RPM22208``) or the first try
        ends in doubt, the order is queried, and a ``Placement`` with the gateway's state
        (PAID, PENDING, FAILED) comes back instead of an error or a second order. An order the
        gateway does not know is created then. The pay link of an order created by an earlier
        run cannot be fetched again (the protocol has no call for it): ``pay_url`` is None
        then; keep the link from the first run.
        """
        try:
            payment = await self.create_payment(order, ip_address=ip_address, channel=channel)
        except GatewayError as exc:
            if exc.code != _ORDER_ID_USED:
                raise
            refused: GatewayError | None = exc
        except CmpayError as exc:
            if not exc.maybe_sent:
                raise
            refused = None
        else:
            return Placement(
                order_id=order.order_id, state=OrderState.PENDING, created=True, payment=payment
            )
        result = await self.query_order(order.order_id)
        if result.state is OrderState.NOT_FOUND:
            if refused is not None:  # refused as used, yet unknown: not ours to fix
                raise refused
            payment = await self.create_payment(order, ip_address=ip_address, channel=channel)
            return Placement(
                order_id=order.order_id, state=OrderState.PENDING, created=True, payment=payment
            )
        if result.amount is not None and result.amount != order.amount:
            raise UnexpectedMessageError(
                f"orderId {order.order_id!r} is already used at the gateway for "
                f"{result.amount} fen, not {order.amount}: another order has this id",
                field="amount",
            )
        return Placement(order_id=order.order_id, state=result.state, created=False, query=result)

    async def query_order(
        self, order_id: str, *, request_id: str | None = None
    ) -> OrderQueryResult:
        """Ask the gateway what became of an order.

        Returns a verified result whose ``state`` is PAID, FAILED, PENDING or NOT_FOUND (the
        gateway's ``RPM22201`` is a result, not an error). A query changes nothing, so unlike
        a payment it is also retried after a timeout or a dropped connection.
        """
        with self._context("query_order", order_id, request_id):
            self._check_open()
            request = build_order_request(
                "OrderQuery",
                order_id,
                merchant_id=self.merchant_id,
                request_id=request_id or self.new_request_id(),
                signer=self._signer,
                character_set=self.character_set,
            )
        return await self._call(
            "query_order",
            request,
            lambda body: parse_order_query_response(
                body, verifier=self._verifier, merchant_id=self.merchant_id, order_id=order_id
            ),
            idempotent=True,
        )

    async def refund(
        self, order_id: str, amount: int, *, request_id: str | None = None
    ) -> RefundResult:
        """Refund ``amount`` fen (part or all) of a paid order.

        The amount is checked locally (a positive int of fen) before any I/O. A refund the
        gateway refuses (``RPM22401``, ``RPM22407``, ``RPM23190``, ...) raises ``GatewayError``.
        After an error with ``maybe_sent``, query the order: a refund is never resent
        automatically. Pass the same ``request_id`` to retry one refund safely.
        """
        # The registry's OrderRefund rules refuse 0, negatives, strs, floats and bools.
        with self._context("refund", order_id, request_id):
            self._check_open()
            request = build_order_request(
                "OrderRefund",
                order_id,
                merchant_id=self.merchant_id,
                request_id=request_id or self.new_request_id(),
                signer=self._signer,
                amount=amount,
                character_set=self.character_set,
            )
        return await self._call(
            "refund",
            request,
            lambda body: parse_refund_response(
                body, verifier=self._verifier, merchant_id=self.merchant_id, order_id=order_id
            ),
        )

    def reconcile(
        self,
        pending: Iterable[PendingOrder],
        *,
        now: dt.datetime | None = None,
        concurrency: int = CONCURRENCY,
        per_second: float = PER_SECOND,
    ) -> AsyncIterator[OrderQueryResult]:
        """Query the pending orders that are due (see ``cmpay_async._reconcile``); yield results.

        Feed a paid or failed result to ``NotificationProcessor.process_result`` so that a
        late notification and the reconciliation never both run the handler.
        """
        if self._tracing is None:
            return reconcile_orders(
                self.query_order,
                pending,
                now=now,
                concurrency=concurrency,
                per_second=per_second,
            )
        return self._traced_reconcile(self._tracing, pending, now, concurrency, per_second)

    async def _traced_reconcile(
        self,
        tracing: Tracing,
        pending: Iterable[PendingOrder],
        now: dt.datetime | None,
        concurrency: int,
        per_second: float,
    ) -> AsyncIterator[OrderQueryResult]:
        """``reconcile`` in a ``cmpay.reconcile`` span, the parent of every query's span."""
        # Not the current span: the generator yields to its consumer, whose context must not
        # change; each query task enters the span's context itself.
        span, parent = tracing.detached(
            "cmpay.reconcile", {"cmpay.concurrency": concurrency, "server.address": self._host}
        )

        async def query(order_id: str) -> OrderQueryResult:
            with tracing.within(parent):
                return await self.query_order(order_id)

        found = 0
        error: BaseException | None = None
        try:
            async for result in reconcile_orders(
                query, pending, now=now, concurrency=concurrency, per_second=per_second
            ):
                found += 1
                yield result
        except BaseException as exc:
            error = exc
            raise
        finally:
            tracing.finish(span, error, **{"cmpay.results": found})
            span.end()

    def verify_notification(
        self,
        payload: Payload,
        *,
        charset: str | None = None,
        order_id_pattern: str | re.Pattern[str] | None = None,
    ) -> PageNotify | OfflineNotify:
        """``verify_notification`` with this client's verifier, merchant id and extra bank
        codes: the safe default. ``order_id_pattern`` declares the form of your order ids."""
        verify = functools.partial(
            verify_notification,
            payload,
            verifier=self._verifier,
            merchant_id=self.merchant_id,
            charset=charset,
            order_id_pattern=order_id_pattern,
            extra_bank_codes=self.extra_bank_codes,
        )
        if self._tracing is None:
            return verify()
        with self._tracing.span("cmpay.verify_notification") as span:
            try:
                note = verify()
            except CmpayError as exc:
                self._tracing.finish(span, exc)
                raise
            self._tracing.finish(span, None, **{"cmpay.interface": note.type})
            return note

    @contextlib.contextmanager
    def _context(self, operation: str, order: object, request_id: str | None) -> Iterator[None]:
        """Errors raised while preparing a call name the call too (before any I/O)."""
        try:
            yield
        except CmpayError as exc:
            order_id = getattr(order, "order_id", order)
            exc.add_context(
                operation=operation,
                order_id=order_id if isinstance(order_id, str) else None,
                request_id=request_id,
                endpoint_host=self._host,
            )
            raise

    async def _call(
        self,
        operation: str,
        request: PreparedRequest,
        parse: Callable[[bytes], R],
        *,
        idempotent: bool = False,
    ) -> R:
        """Exchange and parse, in a span when tracing is on."""
        progress = _Progress(sent=False)
        if self._tracing is None:
            return await self._call_once(operation, request, parse, progress, idempotent)
        attributes = {"cmpay.interface": request.message, "server.address": self._host}
        with self._tracing.span(f"cmpay.{operation}", attributes) as span:
            error: BaseException | None = None
            result: Any = None
            try:
                result = await self._call_once(operation, request, parse, progress, idempotent)
                return result  # type: ignore[no-any-return]
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._tracing.finish(
                    span,
                    error,
                    **{
                        "cmpay.attempts": progress.attempt,
                        "cmpay.return_code": getattr(result, "return_code", None),
                    },
                )

    async def _call_once(
        self,
        operation: str,
        request: PreparedRequest,
        parse: Callable[[bytes], R],
        progress: _Progress,
        idempotent: bool,
    ) -> R:
        """Exchange and parse; every error carries the call's context, and doubts are reported."""
        try:
            status, body = await self._exchange(operation, request, progress, idempotent)
            with _answer_context(status, body):
                result = parse(body)
        except CmpayError as exc:
            exc.add_context(
                operation=operation,
                order_id=request.order_id,
                request_id=request.request_id,
                endpoint_host=self._host,
            )
            if not progress.ended:
                self._end(operation, request, progress, exc, retrying=False)
            if exc.maybe_sent and not idempotent:
                self._report(InDoubt.of(operation, request, "error", exc))
            raise
        except anyio.get_cancelled_exc_class():
            # Only a native asyncio cancellation gets through the shield of a written request.
            if progress.sent and not idempotent:
                self._report(InDoubt.of(operation, request, "cancelled"))
            raise
        if self.on_request_end is not None:
            self._end(operation, request, progress, None, retrying=False, result=result)
        return result

    def _end(
        self,
        operation: str,
        request: PreparedRequest,
        progress: _Progress,
        error: CmpayError | None,
        *,
        retrying: bool,
        result: object = None,
    ) -> None:
        """Report the end of the current attempt to ``on_request_end``."""
        progress.ended = True
        if self.on_request_end is None or progress.attempt == 0:
            return
        if isinstance(error, GatewayError):
            return_code: str | None = error.code
        else:
            return_code = getattr(result, "return_code", None)
        event = RequestEnd(
            operation=operation,
            order_id=request.order_id,
            request_id=request.request_id,
            attempt=progress.attempt,
            endpoint_host=self._host,
            duration=time.perf_counter() - progress.started,
            outcome=outcome_of(error),
            return_code=return_code,
            status_code=progress.status,
            maybe_sent=progress.sent if error is None else error.maybe_sent,
            error=None if error is None else type(error).__name__,
            retrying=retrying,
        )
        call_hook("on_request_end", self.on_request_end, event)

    def _report(self, doubt: InDoubt) -> None:
        logger.warning(
            "in doubt: %s orderId=%s requestId=%s (%s): query the order before acting on it",
            doubt.operation,
            doubt.order_id,
            doubt.request_id,
            doubt.reason if doubt.error is None else type(doubt.error).__name__,
        )
        if self.on_in_doubt is not None:
            try:
                self.on_in_doubt(doubt)
            except Exception:
                logger.exception("the on_in_doubt hook raised; the call's outcome is unchanged")

    async def _exchange(
        self, operation: str, request: PreparedRequest, progress: _Progress, idempotent: bool
    ) -> tuple[int, bytes]:
        """POST a prepared request within the total deadline; retry only what is safe.

        Retried: what certainly never reached the gateway and, for an ``idempotent`` request
        (a query), anything. ``progress.sent`` ends true once any attempt may have been sent.
        """
        total = self._timeouts.total
        deadline = anyio.current_time() + total if total is not None else math.inf
        pools = await self._pools.current()
        attempt = 0
        while True:
            attempt += 1
            self._check_open()
            started = time.perf_counter()
            progress.attempt, progress.started, progress.status = attempt, started, None
            progress.ended = False
            logger.debug(
                "-> %s orderId=%s requestId=%s attempt=%d",
                request.message,
                request.order_id,
                request.request_id,
                attempt,
            )
            await self._take_slot(pools.slots, deadline, request, progress)
            if self.on_request_start is not None:
                start = RequestStart(
                    operation=operation,
                    order_id=request.order_id,
                    request_id=request.request_id,
                    attempt=attempt,
                    endpoint_host=self._host,
                )
                call_hook("on_request_start", self.on_request_start, start)
            attempt_progress = _Progress(sent=not pools.precise)
            span = (
                contextlib.nullcontext()
                if self._tracing is None
                else self._tracing.span("cmpay.attempt", {"cmpay.attempt": attempt})
            )
            try:
                # Shielded from the caller's cancel scopes once the request may be written;
                # the deadline still applies inside.
                with span as attempt_span:
                    with anyio.CancelScope(shield=True, deadline=deadline) as scope:
                        error: CmpayError | None = None
                        try:
                            status, body = await self._post(pools.http, request, attempt_progress)
                        except (httpx.HTTPError, httpx.InvalidURL) as exc:
                            error = _translate(
                                exc, order_id=request.order_id, request_id=request.request_id
                            )
                            error.__cause__ = exc
                        except CmpayError as exc:  # an answer too large or badly encoded
                            exc.maybe_sent = True
                            error = exc
                        except Exception as exc:
                            error = _unexpected(exc, request, maybe_sent=attempt_progress.sent)
                    if scope.cancelled_caught:
                        error = TransportTimeoutError(
                            f"no complete answer within the total deadline of {total} s "
                            f"(attempt {attempt}); "
                            + (_MAYBE if attempt_progress.sent else _NEVER),
                            maybe_sent=attempt_progress.sent,
                            order_id=request.order_id,
                            request_id=request.request_id,
                        )
                    if attempt_span is not None and self._tracing is not None:
                        self._tracing.finish(
                            attempt_span,
                            error,
                            **{"http.response.status_code": None if error else status},
                        )
            except BaseException:  # a native cancellation pierced the shield
                progress.sent = progress.sent or attempt_progress.sent
                raise
            finally:
                pools.slots.release()
            # The error's own verdict is the better one (a ConnectError was never sent).
            progress.sent = progress.sent or (error is None or error.maybe_sent)
            if error is None:
                progress.status = status
                self._log_answer(request, status, body, started)
                self._check_answer(status, body, request)
                return status, body
            logger.debug(
                "<- %s orderId=%s requestId=%s failed: %s maybe_sent=%s elapsed=%.1fms",
                request.message,
                request.order_id,
                request.request_id,
                type(error).__name__,
                error.maybe_sent,
                (time.perf_counter() - started) * 1000,
            )
            pause = math.inf
            if (
                isinstance(error, TransportError)
                and not scope.cancelled_caught
                and (idempotent or _retryable(error))
                and attempt < self.retry.attempts
            ):
                pause = self.retry.backoff(attempt, self._rng)
            retrying = anyio.current_time() + pause < deadline
            if not retrying and progress.sent and not error.maybe_sent:
                error.maybe_sent = True  # an earlier attempt of a query may have been sent
            self._end(operation, request, progress, error, retrying=retrying)
            if retrying:
                await anyio.sleep(pause)
                continue
            raise error

    async def _take_slot(
        self,
        slots: anyio.Semaphore,
        deadline: float,
        request: PreparedRequest,
        progress: _Progress,
    ) -> None:
        try:
            slots.acquire_nowait()
            return
        except anyio.WouldBlock:
            pass
        wait = min(self._timeouts.pool, deadline - anyio.current_time())
        with anyio.move_on_after(wait):
            await slots.acquire()
            return
        raise TransportTimeoutError(
            f"waited {wait:.3g} s for one of the client's {self._pools.max_in_flight} request "
            f"slots (max_connections); {_MAYBE if progress.sent else _NEVER}",
            maybe_sent=progress.sent,
            order_id=request.order_id,
            request_id=request.request_id,
        )

    def _log_answer(
        self, request: PreparedRequest, status: int, body: bytes, started: float
    ) -> None:
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

    async def _post(
        self, http: httpx.AsyncClient, request: PreparedRequest, progress: _Progress
    ) -> tuple[int, bytes]:
        http_request = http.build_request(
            "POST",
            self.endpoint,
            content=request.body,
            # identity: a compressed answer could expand a thousandfold before any size check.
            headers={"Content-Type": request.content_type, "Accept-Encoding": "identity"},
            timeout=self._timeout,
            extensions={"trace": progress.trace},
        )
        response = await http.send(http_request, stream=True)
        try:
            if response.is_stream_consumed:  # made in memory (a mock transport): read already
                body = response.content
                if len(body) > MAX_ANSWER:
                    raise _too_large(response.status_code)
                return response.status_code, body
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_ANSWER:
                raise _too_large(response.status_code)
            chunks: list[bytes] = []
            size = 0
            # Raw bytes, at most the limit: a hostile or broken peer cannot exhaust memory.
            # The raw stream itself, closed explicitly: stopping inside response.aiter_raw()
            # leaves httpx's inner async generator to the garbage collector (trio warns).
            raw = response.stream.__aiter__()  # type: ignore[union-attr]
            try:
                async for chunk in raw:
                    size += len(chunk)
                    if size > MAX_ANSWER:
                        raise _too_large(response.status_code)
                    chunks.append(chunk)
            finally:
                close = getattr(raw, "aclose", None)
                if close is not None:
                    await close()
            body = b"".join(chunks)
            encoding = response.headers.get("content-encoding", "").strip().lower()
            if encoding and encoding != "identity":
                body = _inflate(body, encoding, response.status_code)
            return response.status_code, body
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
        exc.maybe_sent = True  # something answered: the gateway may be behind it
        raise exc


#: The gateway's answer to a repeated orderId (or requestId): "订单状态异常".
_ORDER_ID_USED = "RPM22208"


def _unexpected(exc: Exception, request: PreparedRequest, *, maybe_sent: bool) -> TransportError:
    """Any other failure of an attempt, typed; never a bare RuntimeError."""
    error = TransportError(
        f"unexpected {type(exc).__name__} during the exchange: {exc}; "
        + (_MAYBE if maybe_sent else _NEVER),
        maybe_sent=maybe_sent,
        order_id=request.order_id,
        request_id=request.request_id,
    )
    error.__cause__ = exc
    return error


def _too_large(status: int) -> PayloadTooLargeError:
    exc = PayloadTooLargeError(f"the answer is larger than {MAX_ANSWER} bytes")
    exc.status_code, exc.excerpt = status, ""
    return exc


def _inflate(body: bytes, encoding: str, status: int) -> bytes:
    """Decompress an answer sent compressed although we asked for none, up to the limit."""
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS
    else:
        exc = DecodeError(f"the answer uses Content-Encoding {encoding[:20]!r}, not accepted")
        exc.status_code, exc.excerpt = status, ""
        raise exc
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, MAX_ANSWER + 1)
    except zlib.error:
        exc = DecodeError(f"the {encoding} answer does not decompress")
        exc.status_code, exc.excerpt = status, ""
        raise exc from None
    if len(out) > MAX_ANSWER or inflater.unconsumed_tail:
        raise _too_large(status)
    return out


@contextlib.contextmanager
def _answer_context(status: int, body: bytes) -> Iterator[None]:
    """Mark a protocol error about an answer: its HTTP status, an excerpt, and maybe_sent."""
    try:
        yield
    except RemoteProtocolError as exc:
        exc.status_code, exc.excerpt = status, _excerpt(body)
        # The gateway answered something we cannot trust: it may have created the order.
        exc.maybe_sent = True
        raise


def _return_code(body: bytes) -> str:
    """The first returnCode in an unverified answer, cut short: for a log line only."""
    start = body.find(b"returnCode=")
    if start < 0:
        return "-"
    return body[start + 11 :].partition(b"&")[0][:20].decode(errors="replace")
