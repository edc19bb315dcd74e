"""BlockingCmpayClient: CmpayClient for code that cannot await, on a private loop per thread.

Celery tasks, Django sync views, scripts and notebooks call it like a normal library. It holds
no logic of its own: every call runs the ``CmpayClient`` coroutine of the same name to
completion on an asyncio event loop that belongs to the calling thread (made on its first
call, idle in between). So a call costs no hop to another thread, threads never share a loop,
and the ``CmpayClient`` underneath gives each loop its own keep-alive connections. After
``fork`` the child makes new loops (the parent's are left alone: they share its epoll and
sockets). Loops of threads that have ended are closed at the next new thread's first call,
and all of them by ``close()``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import re
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar, overload

import anyio.lowlevel
import attrs

from ._client import CmpayClient
from ._codec import Payload
from ._enums import Channel
from ._exceptions import ClientClosedError, ConfigurationError
from ._models import (
    OfflineNotify,
    Order,
    OrderQueryResult,
    PageNotify,
    PaymentResponse,
    Placement,
    RefundResult,
)
from ._pools import fork_generation, keep_inherited
from ._protocol import PreparedRequest
from ._reconcile import CONCURRENCY, PER_SECOND, PendingOrder

__all__ = ["BlockingCmpayClient"]

T = TypeVar("T")
S = TypeVar("S")
P = ParamSpec("P")

_CLOSED = "this BlockingCmpayClient is closed; create a new one"


def _loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _refuse_inside_a_loop() -> None:
    try:
        anyio.lowlevel.current_token()
    except RuntimeError:  # NoEventLoopError: the normal case, a plain thread
        # A loop running in this thread outside any task (Playwright's sync API, a greenlet
        # bridge) is missed above, and asyncio would refuse with a bare RuntimeError.
        if not _loop_running_here():
            return
    raise ConfigurationError(
        "BlockingCmpayClient was called from inside a running event loop, where waiting would "
        "block that loop: await the same method of CmpayClient instead "
        "(BlockingCmpayClient.client is one, configured alike)"
    )


def _settings_of(
    source: Callable[P, object],
) -> Callable[[Callable[Concatenate[S, ...], None]], Callable[Concatenate[S, P], None]]:
    """Type a constructor as taking ``source``'s parameters: one list, written once."""

    def typed(init: Callable[Concatenate[S, ...], None]) -> Callable[Concatenate[S, P], None]:
        return init

    return typed


def _run_in_new_loop(coroutine: Callable[[], Coroutine[Any, Any, object]]) -> None:
    """Run a coroutine to completion on a loop of its own, on a helper thread if needed."""
    if not _loop_running_here():
        asyncio.run(coroutine())
        return
    # asyncio refuses to run a loop where one is running (Playwright's sync API).
    helper = threading.Thread(target=asyncio.run, args=(coroutine(),), name="cmpay-close")
    helper.start()
    helper.join()


@attrs.define(eq=False)
class _ThreadLoop:
    """One thread's private event loop; the lock is held while a call runs on it."""

    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    generation: int
    lock: threading.Lock = attrs.field(factory=threading.Lock)


