"""What an operator sees of each call: hook events and opt-in OpenTelemetry spans.

Hooks (``on_request_start``, ``on_request_end``) get one event per attempt, holding no key,
no hmac, no personal data and no amount. Tracing is off unless asked for; then the client
makes a span per operation (``cmpay.create_payment``, ``cmpay.query_order``, ``cmpay.refund``,
``cmpay.verify_notification``, ``cmpay.reconcile``) with a child span per attempt
(``cmpay.attempt``), inside which httpx's own spans nest when its instrumentation is on.
OpenTelemetry is imported only then (``pip install 'cmpay-async[otel]'``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, Literal

import attrs

from ._exceptions import CmpayError, ConfigurationError, GatewayError
from ._version import __version__

__all__ = [
    "Attempt",
    "Observer",
    "Outcome",
    "RequestEnd",
    "RequestStart",
    "Tracing",
    "call_hook",
    "outcome_of",
]

logger = logging.getLogger("cmpay_async")

#: ``success``: a verified success answer; ``gateway_error``: a verified failure return code;
#: ``error``: anything else (transport, an answer that cannot be trusted, a deadline).
Outcome = Literal["success", "gateway_error", "error"]


@attrs.frozen(kw_only=True)
class RequestStart:
    """Handed to ``on_request_start`` when an attempt is about to be sent."""

    operation: str
    order_id: str
    request_id: str
    #: 1 for the first attempt; retries count up.
    attempt: int
    endpoint_host: str


@attrs.frozen(kw_only=True)
class RequestEnd:
    """Handed to ``on_request_end`` when an attempt ends, with what became of it."""

    operation: str
    order_id: str
    request_id: str
    attempt: int
    endpoint_host: str
    #: Seconds from the attempt's start (slot wait included) to its outcome.
    duration: float
    outcome: Outcome
    #: The gateway's return code, when a verified answer gave one.
    return_code: str | None = None
    status_code: int | None = None
    maybe_sent: bool = False
    #: The error's class name (``ConnectError``, ``GatewayError``, ...), if the attempt failed.
    error: str | None = None
    #: True when the client tries again after this attempt.
    retrying: bool = False


def outcome_of(error: CmpayError | None) -> Outcome:
    """The outcome an error (or its absence) stands for."""
    if error is None:
        return "success"
    if isinstance(error, GatewayError) and error.verified:
        return "gateway_error"
    return "error"


def call_hook(name: str, hook: Callable[[Any], object] | None, event: object) -> None:
    """Call a merchant's hook; one that raises is logged and changes nothing."""
    if hook is None:
        return
    try:
        hook(event)
    except Exception:
        logger.exception("the %s hook raised; the call's outcome is unchanged", name)


