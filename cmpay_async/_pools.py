"""One connection pool and one in-flight limit per event loop and per process, made lazily.

A ``CmpayClient`` is configured once (typically at module level) and then used from whatever
runs it: successive ``asyncio.run()`` calls, several threads each with its own loop, trio and
asyncio in turn, and forked worker processes. Sockets, semaphores and httpx's pool belong to
the event loop that made them, and a socket inherited across ``fork`` is shared with the
parent; so nothing here is ever shared across loops or processes:

- each event loop gets its own ``httpx.AsyncClient`` and ``anyio.Semaphore`` on first use;
- when that loop ends, an async generator registered with it (asyncio's ``asyncio.run`` and
  trio both finalise the async generators still alive at the end of a run) closes its pool,
  so no socket outlives its loop;
- after ``fork`` the child forgets the parent's pools without touching them (closing them
  would end the parent's TLS sessions) and builds its own.

The TLS context, the expensive part of an httpx client (about 25 ms: it loads the CA file),
is built once per process and shared, since ``ssl.SSLContext`` is safe to share.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import ssl
import threading
import weakref
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import attrs
import httpx

from ._exceptions import ConfigurationError

__all__ = [
    "LoopPools",
    "PoolState",
    "Route",
    "direct_route",
    "fork_generation",
    "keep_inherited",
    "shared_ssl_context",
]

logger = logging.getLogger("cmpay_async")

#: Seconds a pool may take to close when its loop ends.
_CLOSE_TIMEOUT = 5.0

# Bumped in a forked child: every LoopPools then drops what it inherited.
_generation = 0
# Pools inherited across fork: kept alive (never closed, never collected) in the child, so
# that neither a close nor a garbage collection touches the parent's connections.
_inherited: list[object] = []


_all_pools: weakref.WeakSet[LoopPools] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1
    # Strong references from the start: the parent's loops die with its other threads, and a
    # garbage-collected pool would close its copies of the parent's sockets (and wake the
    # parent's loop through its inherited self-pipe).
    for pools in list(_all_pools):
        _inherited.append(dict(pools._states))


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


def fork_generation() -> int:
    """How many forks lie between this process and the one that imported cmpay_async."""
    return _generation


def keep_inherited(thing: object) -> None:
    """Keep something a forked child inherited alive, untouched, for the child's lifetime."""
    _inherited.append(thing)


@functools.lru_cache(maxsize=1)
def shared_ssl_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi, honouring SSL_CERT_FILE), built once per process."""
    return httpx.create_ssl_context()


class ShieldScope(Protocol):
    """What the engine reads of a cancel scope once it has been left."""

    @property
    def cancelled_caught(self) -> bool:
        """Whether the scope's deadline ended what ran inside it."""
        ...


def _asyncio_now() -> float:
    # anyio.current_time() finds the backend again on every call; the loop is known here.
    return asyncio.get_running_loop().time()


def _anyio_shield(deadline: float) -> AbstractContextManager[ShieldScope]:
    return anyio.CancelScope(shield=True, deadline=deadline)


def _native(
    token: object,
) -> tuple[Callable[[], float], Callable[[float], AbstractContextManager[ShieldScope]]]:
    """The clock and the shielded deadline scope of the loop ``token`` belongs to.

    On trio, trio's own: anyio's wrappers around them cost about 2 µs a call (issue 25).
    """
    if type(token).__module__.partition(".")[0] == "trio":
        import trio  # already imported: the running loop is trio's

        def trio_shield(deadline: float) -> trio.CancelScope:
            return trio.CancelScope(shield=True, deadline=deadline)

        return trio.current_time, trio_shield
    return _asyncio_now, _anyio_shield


@attrs.frozen
class Route:
    """What our own ``httpx.AsyncClient`` would add to a request, taken once per loop.

    A client we make has no auth, event hooks, base URL or redirects to follow, so all it
    adds to a POST is its default headers, its timeout and the transport it picks for the
    URL (a proxy's, from the environment). Handing the request to that transport directly
    skips the per-request layers that do nothing for us: about a fifth of the CPU of each
    call (issue 25). The endpoint never changes, so the pick is made once.
    """

    #: The transport ``httpx.AsyncClient`` would pick for the endpoint.
    transport: httpx.AsyncBaseTransport
    #: The client's default headers in its order, less the two each request sets itself.
    headers: tuple[tuple[bytes, bytes], ...]
    #: The client's timeout, as httpcore reads it from the request's extensions.
    timeout: dict[str, float | None]


#: Headers each request sets itself (``_transport._send``), so the client's defaults for them
#: are left out.
_OWN_HEADERS = frozenset((b"content-type", b"accept-encoding"))


def direct_route(http: httpx.AsyncClient, url: httpx.URL) -> Route | None:
    """The route past ``http``'s per-request layers to ``url``, or None where they do work.

    None for a client with auth, hooks, cookies, parameters or a base URL (a caller's), and
    for an httpx that no longer picks transports the way this reads: then every request
    goes through ``http.send``.
    """
    pick = getattr(http, "_transport_for_url", None)
    hooks = http.event_hooks
    if (
        pick is None
        or http.auth is not None
        or hooks["request"]
        or hooks["response"]
        or http.cookies
        or http.params
        or http.base_url.raw_host
    ):
        return None
    headers = tuple((k, v) for k, v in http.headers.raw if k.lower() not in _OWN_HEADERS)
    return Route(transport=pick(url), headers=headers, timeout=http.timeout.as_dict())


