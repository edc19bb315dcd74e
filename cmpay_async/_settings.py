"""What a ``CmpayClient`` is configured with, and the checks its constructor makes.

Every check runs before anything is sent or any pool is made, and raises
``ConfigurationError`` with the way out.
"""

from __future__ import annotations

import logging
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs
import httpx

from ._endpoints import is_loopback
from ._exceptions import CmpayError, ConfigurationError
from ._protocol import PreparedRequest
from ._signing import Md5Signer, Signer, Verifier

__all__ = [
    "PRODUCTION_ENDPOINT",
    "TEST_ENDPOINT",
    "InDoubt",
    "Timeouts",
    "check_max_connections",
    "check_pool_choice",
    "checked_host",
    "checked_verifier",
]

#: The gateway's production endpoint (PROTOCOL.md section 4).
PRODUCTION_ENDPOINT = "https://ipos.10086.cn/ips/cmpayService"
#: The vendor's test (UAT) endpoint.
TEST_ENDPOINT = "https://uatipos.10086.cn/ips/cmpayService"

logger = logging.getLogger("cmpay_async")


def _positive(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ConfigurationError(f"Timeouts.{attribute.name} must be a positive number of seconds")


@attrs.frozen(kw_only=True)
class Timeouts:
    """Seconds allowed for each phase of a gateway call, and for the whole call."""

    connect: float = attrs.field(default=5.0, validator=_positive)
    #: The gateway creates the order before it answers: give it time. Restarts on every byte.
    read: float = attrs.field(default=30.0, validator=_positive)
    write: float = attrs.field(default=10.0, validator=_positive)
    #: Waiting for one of the client's ``max_connections`` request slots.
    pool: float = attrs.field(default=5.0, validator=_positive)
    #: The whole call: queueing, every attempt and backoff, and reading the answer however
    #: slowly it drips. None removes the bound (not recommended).
    total: float | None = attrs.field(default=45.0, validator=_positive)

    def to_httpx(self) -> httpx.Timeout:
        """The per-phase values as an ``httpx.Timeout``."""
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


@attrs.frozen(kw_only=True)
class InDoubt:
    """A call that may have acted at the gateway while its caller did not get the outcome.

    Handed to ``on_in_doubt``: record ``order_id`` and query the order later (or reconcile).
    """

    #: ``create_payment`` or ``refund`` (a query changes nothing, so is never in doubt).
    operation: str
    order_id: str
    request_id: str
    #: ``cancelled``: the caller was cancelled while the request was in flight;
    #: ``error``: the call raised an error with ``maybe_sent=True``.
    reason: Literal["cancelled", "error"]
    #: The error the caller got, for ``reason == "error"``.
    error: CmpayError | None = None

    @classmethod
    def of(
        cls,
        operation: str,
        request: PreparedRequest,
        reason: Literal["cancelled", "error"],
        error: CmpayError | None = None,
    ) -> InDoubt:
        """The record of ``request`` (its order and request ids)."""
        return cls(
            operation=operation,
            order_id=request.order_id,
            request_id=request.request_id,
            reason=reason,
            error=error,
        )


def checked_verifier(signer: Signer, verifier: Verifier | None) -> Verifier:
    """The verifier of the gateway's answers: the MD5 signer itself, or the one given."""
    if verifier is None:
        if not isinstance(signer, Md5Signer):
            raise ConfigurationError(
                "an RSA signer needs verifier=RsaVerifier(<gateway public key>)"
            )
        verifier = signer
    if verifier.sign_type is not signer.sign_type:
        raise ConfigurationError(
            f"signer signs {signer.sign_type.value} but verifier checks "
            f"{verifier.sign_type.value}; the gateway answers in the request's signType"
        )
    return verifier


def check_pool_choice(
    http_client: httpx.AsyncClient | None, transport: httpx.AsyncBaseTransport | None
) -> None:
    """Refuse both a client and a transport: the pools come from one or the other."""
    if http_client is not None and transport is not None:
        raise ConfigurationError("pass either http_client or transport, not both")


def check_max_connections(max_connections: int) -> None:
    """Refuse a pool of no connection."""
    if max_connections < 1:
        raise ConfigurationError("max_connections must be at least 1")


def checked_host(
    endpoint: str,
    transport: httpx.AsyncBaseTransport | None,
    *,
    allow_insecure_http: bool,
) -> str:
    """The endpoint's host; refuse ``http://`` beyond loopback unless opted in (logged once)."""
    host = urlsplit(endpoint).hostname if endpoint.startswith(("https://", "http://")) else None
    if not host:
        raise ConfigurationError("endpoint must be an http(s) URL")
    if not endpoint.startswith("http://") or is_loopback(host):
        return host
    # These two never open a socket: no byte leaves the process, whatever the URL says.
    if isinstance(transport, (httpx.ASGITransport, httpx.MockTransport)):
        return host
    if not allow_insecure_http:
        raise ConfigurationError(
            f"endpoint is plain http:// to {host}, which is not a loopback address: signed "
            "orders and buyers' userTokens would cross the network in clear text; use "
            "https://, or pass allow_insecure_http=True if a trusted network encrypts it"
        )
    logger.warning(
        "allow_insecure_http=True: requests to %s go over plain http://, unencrypted", host
    )
    return host
