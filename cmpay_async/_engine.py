"""The call engine: one operation's exchange, from deadline to verdict.

Three promises hold for every call, whatever happens around it:

- **A total deadline** (``Timeouts.total``) bounds the call: queueing for a slot, every
  attempt, backoff and the reading of a slow answer. It ends in ``TransportTimeoutError``
  whose ``maybe_sent`` says whether the request had started to be written.
- **Cancel-safety.** Once a request may be written, the exchange runs shielded from the
  caller's cancel scopes (bounded by the deadline), so its outcome is returned or raised
  rather than lost; a native asyncio cancellation (``Task.cancel``, ``asyncio.timeout``),
  which no shield stops, is reported to ``on_in_doubt`` with the order id.
- **No foreign error escapes.** The transport (``_transport``) turns every failure into our
  error; the retry decision is ``RetryPolicy.next_step`` (``_retry``), and what is seen of
  the call (logs, hooks, spans) goes through one ``Observer`` (``_observe``).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

import anyio
import httpx

from ._exceptions import CmpayError, RemoteProtocolError, TransportTimeoutError
from ._observe import Attempt, Observer, Tracing
from ._pools import LoopPools, PoolState
from ._protocol import PreparedRequest
from ._retry import CallState, RetryPolicy
from ._settings import InDoubt, Timeouts
from ._transport import MAYBE, NEVER, SentFlag, check_answer, excerpt, post

__all__ = ["Engine"]

R = TypeVar("R")

logger = logging.getLogger("cmpay_async")


class _Exchanged:
    """One attempt's outcome inside its shield: an answer, or the error it ended in."""

    __slots__ = ("body", "error", "status")

    def __init__(self) -> None:
        self.status = 0
        self.body = b""
        self.error: CmpayError | None = None


