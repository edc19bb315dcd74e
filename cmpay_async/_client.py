"""CmpayClient: the async shell around the pure core, on httpx. Works on asyncio and trio.

The client owns the configuration, the per-loop pools and the operations; each operation
prepares a request with the core (``_protocol``) and hands it to the call engine
(``_engine``), which owns the deadline, the slot, the attempts, the shield and the in-doubt
report, and posts through the transport (``_transport``), the one place where httpx
exceptions become cmpay-async errors. Settings and their checks are in ``_settings``, the
retry decision in ``_retry``.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import random
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from types import TracebackType
from typing import Any

import httpx

from ._codec import Payload
from ._endpoints import safe_url
from ._engine import Engine
from ._enums import Channel, CharacterSet, OrderState
from ._exceptions import (
    ClientClosedError,
    CmpayError,
    ConfigurationError,
    GatewayError,
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
from ._observe import Observer, RequestEnd, RequestStart, Tracing
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
from ._retry import RetryPolicy
from ._settings import (
    PRODUCTION_ENDPOINT,
    InDoubt,
    Timeouts,
    check_max_connections,
    check_pool_choice,
    checked_host,
    checked_verifier,
)
from ._signing import Signer, Verifier

__all__ = ["CmpayClient"]

logger = logging.getLogger("cmpay_async")

#: The gateway's answer to a repeated orderId (or requestId): "订单状态异常".
_ORDER_ID_USED = "RPM22208"


#: The endpoint parsed once per process (an ``httpx.URL`` is immutable): clients built per
#: request or per test would otherwise spend half their construction parsing the same text.
_parsed_url = functools.lru_cache(maxsize=16)(httpx.URL)


def _china_now() -> dt.datetime:
    return dt.datetime.now(CHINA_TZ)


def _loop_pools(
    endpoint: str,
    timeout: httpx.Timeout,
    http_client: httpx.AsyncClient | None,
    transport: httpx.AsyncBaseTransport | None,
    max_connections: int,
) -> LoopPools:
    """The per-loop, per-process pools: the caller's client, or ours over their transport."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )

    def make_http() -> httpx.AsyncClient:
        if http_client is not None:
            return http_client
        if transport is not None:
            return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False)
        return httpx.AsyncClient(
            verify=shared_ssl_context(), timeout=timeout, follow_redirects=False, limits=limits
        )

    # Callers beyond the pool's size wait for a slot, not in httpcore's queue: its
    # bookkeeping grows with the queue (1,000 waiting tasks made every request time out),
    # while this wait is O(1) and, being before any I/O, never leaves a request half sent.
    # The pool itself stays small by default because httpcore checks every pooled
    # connection on every request (measured: 1,000 orders took 1.2 s with 10 connections,
    # 6.1 s with 100, against the same sandbox).
    return LoopPools(
        max_in_flight=max_connections,
        make_http=make_http,
        owns_pools=http_client is None and transport is None,
        single_loop=http_client is not None,
        # Only httpcore's own transports report when the request starts to be written.
        precise=http_client is None
        and (transport is None or isinstance(transport, httpx.AsyncHTTPTransport)),
        # A caller's own client keeps every layer it was given (hooks, auth, cookies).
        route_to=_parsed_url(endpoint) if http_client is None else None,
    )


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
        self._verifier = checked_verifier(signer, verifier)
        check_pool_choice(http_client, transport)
        self._host = checked_host(endpoint, transport, allow_insecure_http=allow_insecure_http)
        check_max_connections(max_connections)
        self.merchant_id, self.endpoint = merchant_id, endpoint
        self.callback_url, self.notify_url = callback_url, notify_url
        self.character_set = CharacterSet(character_set)
        self.extra_bank_codes = frozenset(extra_bank_codes)
        self._signer, self._clock = signer, clock
        self._timeouts = timeouts or Timeouts()
        self._timeout = self._timeouts.to_httpx()
        self._transport, self._closed = transport, False
        self._owns_transport = http_client is None and transport is not None
        self._pools = _loop_pools(endpoint, self._timeout, http_client, transport, max_connections)
        # None unless asked for: the untraced path pays one test per call and attempt.
        self._tracing = Tracing(tracer_provider) if tracing or tracer_provider else None
        self._engine = Engine(
            url=_parsed_url(endpoint),
            timeouts=self._timeouts,
            # Every request carries them: a caller's client has defaults of its own.
            request_timeout=self._timeout,
            retry=retry or RetryPolicy(),
            rng=rng or random.Random(),  # noqa: S311 - backoff jitter, not cryptography
            pools=self._pools,
            observer=Observer(self._host, on_request_start, on_request_end, self._tracing),
            on_in_doubt=on_in_doubt,
            check_open=self._check_open,
        )
        self._observer = self._engine.observer

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

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of every call."""
        return self._engine.retry

    @retry.setter
    def retry(self, policy: RetryPolicy) -> None:
        self._engine.retry = policy

    @property
    def on_in_doubt(self) -> Callable[[InDoubt], object] | None:
        """Called with an ``InDoubt`` record when a call may have acted unseen."""
        return self._engine.on_in_doubt

    @on_in_doubt.setter
    def on_in_doubt(self, hook: Callable[[InDoubt], object] | None) -> None:
        self._engine.on_in_doubt = hook

    @property
    def on_request_start(self) -> Callable[[RequestStart], object] | None:
        """Called with a ``RequestStart`` event when an attempt is about to be sent."""
        return self._observer.on_request_start

    @on_request_start.setter
    def on_request_start(self, hook: Callable[[RequestStart], object] | None) -> None:
        self._observer.on_request_start = hook

    @property
    def on_request_end(self) -> Callable[[RequestEnd], object] | None:
        """Called with a ``RequestEnd`` event when an attempt ends."""
        return self._observer.on_request_end

    @on_request_end.setter
    def on_request_end(self, hook: Callable[[RequestEnd], object] | None) -> None:
        self._observer.on_request_end = hook

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
            # A member's value directly: Channel(member).value costs a lookup and a descriptor.
            message=channel._value_ if type(channel) is Channel else Channel(channel).value,
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
        with _Preparing("create_payment", order, request_id, self._host):
            self._check_open()
            request = self.prepare_payment(
                order, ip_address=ip_address, request_id=request_id, channel=channel
            )
        return await self._engine.call(
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
        with _Preparing("query_order", order_id, request_id, self._host):
            self._check_open()
            request = build_order_request(
                "OrderQuery",
                order_id,
                merchant_id=self.merchant_id,
                request_id=request_id or self.new_request_id(),
                signer=self._signer,
                character_set=self.character_set,
            )
        return await self._engine.call(
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
        with _Preparing("refund", order_id, request_id, self._host):
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
        return await self._engine.call(
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
        return _traced_reconcile(
            self._tracing, self._host, self.query_order, pending, now, concurrency, per_second
        )

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
        return _traced_verify(self._tracing, verify)


class _Preparing:
    """Errors raised while preparing a call name the call too (before any I/O)."""

    __slots__ = ("host", "operation", "order", "request_id")

    def __init__(self, operation: str, order: object, request_id: str | None, host: str) -> None:
        self.operation, self.order, self.request_id, self.host = operation, order, request_id, host

    def __enter__(self) -> None:
        pass

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(exc, CmpayError):
            order_id = getattr(self.order, "order_id", self.order)
            exc.add_context(
                operation=self.operation,
                order_id=order_id if isinstance(order_id, str) else None,
                request_id=self.request_id,
                endpoint_host=self.host,
            )


async def _traced_reconcile(
    tracing: Tracing,
    host: str,
    query_order: Callable[[str], Awaitable[OrderQueryResult]],
    pending: Iterable[PendingOrder],
    now: dt.datetime | None,
    concurrency: int,
    per_second: float,
) -> AsyncIterator[OrderQueryResult]:
    """``reconcile`` in a ``cmpay.reconcile`` span, the parent of every query's span."""
    # Not the current span: the generator yields to its consumer, whose context must not
    # change; each query task enters the span's context itself.
    span, parent = tracing.detached(
        "cmpay.reconcile", {"cmpay.concurrency": concurrency, "server.address": host}
    )

    async def query(order_id: str) -> OrderQueryResult:
        with tracing.within(parent):
            return await query_order(order_id)

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


def _traced_verify(
    tracing: Tracing, verify: Callable[[], PageNotify | OfflineNotify]
) -> PageNotify | OfflineNotify:
    """``verify_notification`` in a ``cmpay.verify_notification`` span."""
    with tracing.span("cmpay.verify_notification") as span:
        try:
            note = verify()
        except CmpayError as exc:
            tracing.finish(span, exc)
            raise
        tracing.finish(span, None, **{"cmpay.interface": note.type})
        return note
