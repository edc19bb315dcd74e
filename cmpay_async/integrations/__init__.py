"""Ready-made glue between ``NotificationProcessor`` and web frameworks, one module each.

Each module imports its framework only inside itself and is imported only when used:
``cmpay_async.integrations.starlette`` (and FastAPI), ``.django``, ``.flask``, ``.aiohttp``.
Each gives a notify endpoint (the gateway's OfflineNotify, and a PageNotify posted there)
answering exactly ``SUCCESS`` only once the handler has run for that payment, and a
return-URL endpoint that records the buyer's PageNotify through the same processor and
redirects the buyer (HTTP 303) to the shop's success or failure page.
"""

from __future__ import annotations

from collections.abc import Callable
from email.message import Message

from cmpay_async._exceptions import ConfigurationError
from cmpay_async._processor import Receipt

__all__ = ["RedirectPolicy", "charset_of", "redirect_policy"]

#: Where to send the buyer after their PageNotify: ``(receipt) -> URL``.
RedirectPolicy = Callable[[Receipt], str]


def charset_of(content_type: str | None) -> str | None:
    """The ``charset`` parameter of a Content-Type header, if it declares one."""
    if not content_type:
        return None
    message = Message()
    message["content-type"] = content_type
    charset = message.get_param("charset")
    return charset.strip() or None if isinstance(charset, str) else None


def redirect_policy(
    success_url: str | None, failure_url: str | None, redirect_to: RedirectPolicy | None
) -> RedirectPolicy:
    """``redirect_to``, or success_url for a verified paid notification and failure_url else."""
    if redirect_to is not None:
        if success_url is not None or failure_url is not None:
            raise ConfigurationError("pass redirect_to, or success_url and failure_url, not both")
        return redirect_to
    if not success_url or not failure_url:
        raise ConfigurationError(
            "a return endpoint needs success_url and failure_url (or a redirect_to callable)"
        )
    success, failure = success_url, failure_url

    def choose(receipt: Receipt) -> str:
        # A signed PageNotify saying "paid" means the buyer paid, even when the handler must
        # wait for a retry (the OfflineNotify follows): the shop's page shows the order.
        note = receipt.notification
        return success if note is not None and note.paid else failure

    return choose
