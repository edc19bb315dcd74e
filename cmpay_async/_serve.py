"""Serve an ASGI app on a free loopback port with uvicorn, in a thread of its own.

A thread keeps the server's asyncio loop apart from the caller's, so the caller may run on
asyncio or trio. uvicorn is an optional dependency: ``pip install 'cmpay-async[sandbox]'``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._endpoints import is_loopback
from ._exceptions import ConfigurationError
from ._sandbox import SANDBOX_BASE_URL

__all__ = ["exposure_warning", "serve_in_thread"]

logger = logging.getLogger("cmpay_async.sandbox")


def exposure_warning(host: str) -> str | None:
    """The warning for serving on ``host`` when it is reachable beyond this machine, or None."""
    if is_loopback(host):
        return None
    return (
        f"the sandbox listens on {host}, beyond loopback: anyone who can reach this machine "
        "can place orders in it and read its orders; it is a simulator for your own machine "
        "(bind 127.0.0.1 unless another host must reach it)"
    )


def _uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError:
        raise ConfigurationError(
            "serving the sandbox needs uvicorn: pip install 'cmpay-async[sandbox]'"
        ) from None
    return uvicorn


@contextmanager
def serve_in_thread(
    app: Any, *, host: str = "127.0.0.1", port: int = 0, lifespan: str = "on"
) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields its base URL (``http://127.0.0.1:PORT``)."""
    uvicorn = _uvicorn()
    warning = exposure_warning(host)
    if warning is not None:
        logger.warning("%s", warning)
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted connections only then, and
    # without it Nagle's algorithm and delayed ACKs add 40 ms to every keep-alive request.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan=lifespan, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn:{bound}", daemon=True
    )
    thread.start()
    url = f"http://{host}:{bound}"
    # A sandbox served here hands out pay links on this address (unless told another).
    if getattr(app, "base_url", None) == SANDBOX_BASE_URL:
        app.base_url = url
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {host}:{bound} did not start")
            time.sleep(0.005)  # waiting for start-up, not measuring anything
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