class Tracing:
    """Spans of one client, made through OpenTelemetry's API (imported here, only here)."""

    def __init__(self, tracer_provider: Any = None) -> None:
        try:
            import opentelemetry.context as context
            import opentelemetry.trace as trace
        except ImportError:
            raise ConfigurationError(
                "tracing needs OpenTelemetry: pip install 'cmpay-async[otel]'"
            ) from None
        self._trace = trace
        self._context = context
        provider = tracer_provider or trace.get_tracer_provider()
        self.tracer = provider.get_tracer("cmpay_async", __version__)

    @contextlib.contextmanager
    def span(self, name: str, attributes: dict[str, Any] | None = None) -> Iterator[Any]:
        """A current span of kind CLIENT; the caller sets the outcome with ``finish``."""
        with self.tracer.start_as_current_span(
            name,
            kind=self._trace.SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    def finish(self, span: Any, error: BaseException | None, **attributes: Any) -> None:
        """Outcome attributes and status: the error's class and code, never its payload."""
        for key, value in attributes.items():
            if value is not None:
                span.set_attribute(key, value)
        if isinstance(error, CmpayError) or error is None:
            span.set_attribute("cmpay.outcome", outcome_of(error))
        else:
            span.set_attribute("cmpay.outcome", "cancelled")
        if error is not None:
            span.set_attribute("error.type", type(error).__name__)
            if isinstance(error, CmpayError):
                span.set_attribute("cmpay.maybe_sent", error.maybe_sent)
            if isinstance(error, GatewayError):
                span.set_attribute("cmpay.return_code", error.code)
            status = self._trace.Status(self._trace.StatusCode.ERROR, type(error).__name__)
            span.set_status(status)

    def detached(self, name: str, attributes: dict[str, Any]) -> tuple[Any, Any]:
        """A span that is not made current (it outlives yields); and its context."""
        span = self.tracer.start_span(name, kind=self._trace.SpanKind.CLIENT, attributes=attributes)
        return span, self._trace.set_span_in_context(span)

    @contextlib.contextmanager
    def within(self, parent: Any) -> Iterator[None]:
        """Make ``parent`` (a context from ``detached``) current for the block."""
        token = self._context.attach(parent)
        try:
            yield
        finally:
            self._context.detach(token)


#: A context manager that does nothing, shared: the untraced path makes none per attempt.
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


@attrs.frozen(kw_only=True)
class Attempt:
    """The frozen record of how one attempt ended, from which logs, hooks and spans are fed."""

    operation: str
    message: str
    order_id: str
    request_id: str
    attempt: int
    #: ``time.perf_counter()`` when the attempt started (its slot wait included).
    started: float
    ended: float
    #: ``queue``: no slot in time; ``exchange``: the POST failed; ``answer``: an answer came.
    phase: Literal["queue", "exchange", "answer"]
    status: int | None = None
    error: CmpayError | None = None
    #: The verified answer's return code (a result's, or a refusal's).
    return_code: str | None = None
    maybe_sent: bool = False
    retrying: bool = False

    def event(self, endpoint_host: str) -> RequestEnd:
        """The hook's view of the record: names and codes, never the error's text."""
        error = self.error
        return RequestEnd(
            operation=self.operation,
            order_id=self.order_id,
            request_id=self.request_id,
            attempt=self.attempt,
            endpoint_host=endpoint_host,
            duration=self.ended - self.started,
            outcome=outcome_of(error),
            return_code=error.code if isinstance(error, GatewayError) else self.return_code,
            status_code=self.status,
            maybe_sent=self.maybe_sent,
            error=None if error is None else type(error).__name__,
            retrying=self.retrying,
        )


class Observer:
    """The one place a call is reported from: debug log lines, the two hooks, and spans.

    Each feed costs nothing unless it is on: a hook when set, spans when tracing, log lines
    when the ``cmpay_async`` logger is enabled for DEBUG.
    """

    __slots__ = ("host", "on_request_end", "on_request_start", "tracing")

    def __init__(
        self,
        endpoint_host: str,
        on_request_start: Callable[[RequestStart], object] | None,
        on_request_end: Callable[[RequestEnd], object] | None,
        tracing: Tracing | None,
    ) -> None:
        #: The endpoint's host, named in events and spans (never the URL).
        self.host = endpoint_host
        self.on_request_start = on_request_start
        self.on_request_end = on_request_end
        self.tracing = tracing

    @property
    def wants_ends(self) -> bool:
        """Whether an attempt's end is reported anywhere (so worth making a record of)."""
        return self.on_request_end is not None or logger.isEnabledFor(logging.DEBUG)

    def sending(self, message: str, order_id: str, request_id: str, attempt: int) -> None:
        """An attempt begins: it will wait for a slot, then be sent."""
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "-> %s orderId=%s requestId=%s attempt=%d", message, order_id, request_id, attempt
            )

    def start(self, operation: str, order_id: str, request_id: str, attempt: int) -> None:
        """An attempt holds its slot and is about to be sent: ``on_request_start``."""
        start = RequestStart(
            operation=operation,
            order_id=order_id,
            request_id=request_id,
            attempt=attempt,
            endpoint_host=self.host,
        )
        call_hook("on_request_start", self.on_request_start, start)

    def answered(self, record: Attempt, body: bytes) -> None:
        """An answer came (before it is checked): its log line, with its first returnCode."""
        if logger.isEnabledFor(logging.DEBUG):  # finding the return code costs a scan
            logger.debug(
                "<- %s orderId=%s requestId=%s status=%d returnCode=%s elapsed=%.1fms",
                record.message,
                record.order_id,
                record.request_id,
                record.status,
                _return_code(body),
                (record.ended - record.started) * 1000,
            )

    def end(self, record: Attempt) -> None:
        """An attempt ended: a failed exchange is logged, and ``on_request_end`` is told."""
        error = record.error
        if error is not None and record.phase == "exchange":
            logger.debug(
                "<- %s orderId=%s requestId=%s failed: %s maybe_sent=%s elapsed=%.1fms",
                record.message,
                record.order_id,
                record.request_id,
                type(error).__name__,
                error.maybe_sent,
                (record.ended - record.started) * 1000,
            )
        if self.on_request_end is not None and record.attempt:
            call_hook("on_request_end", self.on_request_end, record.event(self.host))

    def attempt_span(self, attempt: int) -> contextlib.AbstractContextManager[Any]:
        """The ``cmpay.attempt`` span, current while the request is exchanged (or no span)."""
        if self.tracing is None:
            return _NO_SPAN
        return self.tracing.span("cmpay.attempt", {"cmpay.attempt": attempt})

    def finish_attempt(self, span: Any, error: CmpayError | None, status: int | None) -> None:
        """Close an attempt's span with its outcome (no-op untraced)."""
        if span is not None and self.tracing is not None:
            self.tracing.finish(
                span, error, **{"http.response.status_code": None if error else status}
            )


def _return_code(body: bytes) -> str:
    """The first returnCode in an unverified answer, cut short: for a log line only."""
    start = body.find(b"returnCode=")
    if start < 0:
        return "-"
    return body[start + 11 :].partition(b"&")[0][:20].decode(errors="replace")
