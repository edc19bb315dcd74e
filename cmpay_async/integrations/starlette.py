"""Starlette and FastAPI: ``app.add_route("/cmpay/notify", notify_endpoint(processor), ...)``.

Needs ``cmpay-async[starlette]`` (FastAPI brings Starlette). The body is read raw and the
request's declared charset, if any, is passed on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from cmpay_async._processor import NotificationProcessor

from . import RedirectPolicy, charset_of, redirect_policy

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["notify_endpoint", "notify_router", "return_endpoint"]

Endpoint = Callable[["Request"], Awaitable["Response"]]


def notify_endpoint(processor: NotificationProcessor) -> Endpoint:
    """The notifyUrl endpoint: mount it for POST."""
    from starlette.responses import Response

    async def cmpay_notify(request: Request) -> Response:
        body = await request.body()
        answer = await processor.process(
            body, charset=charset_of(request.headers.get("content-type"))
        )
        return Response(answer.body, status_code=answer.status_code, headers=dict(answer.headers))

    return cmpay_notify


def return_endpoint(
    processor: NotificationProcessor,
    *,
    success_url: str | None = None,
    failure_url: str | None = None,
    redirect_to: RedirectPolicy | None = None,
) -> Endpoint:
    """The callbackUrl endpoint (the buyer's PageNotify): mount it for POST and GET."""
    from starlette.responses import RedirectResponse

    choose = redirect_policy(success_url, failure_url, redirect_to)

    async def cmpay_return(request: Request) -> Response:
        if request.method == "GET":
            payload: bytes = request.scope.get("query_string", b"")
            charset = None
        else:
            payload = await request.body()
            charset = charset_of(request.headers.get("content-type"))
        receipt = await processor.receive(payload, charset=charset)
        return RedirectResponse(choose(receipt), status_code=303)

    return cmpay_return


def notify_router(
    processor: NotificationProcessor,
    *,
    notify_path: str = "/cmpay/notify",
    return_path: str | None = None,
    **redirect: Any,
) -> Any:
    """A FastAPI ``APIRouter`` with the notify route (and the return route, given its path)."""
    from fastapi import APIRouter

    router = APIRouter()
    router.add_route(notify_path, notify_endpoint(processor), methods=["POST"])
    if return_path is not None:
        router.add_route(
            return_path, return_endpoint(processor, **redirect), methods=["GET", "POST"]
        )
    return router
