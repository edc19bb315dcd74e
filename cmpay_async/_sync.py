"""Run the processor's async path from code that cannot await (Django, Flask, Celery tasks).

A ``SyncBridge`` owns one background thread per process running an anyio event loop (its
portal), made on first use and again after ``fork``. A blocking call submits the coroutine
to that loop and waits. Store calls run there, in the loop's worker threads, which live as
long as the loop: so a store keeps its per-thread connections from one call to the next.

A *sync* merchant handler does not run on the loop nor in one of its threads: it is handed
back to the calling thread, which runs it while no event loop runs there. So a Django
handler runs in the request's own thread, with its database connection and transaction,
and Django's async-safety check (``SynchronousOnlyOperation``) has nothing to object to.
Calls from many threads at once share the loop; each waits only for its own work.

Under gevent's monkey-patching threads are greenlets of one OS thread, which would share
that thread's event loop with every request: blocking calls are refused there with a
``ConfigurationError`` (use sync or gthread workers, or an ASGI server and ``await``).
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

from ._exceptions import ConfigurationError
from ._pools import fork_generation, keep_inherited

__all__ = ["SyncBridge", "hand_to_caller", "refuse_inside_a_loop", "refuse_under_gevent"]

T = TypeVar("T")

#: In a task started by ``SyncBridge.call``: runs a sync job in the calling thread.
_HANDOFF: contextvars.ContextVar[Callable[[Callable[[], Any]], Awaitable[Any]] | None] = (
    contextvars.ContextVar("cmpay_handoff", default=None)
)


class CallerInterrupted(Exception):
    """The calling thread's sync job raised a BaseException (re-raised there afterwards)."""


def refuse_inside_a_loop(what: str, instead: str) -> None:
    """Raise ``ConfigurationError`` when called where an event loop runs in this thread."""
    refuse_under_gevent(what)
    try:
        anyio.lowlevel.current_token()
    except RuntimeError:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
    raise ConfigurationError(
        f"{what} was called from inside a running event loop, where waiting would block that "
        f"loop: use {instead} instead"
    )


def refuse_under_gevent(what: str) -> None:
    """Raise ``ConfigurationError`` when gevent has monkey-patched threads into greenlets."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        raise ConfigurationError(
            f"{what} cannot run under gevent's monkey-patching (its loop thread would be a "
            "greenlet sharing this thread's event loop with every request): serve the app "
            "with sync or gthread workers, or from an ASGI server with await"
        )


def hand_to_caller() -> Callable[[Callable[[], Any]], Awaitable[Any]] | None:
    """The way back to a blocking caller's thread, if this task runs for one."""
    return _HANDOFF.get()


class SyncBridge:
    """One background event loop per process, for blocking calls from any thread."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._generation = -1

    def _current_portal(self) -> anyio.from_thread.BlockingPortal:
        generation = fork_generation()
        with self._lock:
            if self._portal is not None and self._generation == generation:
                return self._portal
            if self._portal is not None:
                # A forked child's copy: the parent's loop thread does not exist here.
                keep_inherited(self._portal)
            ready: Future[anyio.from_thread.BlockingPortal] = Future()

            async def serve() -> None:
                async with anyio.from_thread.BlockingPortal() as portal:
                    ready.set_result(portal)
                    await portal.sleep_until_stopped()

            def run_loop() -> None:
                try:
                    anyio.run(serve)
                except BaseException as exc:  # never left waiting for a loop that did not start
                    if not ready.done():
                        ready.set_exception(exc)
                    raise

            # A daemon: an idle loop must not keep the interpreter from exiting.
            thread = threading.Thread(target=run_loop, name=self._name, daemon=True)
            thread.start()
            self._portal = ready.result()
            self._generation = generation
            return self._portal

    def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any) -> T:
        """Run ``fn(*args)`` on the loop; sync jobs it hands back run in this thread."""
        portal = self._current_portal()
        jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        interrupted: list[BaseException] = []

        async def handoff(job: Callable[[], Any]) -> Any:
            done = anyio.Event()
            outcome: list[tuple[bool, Any]] = []

            def run_here() -> None:
                try:
                    outcome.append((True, job()))
                except Exception as exc:
                    outcome.append((False, exc))
                except BaseException as exc:  # KeyboardInterrupt, SystemExit: raised here later
                    interrupted.append(exc)
                    outcome.append((False, CallerInterrupted(type(exc).__name__)))
                portal.call(done.set)

            jobs.put(run_here)
            await done.wait()
            ok, value = outcome[0]
            if ok:
                return value
            raise value

        async def run() -> T:
            _HANDOFF.set(handoff)  # this task's own context: no reset needed
            return await fn(*args)

        future = portal.start_task_soon(run)
        future.add_done_callback(lambda _: jobs.put(None))
        try:
            while (job := jobs.get()) is not None:
                job()
        except BaseException:
            # Interrupted while waiting (KeyboardInterrupt): cancel the task, so that it
            # releases what it claimed instead of waiting forever for this thread.
            future.cancel()
            raise
        if interrupted:
            raise interrupted[0]
        return future.result()
