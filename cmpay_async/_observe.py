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

__all__ = ["Outcome", "RequestEnd", "RequestStart", "Tracing", "call_hook", "outcome_of"]

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