class Engine:
    """Runs a prepared request: deadline, slot, attempts, shield, retries and in-doubt."""

    def __init__(
        self,
        *,
        url: httpx.URL,
        timeouts: Timeouts,
        request_timeout: httpx.Timeout,
        retry: RetryPolicy,
        rng: random.Random,
        pools: LoopPools,
        observer: Observer,
        on_in_doubt: Callable[[InDoubt], object] | None,
        check_open: Callable[[], None],
    ) -> None:
        self.url = url
        self.timeouts = timeouts
        self.request_timeout = request_timeout
        self.retry = retry
        self.rng = rng
        self.pools = pools
        self.observer = observer
        self.on_in_doubt = on_in_doubt
        self.check_open = check_open
        self.host = observer.host

    def call(
        self,
        operation: str,
        request: PreparedRequest,
        parse: Callable[[bytes], R],
        *,
        idempotent: bool = False,
    ) -> Coroutine[Any, Any, R]:
        """Exchange and parse (a coroutine), in a span when tracing is on."""
        state = CallState()
        tracing = self.observer.tracing
        if tracing is None:  # the coroutine itself: no frame of our own to pass through
            return self._call(operation, request, parse, state, idempotent)
        return self._traced(tracing, operation, request, parse, state, idempotent)

    async def _traced(
        self,
        tracing: Tracing,
        operation: str,
        request: PreparedRequest,
        parse: Callable[[bytes], R],
        state: CallState,
        idempotent: bool,
    ) -> R:
        attributes = {"cmpay.interface": request.message, "server.address": self.host}
        with tracing.span(f"cmpay.{operation}", attributes) as span:
            error: BaseException | None = None
            result: Any = None
            try:
                result = await self._call(operation, request, parse, state, idempotent)
                return result  # type: ignore[no-any-return]
            except BaseException as exc:
                error = exc
                raise
            finally:
                tracing.finish(
                    span,
                    error,
                    **{
                        "cmpay.attempts": state.attempt,
                        "cmpay.return_code": getattr(result, "return_code", None),
                    },
                )

    async def _call(
        self,
        operation: str,
        request: PreparedRequest,
        parse: Callable[[bytes], R],
        state: CallState,
        idempotent: bool,
    ) -> R:
        """Exchange and parse; every error carries the call's context, and doubts are reported."""
        try:
            status, body = await self._exchange(operation, request, state, idempotent)
            try:
                result = parse(body)
            except RemoteProtocolError as exc:
                # The core that raised it never saw the HTTP answer: this is the one place
                # that says which answer it was about (and that it may have been acted on).
                exc.status_code, exc.excerpt = status, excerpt(body)
                exc.maybe_sent = True
                raise
        except CmpayError as exc:
            exc.add_context(
                operation=operation,
                order_id=request.order_id,
                request_id=request.request_id,
                endpoint_host=self.host,
            )
            if not state.reported:
                self._end(operation, request, state, exc, retrying=False)
            if exc.maybe_sent and not idempotent:
                self._doubt(InDoubt.of(operation, request, "error", exc))
            raise
        except anyio.get_cancelled_exc_class():
            # Only a native asyncio cancellation gets through the shield of a written request.
            if state.sent and not idempotent:
                self._doubt(InDoubt.of(operation, request, "cancelled"))
            raise
        if self.observer.on_request_end is not None:
            self.observer.end(
                self._record(
                    operation,
                    request,
                    state,
                    return_code=getattr(result, "return_code", None),
                    maybe_sent=state.sent,
                )
            )
        return result

    @staticmethod
    def _record(
        operation: str,
        request: PreparedRequest,
        state: CallState,
        *,
        error: CmpayError | None = None,
        return_code: str | None = None,
        maybe_sent: bool = True,
        retrying: bool = False,
        phase: Literal["queue", "exchange", "answer"] | None = None,
    ) -> Attempt:
        """The frozen record of the current attempt's end, now."""
        if phase is None:
            phase = "queue" if state.status is None else "answer"
        return Attempt(
            operation=operation,
            message=request.message,
            order_id=request.order_id,
            request_id=request.request_id,
            attempt=state.attempt,
            started=state.started,
            ended=time.perf_counter(),
            phase=phase,
            status=state.status,
            error=error,
            return_code=return_code,
            maybe_sent=maybe_sent,
            retrying=retrying,
        )

    def _end(
        self,
        operation: str,
        request: PreparedRequest,
        state: CallState,
        error: CmpayError,
        *,
        retrying: bool,
        phase: Literal["queue", "exchange", "answer"] | None = None,
    ) -> None:
        """Report how the current attempt ended (once), if anything listens."""
        state.reported = True
        if self.observer.wants_ends:
            record = self._record(
                operation,
                request,
                state,
                error=error,
                maybe_sent=error.maybe_sent,
                retrying=retrying,
                phase=phase,
            )
            self.observer.end(record)

    def _doubt(self, doubt: InDoubt) -> None:
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
        self, operation: str, request: PreparedRequest, state: CallState, idempotent: bool
    ) -> tuple[int, bytes]:
        """POST within the total deadline, retrying what ``RetryPolicy.next_step`` allows.

        ``state.sent`` ends true once any attempt may have been sent.
        """
        pools = self.pools.existing() or await self.pools.current()
        total = self.timeouts.total
        deadline = pools.now() + total if total is not None else math.inf
        observer = self.observer
        while True:
            self.check_open()
            attempt = state.begin(time.perf_counter())
            observer.sending(request.message, request.order_id, request.request_id, attempt)
            try:
                pools.slots.acquire_nowait()
            except anyio.WouldBlock:
                await self._wait_for_slot(pools, deadline, request, state)
            if observer.on_request_start is not None:
                observer.start(operation, request.order_id, request.request_id, attempt)
            outcome = await self._attempt(pools, request, state, attempt, deadline)
            error = outcome.error
            if error is None:
                state.settle(True)
                state.status = outcome.status
                if logger.isEnabledFor(logging.DEBUG):
                    observer.answered(self._record(operation, request, state), outcome.body)
                check_answer(outcome.status, outcome.body, request)
                return outcome.status, outcome.body
            # The error's own verdict is the better one (a ConnectError was never sent).
            state.settle(error.maybe_sent)
            pause = self.retry.next_step(
                error,
                attempt=attempt,
                time_left=deadline - pools.now(),
                idempotent=idempotent,
                rng=self.rng,
            )
            retrying = pause is not None
            self._end(operation, request, state, error, retrying=retrying, phase="exchange")
            if pause is None:
                raise error
            await anyio.sleep(pause)

    async def _attempt(
        self,
        pools: PoolState,
        request: PreparedRequest,
        state: CallState,
        attempt: int,
        deadline: float,
    ) -> _Exchanged:
        """One POST, holding a slot (released here), shielded and bounded by the deadline."""
        flag = SentFlag(sent=not pools.precise)
        outcome = _Exchanged()
        try:
            with self.observer.attempt_span(attempt) as span:
                # Shielded from the caller's cancel scopes once the request may be written;
                # the deadline still applies inside.
                with pools.shield(deadline) as scope:
                    try:
                        outcome.status, outcome.body = await post(
                            pools.http,
                            self.url,
                            request,
                            timeout=self.request_timeout,
                            flag=flag,
                            sent_before=state.sent,
                            route=pools.route,
                        )
                    except CmpayError as exc:
                        outcome.error = exc
                if scope.cancelled_caught:
                    outcome.error = self._late(request, attempt, flag.sent, state.sent)
                self.observer.finish_attempt(span, outcome.error, outcome.status)
        except BaseException:  # a native cancellation pierced the shield
            state.settle(flag.sent)
            raise
        finally:
            pools.slots.release()
        return outcome

    def _late(
        self, request: PreparedRequest, attempt: int, sent: bool, sent_before: bool
    ) -> TransportTimeoutError:
        return TransportTimeoutError(
            f"no complete answer within the total deadline of {self.timeouts.total} s "
            f"(attempt {attempt}); " + (MAYBE if sent else NEVER),
            maybe_sent=sent or sent_before,
            order_id=request.order_id,
            request_id=request.request_id,
        )

    async def _wait_for_slot(
        self,
        pools: PoolState,
        deadline: float,
        request: PreparedRequest,
        state: CallState,
    ) -> None:
        wait = min(self.timeouts.pool, deadline - pools.now())
        with anyio.move_on_after(wait):
            await pools.slots.acquire()
            return
        raise TransportTimeoutError(
            f"waited {wait:.3g} s for one of the client's {self.pools.max_in_flight} request "
            f"slots (max_connections); {MAYBE if state.sent else NEVER}",
            maybe_sent=state.sent,
            order_id=request.order_id,
            request_id=request.request_id,
        )
