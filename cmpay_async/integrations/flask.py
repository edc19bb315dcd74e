"""Flask: ``app.add_url_rule("/cmpay/notify", view_func=notify_view(processor), methods=["POST"])``.

Needs ``cmpay-async[flask]``. The view is synchronous (``process_sync``): a plain-function
handler runs in the request's thread. Safe under threaded servers (gunicorn ``--threads``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cmpay_async._processor import NotificationProcessor

from . import RedirectPolicy, charset_of, redirect_policy

__all__ = ["notify_view", "return_view"]


def notify_view(processor: NotificationProcessor) -> Callable[[], Any]:
    """The notifyUrl view: add it for POST."""
    from flask import Response, request

    def cmpay_notify() -> Any:
        # The raw body, before anything parses it as a form (that would consume it).
        body = request.get_data(cache=True, as_text=False, parse_form_data=False)
        answer = processor.process_sync(body, charset=charset_of(request.content_type))
        return Response(answer.body, status=answer.status_code, headers=dict(answer.headers))

    return cmpay_notify


def return_view(
    processor: NotificationProcessor,
    *,
    success_url: str | None = None,
    failure_url: str | None = None,
    redirect_to: RedirectPolicy | None = None,
) -> Callable[[], Any]:
    """The callbackUrl view (the buyer's PageNotify): add it for POST and GET."""
    from flask import redirect, request

    choose = redirect_policy(success_url, failure_url, redirect_to)

    def cmpay_return() -> Any:
        if request.method == "GET":
            payload: bytes = request.query_string
            charset = None
        else:
            payload = request.get_data(cache=True, as_text=False, parse_form_data=False)
            charset = charset_of(request.content_type)
        receipt = processor.receive_sync(payload, charset=charset)
        return redirect(choose(receipt), code=303)

    return cmpay_return
