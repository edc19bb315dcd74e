"""The error tree of cmpay-async.

Every error the library raises derives from :class:`CmpayError`. Local problems (a bad order,
a bad configuration) are told apart from remote ones (a payload from the gateway or a
notification that cannot be trusted), as h11 tells ``LocalProtocolError`` from
``RemoteProtocolError``. Errors also derive from the builtin they refine, so that
``except ValueError`` and ``except TimeoutError`` keep working::

    CmpayError
    ├── ConfigurationError (ValueError)        bad key, bad client setting
    ├── ValidationError (ValueError)           an order breaks the registry's rules; before any I/O
    │   └── EncodingError                      a value the chosen characterSet cannot represent
    ├── ClientClosedError (RuntimeError)       the client was used after aclose()
    ├── RemoteProtocolError                    a payload we received cannot be trusted or used
    │   ├── DecodeError (ValueError)           malformed: bad bytes, bad field, missing field
    │   │   ├── PayloadTooLargeError           over the size limit
    │   │   └── DuplicateFieldError            a field given twice
    │   ├── SignatureError                     the signature does not verify
    │   │   └── SignTypeMismatchError          signType is not the verifier's kind (no downgrade)
    │   └── UnexpectedMessageError             wrong type, version or merchantId
    ├── GatewayError                           the gateway answered with a failure return code
    ├── TransportError (OSError)               the exchange with the gateway failed
    │   ├── ConnectError                       certainly never sent; safe to retry
    │   ├── TransportTimeoutError (TimeoutError)
    │   └── HTTPStatusError                    the gateway answered with a non-2xx status
    └── StoreError (OSError)                   the notification store failed or was unreachable
        └── StoreTimeoutError (TimeoutError)   the store did not answer in time (a hung server)

Every error says whether the request may have been processed (``maybe_sent``): it is true
for every failure after the request may have reached the gateway (a timeout, a dropped
connection, an answer that cannot be read or trusted, a deadline), and then the order must be
queried before trying again, never resent blindly. Errors raised by a call also carry its
``operation``, ``order_id``, ``request_id`` and ``endpoint_host``, and show them at the end
of the message.

Every error pickles and unpickles with all its attributes and the same message, so it crosses
a process pool or a task queue intact.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

__all__ = [
    "ClientClosedError",
    "CmpayError",
    "ConfigurationError",
    "ConnectError",
    "DecodeError",
    "DuplicateFieldError",
    "EncodingError",
    "GatewayError",
    "HTTPStatusError",
    "PayloadTooLargeError",
    "Problem",
    "RemoteProtocolError",
    "SignTypeMismatchError",
    "SignatureError",
    "StoreError",
    "StoreTimeoutError",
    "TransportError",
    "TransportTimeoutError",
    "UnexpectedMessageError",
    "ValidationError",
]


def _rebuild(cls: type[CmpayError], args: tuple[object, ...], state: dict[str, Any]) -> Any:
    """Unpickle an error without calling ``__init__``, whose signature differs per class."""
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class CmpayError(Exception):
    """Root of every error raised by cmpay-async."""

    #: True when the request may have reached the gateway and been acted on: query the order
    #: before trying again. False for errors raised before any I/O and for definite answers.
    maybe_sent: bool = False
    #: The order and request of the call that failed, when the error comes from a call.
    order_id: str | None = None
    request_id: str | None = None
    #: The client method that failed (``create_payment``, ``query_order``, ``refund``), or the
    #: store operation (``connect``, ``claim``, ``complete``, ``release``).
    operation: str | None = None
    #: The host the call was addressed to (never the full URL or DSN: it may hold credentials).
    endpoint_host: str | None = None

    def __str__(self) -> str:
        return self._message() + self._context()

    def _message(self) -> str:
        return super().__str__()

    def _context(self) -> str:
        """`` [operation orderId=... requestId=... host=...]`` once the error left a call."""
        if self.operation is None:
            return ""
        parts = [self.operation]
        if self.order_id:
            parts.append(f"orderId={self.order_id}")
        if self.request_id:
            parts.append(f"requestId={self.request_id}")
        if self.endpoint_host:
            parts.append(f"host={self.endpoint_host}")
        return f" [{' '.join(parts)}]"

    def add_context(
        self,
        *,
        operation: str,
        order_id: str | None,
        request_id: str | None,
        endpoint_host: str | None,
    ) -> None:
        """Fill in the call's context where the raiser did not know it."""
        self.operation = self.operation or operation
        self.order_id = self.order_id or order_id
        self.request_id = self.request_id or request_id
        self.endpoint_host = self.endpoint_host or endpoint_host

    def __reduce__(self) -> tuple[Any, ...]:
        # BaseException pickles as cls(*args), which breaks every class whose __init__ takes
        # keyword arguments or rebuilds its message (ValidationError); keep the state instead.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class ConfigurationError(CmpayError, ValueError):
    """A key, certificate or client setting is unusable."""


@attrs.frozen
class Problem:
    """One broken rule: the wire name of the field and what is wrong with it."""

    field: str
    rule: str
    #: A stable identifier of the rule (``required``, ``max_length``, ``digits``, ...).
    code: str = "invalid"

    def __str__(self) -> str:
        return f"{self.field}: {self.rule}"


