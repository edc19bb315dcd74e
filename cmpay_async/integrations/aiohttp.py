"""aiohttp: ``app.router.add_post("/cmpay/notify", notify_handler(processor))``.

Needs ``cmpay-async[aiohttp]``. The body is read raw and the request's declared charset, if
any, is passed on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from cmpay_async._processor import NotificationProcessor

from . import RedirectPolicy, charset_of, redirect_policy

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["notify_handler", "return_handler"]

Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


def notify_handler(processor: NotificationProcessor) -> Handler:
    """The notifyUrl handler: add it for POST."""
    from aiohttp import web

    async def cmpay_notify(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        answer = await processor.process(
            body, charset=charset_of(request.headers.get("Content-Type"))
        )
        return web.Response(status=answer.status_code, body=answer.body, headers=answer.headers)

    return cmpay_notify


def return_handler(
    processor: NotificationProcessor,
    *,
    success_url: str | None = None,
    failure_url: str | None = None,
    redirect_to: RedirectPolicy | None = None,
) -> Handler:
    """The callbackUrl handler (the buyer's PageNotify): add it for POST and GET."""
    from aiohttp import web

    choose = redirect_policy(success_url, failure_url, redirect_to)

    async def cmpay_return(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            # The raw query: yarl's decoded one would lose the percent-encoded bytes.
            payload = request.rel_url.raw_query_string.encode("latin-1")
            charset = None
        else:
            payload = await request.read()
            charset = charset_of(request.headers.get("Content-Type"))
        receipt = await processor.receive(payload, charset=charset)
        return web.Response(status=303, headers={"Location": choose(receipt)})

    return cmpay_return
