"""cmpay-async: an asyncio SDK for China Mobile's CMPay gateway (DirectPayConfirm 2.0.0)."""

from importlib.metadata import PackageNotFoundError, version

from ._appendix import BANK_CODES, RETURN_CODES, SUCCESS_CODES, ReturnCode, explain_return_code
from ._client import PRODUCTION_ENDPOINT, TEST_ENDPOINT, CmpayClient, RetryPolicy, Timeouts
from ._codec import (
    content_type,
    decode_payload,
    encode_form,
    parse_amount_items,
    parse_date,
    parse_datetime,
    parse_pay_url,
)
from ._enums import CharacterSet, CouponsFlag, Currency, PaymentStatus, PeriodUnit, SignType
from ._exceptions import (
    ClientClosedError,
    CmpayError,
    ConfigurationError,
    ConnectError,
    DecodeError,
    DuplicateFieldError,
    EncodingError,
    GatewayError,
    HTTPStatusError,
    PayloadTooLargeError,
    Problem,
    RemoteProtocolError,
    SignatureError,
    SignTypeMismatchError,
    TransportError,
    TransportTimeoutError,
    UnexpectedMessageError,
    ValidationError,
)
from ._models import (
    CHINA_TZ,
    AmountItems,
    Notification,
    OfflineNotify,
    Order,
    PageNotify,
    PaymentResponse,
    PayUrl,
    yuan_to_fen,
)
from ._notify import Ack, ack, nack, verify_notification
from ._protocol import PreparedRequest, build_payment_request, parse_payment_response
from ._schema import REGISTRY, Field, Kind, Schema, schema_for
from ._signing import Md5Signer, RsaSigner, RsaVerifier, Signer, Verifier, signing_source

try:
    __version__ = version("cmpay-async")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "BANK_CODES",
    "CHINA_TZ",
    "PRODUCTION_ENDPOINT",
    "REGISTRY",
    "RETURN_CODES",
    "SUCCESS_CODES",
    "TEST_ENDPOINT",
    "Ack",
    "AmountItems",
    "CharacterSet",
    "ClientClosedError",
    "CmpayClient",
    "CmpayError",
    "ConfigurationError",
    "ConnectError",
    "CouponsFlag",
    "Currency",
    "DecodeError",
    "DuplicateFieldError",
    "EncodingError",
    "Field",
    "GatewayError",
    "HTTPStatusError",
    "Kind",
    "Md5Signer",
    "Notification",
    "OfflineNotify",
    "Order",
    "PageNotify",
    "PayUrl",
    "PayloadTooLargeError",
    "PaymentResponse",
    "PaymentStatus",
    "PeriodUnit",
    "PreparedRequest",
    "Problem",
    "RemoteProtocolError",
    "RetryPolicy",
    "ReturnCode",
    "RsaSigner",
    "RsaVerifier",
    "Schema",
    "SignType",
    "SignTypeMismatchError",
    "SignatureError",
    "Signer",
    "Timeouts",
    "TransportError",
    "TransportTimeoutError",
    "UnexpectedMessageError",
    "ValidationError",
    "Verifier",
    "__version__",
    "ack",
    "build_payment_request",
    "content_type",
    "decode_payload",
    "encode_form",
    "explain_return_code",
    "nack",
    "parse_amount_items",
    "parse_date",
    "parse_datetime",
    "parse_pay_url",
    "parse_payment_response",
    "schema_for",
    "signing_source",
    "verify_notification",
    "yuan_to_fen",
]
