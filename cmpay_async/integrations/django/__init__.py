"""Django: ``path("cmpay/notify", notify_view(processor))``, under WSGI and ASGI alike.

Needs ``cmpay-async[django]``. With a plain-function handler the view is synchronous
(``process_sync``: the handler runs in the request's thread, where the ORM may be used; under
ASGI Django runs the view in its sync thread). With an ``async def`` handler it is an async
view (``await processor.process``). Both are CSRF-exempt: the gateway has no CSRF token;
the signature is what authenticates the request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from cmpay_async._processor import NotificationProcessor, Receipt
from cmpay_async.integrations import RedirectPolicy, charset_of, redirect_policy

__all__ = ["notify_view", "return_view"]


def _payload(request: Any) -> tuple[bytes, str | None]:
    if request.method == "GET":
        # WSGI carries the raw query as latin-1 text: back to its bytes.
        return request.META.get("QUERY_STRING", "").encode("latin-1"), None
    return request.body, charset_of(request.META.get("CONTENT_TYPE"))


def notify_view(processor: NotificationProcessor) -> Callable[..., Any]:
    """The notifyUrl view (POST only), CSRF-exempt."""
    from django.http import HttpResponse
    from django.views.decorators.csrf import csrf_exempt
    from django.views.decorators.http import require_POST

    def respond(receipt: Receipt) -> HttpResponse:
        answer = receipt.ack
        return HttpResponse(answer.body, status=answer.status_code, headers=dict(answer.headers))

    if processor._handler_is_async:

        async def cmpay_notify_async(request: Any) -> HttpResponse:
            body, charset = _payload(request)
            return respond(await processor.receive(body, charset=charset))

        return cast("Callable[..., Any]", csrf_exempt(require_POST(cmpay_notify_async)))

    def cmpay_notify(request: Any) -> HttpResponse:
        body, charset = _payload(request)
        return respond(processor.receive_sync(body, charset=charset))

    return cast("Callable[..., Any]", csrf_exempt(require_POST(cmpay_notify)))


def return_view(
    processor: NotificationProcessor,
    *,
    success_url: str | None = None,
    failure_url: str | None = None,
    redirect_to: RedirectPolicy | None = None,
) -> Callable[..., Any]:
    """The callbackUrl view (the buyer's PageNotify, POST or GET), CSRF-exempt."""
    from django.http import HttpResponseRedirect
    from django.views.decorators.csrf import csrf_exempt
    from django.views.decorators.http import require_http_methods

    choose = redirect_policy(success_url, failure_url, redirect_to)

    def redirect(receipt: Receipt) -> HttpResponseRedirect:
        response = HttpResponseRedirect(choose(receipt))
        response.status_code = 303
        return response

    if processor._handler_is_async:

        async def cmpay_return_async(request: Any) -> HttpResponseRedirect:
            body, charset = _payload(request)
            return redirect(await processor.receive(body, charset=charset))

        return cast(
            "Callable[..., Any]",
            csrf_exempt(require_http_methods(["GET", "POST"])(cmpay_return_async)),
        )

    def cmpay_return(request: Any) -> HttpResponseRedirect:
        body, charset = _payload(request)
        return redirect(processor.receive_sync(body, charset=charset))

    return cast(
        "Callable[..., Any]", csrf_exempt(require_http_methods(["GET", "POST"])(cmpay_return))
    )
