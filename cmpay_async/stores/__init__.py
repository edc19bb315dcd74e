"""Where the notification processor remembers which payment events it has handled.

A store gives each event key a lease: ``claim`` answers NEW (the caller owns the event until
its lease runs out and must ``complete`` or ``release`` it with the token it got),
IN_PROGRESS (another worker owns it now) or DONE (handled already). A claim whose lease ran
out (its worker died mid-handler) can be claimed again. Only the owner's token completes or
releases. The contract is ``Store`` (``_contract``); every failure is a ``StoreError``.

Here are the stores that need only the standard library: ``MemoryStore`` (one process,
tests) and ``SqliteStore`` (the embedded default: several processes on one machine). The
stores with a driver are modules named after it, each importing its driver only there:
``cmpay_async.stores.redis`` and ``cmpay_async.stores.postgres``.
"""

from ._contract import Claimed, ClaimState, Store
from ._contract import driver_failure as driver_failure  # the backends' helpers, as before
from ._contract import new_token as new_token
from ._contract import run_abandoning as run_abandoning
from ._contract import scrub as scrub
from .memory import MemoryStore
from .sqlite import SqliteStore

__all__ = ["ClaimState", "Claimed", "MemoryStore", "SqliteStore", "Store"]