class BlockingCmpayClient:
    """``CmpayClient`` with blocking methods, for code that cannot ``await``.

    Build it with the same keyword arguments as ``CmpayClient`` (or around one), once per
    process, and share it between threads. Use it as a context manager or call ``close()``.
    """

    @overload
    def __init__(self, client: CmpayClient, /) -> None: ...

    @overload
    @_settings_of(CmpayClient)
    def __init__(self) -> None: ...

    def __init__(self, client: CmpayClient | None = None, /, **settings: Any) -> None:
        if client is not None and settings:
            raise ConfigurationError("pass either a CmpayClient or its settings, not both")
        self._client = client if client is not None else CmpayClient(**settings)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._loops: list[_ThreadLoop] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"BlockingCmpayClient({self._client!r})"

    def __enter__(self) -> BlockingCmpayClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def client(self) -> CmpayClient:
        """The async client underneath: use it from async code."""
        return self._client

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

    def close(self) -> None:
        """Close every thread's connections and loop (waiting for calls in progress)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loops, self._loops = self._loops, []
        for thread_loop in loops:
            self._shut(thread_loop)
        # Every loop's pool was closed with its loop: this marks the client closed (and
        # closes a transport it owns) with nothing left open to warn about.
        _run_in_new_loop(self._client.aclose)

    def _shut(self, thread_loop: _ThreadLoop) -> None:
        if thread_loop.generation != fork_generation():
            # A forked child's copy of the parent's loop: closing it would only close the
            # child's copies of the descriptors, but a collected, unclosed loop warns.
            keep_inherited(thread_loop)
            return
        with thread_loop.lock:
            loop = thread_loop.loop
            if loop.is_closed():
                return
            if not _loop_running_here():
                self._close_loop(loop)
                return
            # close() from a thread where a loop runs (a test under Playwright's sync API, an
            # atexit hook inside a framework): asyncio would refuse to run ours here.
            closer = threading.Thread(target=self._close_loop, args=(loop,), name="cmpay-close")
            closer.start()
            closer.join()

    @staticmethod
    def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
        try:
            # The client's pool of this loop closes with the loop's async generators.
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def _run(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        _refuse_inside_a_loop()
        thread_loop = self._thread_loop()
        with thread_loop.lock:
            if thread_loop.loop.is_closed():  # close() ran in another thread meanwhile
                raise ClientClosedError(_CLOSED)
            return thread_loop.loop.run_until_complete(fn(*args, **kwargs))

    def _thread_loop(self) -> _ThreadLoop:
        if self._closed:
            raise ClientClosedError(_CLOSED)
        thread_loop: _ThreadLoop | None = getattr(self._local, "loop", None)
        generation = fork_generation()
        if thread_loop is not None and thread_loop.generation == generation:
            return thread_loop
        thread_loop = _ThreadLoop(
            loop=asyncio.new_event_loop(),
            thread=threading.current_thread(),
            generation=generation,
        )
        with self._lock:
            ended = [
                t for t in self._loops if not t.thread.is_alive() or t.generation != generation
            ]
            self._loops = [t for t in self._loops if t not in ended]
            self._loops.append(thread_loop)
        for old in ended:
            self._shut(old)
        self._local.loop = thread_loop
        return thread_loop

    # -- the client's methods, blocking -------------------------------------------------------

    def new_request_id(self) -> str:
        """A unique request id (see ``CmpayClient.new_request_id``)."""
        return self._client.new_request_id()

    def prepare_payment(
        self,
        order: Order,
        *,
        ip_address: str,
        request_id: str | None = None,
        channel: Channel = Channel.WEB,
    ) -> PreparedRequest:
        """Validate and sign a payment request without sending it."""
        return self._client.prepare_payment(
            order, ip_address=ip_address, request_id=request_id, channel=channel
        )

    def create_payment(
        self,
        order: Order,
        *,
        ip_address: str,
        request_id: str | None = None,
        channel: Channel = Channel.WEB,
    ) -> PaymentResponse:
        """Place an order; see ``CmpayClient.create_payment``."""
        return self._run(
            self._client.create_payment,
            order,
            ip_address=ip_address,
            request_id=request_id,
            channel=channel,
        )

    def place_order(
        self, order: Order, *, ip_address: str, channel: Channel = Channel.WEB
    ) -> Placement:
        """Create the payment, or say what became of it; see ``CmpayClient.place_order``."""
        return self._run(self._client.place_order, order, ip_address=ip_address, channel=channel)

    def query_order(self, order_id: str, *, request_id: str | None = None) -> OrderQueryResult:
        """Ask the gateway what became of an order; see ``CmpayClient.query_order``."""
        return self._run(self._client.query_order, order_id, request_id=request_id)

    def refund(self, order_id: str, amount: int, *, request_id: str | None = None) -> RefundResult:
        """Refund ``amount`` fen of a paid order; see ``CmpayClient.refund``."""
        return self._run(self._client.refund, order_id, amount, request_id=request_id)

    def reconcile(
        self,
        pending: Iterable[PendingOrder],
        *,
        now: dt.datetime | None = None,
        concurrency: int = CONCURRENCY,
        per_second: float = PER_SECOND,
    ) -> list[OrderQueryResult]:
        """Query the pending orders that are due; see ``CmpayClient.reconcile`` (a list here)."""

        async def collect() -> list[OrderQueryResult]:
            return [
                result
                async for result in self._client.reconcile(
                    pending, now=now, concurrency=concurrency, per_second=per_second
                )
            ]

        return self._run(collect)

    def verify_notification(
        self,
        payload: Payload,
        *,
        charset: str | None = None,
        order_id_pattern: str | re.Pattern[str] | None = None,
    ) -> PageNotify | OfflineNotify:
        """Verify a notification with the client's key and merchant id (no I/O, no loop)."""
        return self._client.verify_notification(
            payload, charset=charset, order_id_pattern=order_id_pattern
        )


_CLIENT_PARAMETERS = list(inspect.signature(CmpayClient).parameters.values())
# What help() and inspect show: a CmpayClient, or the keyword arguments of one.
BlockingCmpayClient.__init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY),
        inspect.Parameter(
            "client",
            inspect.Parameter.POSITIONAL_ONLY,
            default=None,
            annotation="CmpayClient | None",
        ),
        *_CLIENT_PARAMETERS,
    ],
    return_annotation="None",
)
