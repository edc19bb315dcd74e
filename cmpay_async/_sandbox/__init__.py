"""The sandbox gateway: an ASGI app that plays CMPay, built on the same registry and signing.

It holds merchants and orders in memory, answers ``POST /ips/cmpayService`` like the gateway
(appendix 9.2 codes for the first problem found), serves a cashier page, and delivers signed
PageNotify and OfflineNotify messages, with OfflineNotify retried on the document's schedule.
Time runs on a ``SandboxClock``: scaled (a minute in 10 ms, say) and advanceable by hand.

One module a job, each importing only those before it:

- ``_records``: merchants, orders, notification attempts (data);
- ``_faults``: the one-shot faults, their methods and the one table that names them;
- ``_gateway``: a service request in, a signed answer out (create, query, refund, settle);
- ``_delivery``: the clock, the OfflineNotify schedule and the posts;
- ``_cashier``: the cashier pages and the pay button;
- ``_app``: ``Sandbox``, the ASGI app that routes requests to the others.
"""

from __future__ import annotations

from cmpay_async._testkeys import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT

from ._app import CONTROL_TOKEN_HEADER, SANDBOX_BASE_URL, Sandbox
from ._delivery import OFFLINE_GAPS_MINUTES, SandboxClock
from ._faults import FAULTS, Fault, Faults, NotifyFaults
from ._gateway import SANDBOX_INVALID
from ._records import Merchant, NotifyAttempt, SandboxKeyWarning, SandboxOrder

__all__ = [
    "CONTROL_TOKEN_HEADER",
    "FAULTS",
    "OFFLINE_GAPS_MINUTES",
    "PUBLIC_TEST_KEY",
    "PUBLIC_TEST_MERCHANT",
    "SANDBOX_BASE_URL",
    "SANDBOX_INVALID",
    "Fault",
    "Faults",
    "Merchant",
    "NotifyAttempt",
    "NotifyFaults",
    "Sandbox",
    "SandboxClock",
    "SandboxKeyWarning",
    "SandboxOrder",
]