@attrs.define(eq=False)
class PoolState:
    """What one event loop uses: its httpx client and its in-flight limit."""

    http: httpx.AsyncClient
    slots: anyio.Semaphore
    #: Whether httpcore's trace events tell when the request starts to be written.
    precise: bool
    #: Whether closing this state closes ``http`` (a caller's own client is never closed).
    owns_http: bool
    #: The loop's clock (the deadline's time base).
    now: Callable[[], float]
    #: ``shield(deadline)``: a cancel scope shielded from the caller's, ending at ``deadline``.
    shield: Callable[[float], AbstractContextManager[ShieldScope]]
    #: Straight to the transport, when ``http`` is a client we made (``direct_route``).
    route: Route | None = None
    guard: AsyncGenerator[None, None] | None = None

    async def aclose(self) -> None:
        """Close the pool if it is ours; safe to call twice."""
        if self.owns_http and not self.http.is_closed:
            await self.http.aclose()


async def _close_at_loop_end(state: PoolState) -> AsyncGenerator[None, None]:
    # Alive as long as the state; finalised by the event loop when its run ends (or when the
    # state is dropped), which closes the pool inside its own loop.
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + _CLOSE_TIMEOUT
            try:
                await state.aclose()
            except Exception:  # pragma: no cover - closing must never break a loop's shutdown
                logger.debug("closing a pool at the end of its event loop failed", exc_info=True)


class LoopPools:
    """The per-loop, per-process pools of one client."""

    def __init__(
        self,
        *,
        max_in_flight: int,
        make_http: Callable[[], httpx.AsyncClient],
        owns_pools: bool,
        single_loop: bool,
        precise: bool,
        route_to: httpx.URL | None = None,
    ) -> None:
        self._max_in_flight = max_in_flight
        self._make_http = make_http
        #: False when the pools wrap a caller's transport or client: the caller closes those.
        self._owns_pools = owns_pools
        #: True for a caller's own http_client, which belongs to the first loop that uses it.
        self._single_loop = single_loop
        self._precise = precise
        #: The endpoint, when the clients are ours and requests may skip their layers.
        self._route_to = route_to
        self._lock = threading.Lock()
        self._generation = _generation
        self._states: weakref.WeakKeyDictionary[Any, PoolState] = weakref.WeakKeyDictionary()
        self._first_loop: weakref.ref[Any] | None = None
        _all_pools.add(self)

    @property
    def max_in_flight(self) -> int:
        """Requests in flight at once in each event loop."""
        return self._max_in_flight

    def existing(self) -> PoolState | None:
        """The state of the running event loop if it has one already (no await: the hot path)."""
        if self._generation != _generation:
            return None
        return self._states.get(anyio.lowlevel.current_token().native_token)

    async def current(self) -> PoolState:
        """The state of the running event loop, made on first use."""
        token = anyio.lowlevel.current_token().native_token
        if self._generation == _generation:
            state = self._states.get(token)
            if state is not None:
                return state
        return await self._create(token)

    async def _create(self, token: Any) -> PoolState:
        with self._lock:
            if self._generation != _generation:  # a forked child: the states are the parent's
                self._states = weakref.WeakKeyDictionary()
                self._first_loop = None
                self._generation = _generation
            state = self._states.get(token)
            if state is not None:
                return state
            # Pools whose loop ended were closed there; forget them now rather than at the
            # next garbage collection of the loop.
            for key, old in list(self._states.items()):
                if old.owns_http and old.http.is_closed:
                    del self._states[key]
            if self._single_loop:
                self._check_first_loop(token)
            now, shield = _native(token)
            http = self._make_http()
            state = PoolState(
                http=http,
                slots=anyio.Semaphore(self._max_in_flight),
                precise=self._precise,
                owns_http=self._owns_pools,
                now=now,
                shield=shield,
                route=direct_route(http, self._route_to) if self._route_to is not None else None,
            )
            self._states[token] = state
        guard = _close_at_loop_end(state)
        await guard.asend(None)  # registers it with this loop's async-generator hooks
        state.guard = guard
        return state

    def _check_first_loop(self, token: Any) -> None:
        first = self._first_loop() if self._first_loop is not None else None
        if self._first_loop is None:
            self._first_loop = weakref.ref(token)
        elif first is not token:
            raise ConfigurationError(
                "the http_client given to CmpayClient belongs to the event loop that first "
                "used it; to use one CmpayClient from several event loops, threads or "
                "processes, let it make its own pools (pass transport= or nothing)"
            )

    async def aclose_current(self) -> int:
        """Close the running loop's pool; return how many other loops still hold one open."""
        if self._generation != _generation:  # a forked child: the pools are the parent's
            return 0
        token = anyio.lowlevel.current_token().native_token
        state = self._states.get(token)
        if state is not None:
            await state.aclose()
            # End the guard too: left suspended, it is an unfinished async generator that
            # trio warns about when the dropped client is collected while the loop runs.
            guard, state.guard = state.guard, None
            if guard is not None:
                await guard.aclose()
        return sum(
            1
            for other in list(self._states.values())
            if other is not state and other.owns_http and not other.http.is_closed
        )