class ValidationError(CmpayError, ValueError):
    """One or more fields break the protocol's rules; raised before anything is sent."""

    problems: tuple[Problem, ...]

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__(self._describe())

    def _describe(self) -> str:
        if len(self.problems) == 1:
            return str(self.problems[0])
        listed = "; ".join(str(p) for p in self.problems)
        return f"{len(self.problems)} problems: {listed}"

    @property
    def fields(self) -> tuple[str, ...]:
        """Wire names of the offending fields, in order of appearance."""
        return tuple(p.field for p in self.problems)


class EncodingError(ValidationError):
    """A value holds a character that the chosen ``characterSet`` cannot encode."""


class ClientClosedError(CmpayError, RuntimeError):
    """The client was used after it was closed."""


class RemoteProtocolError(CmpayError):
    """A payload received from the gateway (or claiming to be) cannot be trusted or used."""

    field: str | None
    #: Set by the client: the HTTP status and a short, redacted excerpt of the answer.
    status_code: int | None = None
    excerpt: str | None = None

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        status_code: int | None = None,
        excerpt: str | None = None,
        maybe_sent: bool = False,
    ) -> None:
        self.field = field
        if status_code is not None:  # about an answer the client read: known when built
            self.status_code, self.excerpt = status_code, excerpt
        if maybe_sent:
            self.maybe_sent = True
        super().__init__(f"{field}: {message}" if field else message)

    def _message(self) -> str:
        text = str(self.args[0])
        if self.status_code is not None:
            text += f" (HTTP {self.status_code}, answer began {self.excerpt!r})"
        return text


class DecodeError(RemoteProtocolError, ValueError):
    """A received payload is malformed: undecodable, missing a field, or a field is invalid."""


class PayloadTooLargeError(DecodeError):
    """A received payload is larger than the library accepts."""


class DuplicateFieldError(DecodeError):
    """A received payload gives the same field more than once."""


class SignatureError(RemoteProtocolError):
    """A signature does not verify; the payload must not be used."""


class SignTypeMismatchError(SignatureError):
    """The payload's ``signType`` is not the one the verifier checks (a downgrade attempt)."""


class UnexpectedMessageError(RemoteProtocolError):
    """A verified payload is not the message expected (type, version or merchant)."""


class GatewayError(CmpayError):
    """The gateway answered with a return code other than success."""

    code: str
    #: The answer's ``message``; from an unverified answer, with secrets and personal data
    #: blanked by value, and labelled ``unverified message`` in the error's text.
    gateway_message: str
    explanation: str
    hint: str | None
    #: False when the failure answer was unsigned or its signature did not verify.
    verified: bool

    def __init__(
        self,
        code: str,
        gateway_message: str,
        *,
        explanation: str,
        hint: str | None = None,
        verified: bool = True,
    ) -> None:
        self.code = code
        self.gateway_message = gateway_message
        self.explanation = explanation
        self.hint = hint
        self.verified = verified
        # A verified refusal is a definite outcome; an unsigned one may come from a proxy
        # that never asked the gateway, or hide a success: the order must be queried.
        self.maybe_sent = not verified
        text = f"{code}: {explanation}"
        if gateway_message:
            # Only a verified answer's text is the gateway's word; any other is anyone's.
            said = "gateway said" if verified else "unverified message"
            text += f" ({said}: {gateway_message})"
        if not verified:
            text += " [answer not signed with the configured key]"
        if hint:
            text += f". Hint: {hint}"
        super().__init__(text)


class TransportError(CmpayError, OSError):
    """The HTTP exchange with the gateway failed."""

    status_code: int | None
    #: A short, redacted excerpt of the answer body, when there was one.
    excerpt: str | None

    def __init__(
        self,
        message: str,
        *,
        maybe_sent: bool,
        status_code: int | None = None,
        excerpt: str | None = None,
        order_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.maybe_sent = maybe_sent
        self.status_code = status_code
        self.excerpt = excerpt
        self.order_id = order_id
        self.request_id = request_id
        super().__init__(message)

    def _message(self) -> str:
        return str(self.args[0])


class ConnectError(TransportError):
    """The connection could not be made: the request certainly never reached the gateway."""


class TransportTimeoutError(TransportError, TimeoutError):
    """The gateway did not answer in time."""


class HTTPStatusError(TransportError):
    """The gateway (or a proxy before it) answered with a non-2xx HTTP status."""


class StoreError(CmpayError, OSError):
    """A notification store failed: its server is gone, refused the call, or broke mid-call."""

    #: The store's class (``RedisStore``, ``PostgresStore``, ``SqliteStore``, ...).
    backend: str
    #: The driver's exception, as ``module.Class`` (its message, redacted, is in this one's).
    driver_error: str | None

    def __init__(
        self,
        message: str,
        *,
        backend: str,
        operation: str,
        host: str | None = None,
        driver_error: str | None = None,
        maybe_sent: bool = False,
    ) -> None:
        self.backend = backend
        self.operation = operation
        self.endpoint_host = host
        self.driver_error = driver_error
        # True when the store may have applied the call (a claim may be held until its lease).
        self.maybe_sent = maybe_sent
        super().__init__(message)

    def _message(self) -> str:
        return str(self.args[0])


class StoreTimeoutError(StoreError, TimeoutError):
    """A notification store did not answer within its timeout (a hung or unreachable server)."""
