"""BlockingCmpayClient: CmpayClient for code that cannot await, on a private event-loop thread.

Celery tasks, Django sync views, scripts and notebooks call it like a normal library. It holds
no logic of its own: every call runs the ``CmpayClient`` coroutine of the same name on one
event loop in a daemon thread (anyio's blocking portal), which any number of threads may use
at once. After ``fork`` the child starts its own loop thread (the parent's does not exist
there), and the ``CmpayClient`` underneath gives that loop its own connections.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

import anyio.from_thread
import anyio.lowlevel

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
from ._protocol import PreparedRequest

__all__ = ["BlockingCmpayClient"]

T = TypeVar("T")

# Bumped in a forked child: the parent's loop thread does not exist there.
_generation = 0
# The parent's portals, kept alive in a forked child: collecting one would run its exit,
# which waits forever for a loop thread that was not copied by fork.
_inherited: list[object] = []


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _refuse_inside_a_loop() -> None:
    try:
        anyio.lowlevel.current_token()
    except RuntimeError:  # NoEventLoopError: the normal case, a plain thread
        return
    raise ConfigurationError(
        "BlockingCmpayClient was called from inside a running event loop, where waiting would "
        "block that loop: await the same method of CmpayClient instead "
        "(BlockingCmpayClient.client is one, configured alike)"
    )


class BlockingCmpayClient:
    """``CmpayClient`` with blocking methods, for code that cannot ``await``.

    Build it with the same keyword arguments as ``CmpayClient`` (or around one), once per
    process, and share it between threads. Use it as a context manager or call ``close()``.
    """

    def __init__(
        self, client: CmpayClient | None = None, *, backend: str = "asyncio", **settings: Any
    ) -> None:
        if client is not None and settings:
            raise ConfigurationError("pass either a CmpayClient or its settings, not both")
        self._client = client if client is not None else CmpayClient(**settings)
        self._backend = backend
        self._lock = threading.Lock()
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._exit_portal: Callable[[], object] | None = None
        self._generation = _generation
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
        """Close the connections and stop the loop thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            portal, exit_portal = self._portal, self._exit_portal
            self._portal = self._exit_portal = None
            if self._generation != _generation:  # a forked child: that thread is not here
                _inherited.append((portal, exit_portal))
                return
        if portal is not None and exit_portal is not None:
            try:
                portal.call(self._client.aclose)
            finally:
                exit_portal()

    def _run(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        _refuse_inside_a_loop()
        return self._portal_now().call(functools.partial(fn, *args, **kwargs))

    def _portal_now(self) -> anyio.from_thread.BlockingPortal:
        with self._lock:
            if self._closed:
                raise ClientClosedError("this BlockingCmpayClient is closed; create a new one")
            if self._generation != _generation:
                _inherited.append((self._portal, self._exit_portal))
                self._portal = self._exit_portal = None
                self._generation = _generation
            if self._portal is None:
                stack = contextlib.ExitStack()
                self._portal = stack.enter_context(
                    anyio.from_thread.start_blocking_portal(self._backend)
                )
                self._exit_portal = stack.close
            return self._portal

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

    def verify_notification(
        self, payload: Payload, *, charset: str | None = None
    ) -> PageNotify | OfflineNotify:
        """Verify a notification with the client's key and merchant id (no I/O, no loop)."""
        return self._client.verify_notification(payload, charset=charset)
