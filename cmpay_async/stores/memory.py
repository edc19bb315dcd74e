"""MemoryStore: the store in one process's memory, for tests and single-process apps."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable

from cmpay_async._models import unchecked

from ._contract import Claimed, ClaimState

__all__ = ["MemoryStore"]

# The answers that carry no token, shared (they are frozen).
_DONE = Claimed(ClaimState.DONE)
_HELD = Claimed(ClaimState.IN_PROGRESS)
#: ``Claimed(state, token)`` without attrs' keyword ``__init__``: a claim is the hot path.
_claimed = unchecked(Claimed)


class MemoryStore:
    """A store in this process's memory: for tests and single-process apps."""

    #: Every call returns without waiting (a lock held only for a dict update), so no call of
    #: it can be cut off half-way.
    call_bound = 0.0

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # threads and event loops may share it
        self._rows: dict[str, tuple[ClaimState, str, float]] = {}
        self._tokens = itertools.count(1)

    async def claim(self, key: str, *, lease: float) -> Claimed:
        """Own ``key`` for ``lease`` seconds if nobody handled or holds it."""
        now = self._clock()
        with self._lock:
            row = self._rows.get(key)
            if row is not None:
                state, _, expires = row
                if state is ClaimState.DONE:
                    return _DONE
                if expires > now:
                    return _HELD
            # Unique within the process is all a token in this process's memory needs.
            token = f"m{next(self._tokens)}"
            self._rows[key] = (ClaimState.IN_PROGRESS, token, now + lease)
            return _claimed(ClaimState.NEW, token)

    async def complete(self, key: str, token: str) -> bool:
        """Mark ``key`` handled; False if ``token`` no longer owns it."""
        with self._lock:
            row = self._rows.get(key)
            if row is None or row[1] != token or row[0] is ClaimState.DONE:
                return False
            self._rows[key] = (ClaimState.DONE, token, math.inf)
            return True

    async def release(self, key: str, token: str) -> None:
        """Give ``key`` up so that a retry can claim it at once."""
        with self._lock:
            row = self._rows.get(key)
            if row is not None and row[1] == token and row[0] is ClaimState.IN_PROGRESS:
                del self._rows[key]
