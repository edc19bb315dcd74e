"""RedisStore: several machines sharing one Redis. Needs ``pip install 'cmpay-async[redis]'``.

A claim is ``SET key in-progress:<token> NX PX <lease>``: atomic, and the lease expires in
Redis itself, whatever happens to the worker. Completing and releasing are Lua scripts that
act only while the key still holds the caller's token. redis-py's synchronous client runs
in anyio worker threads, so the store works on asyncio and trio alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread

from cmpay_async._exceptions import ConfigurationError

from . import Claimed, ClaimState, new_token

__all__ = ["RedisStore"]

T = TypeVar("T")

_DONE = "done"
_COMPLETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
    return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisStore:
    """A store in Redis; ``url`` as redis-py takes it (``redis://host:6379/0``)."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "cmpay:event:",
        done_ttl: int = 90 * 24 * 3600,
    ) -> None:
        try:
            import redis
        except ImportError:
            raise ConfigurationError(
                "RedisStore needs redis-py: pip install 'cmpay-async[redis]'"
            ) from None
        self._redis: Any = redis.Redis.from_url(url, decode_responses=True)
        self._prefix = prefix
        #: Seconds a handled key is remembered: longer than the gateway's 24 h of retries.
        self.done_ttl = done_ttl
        self._complete = self._redis.register_script(_COMPLETE)
        self._release = self._redis.register_script(_RELEASE)

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()

    async def _run(self, work: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(work)

    async def claim(self, key: str, *, lease: float) -> Claimed:
        """Own ``key`` for ``lease`` seconds if nobody handled or holds it."""
        name = self._prefix + key
        token = new_token()
        milliseconds = max(1, int(lease * 1000))

        def work() -> Claimed:
            for _ in range(2):  # the holder's lease may end between SET and GET
                if self._redis.set(name, f"in-progress:{token}", nx=True, px=milliseconds):
                    return Claimed(ClaimState.NEW, token)
                held = self._redis.get(name)
                if held == _DONE:
                    return Claimed(ClaimState.DONE)
                if held is not None:
                    return Claimed(ClaimState.IN_PROGRESS)
            return Claimed(ClaimState.IN_PROGRESS)

        return await self._run(work)

    async def complete(self, key: str, token: str) -> bool:
        """Mark ``key`` handled; False if ``token`` no longer owns it."""
        args: list[str | int] = [f"in-progress:{token}", _DONE, self.done_ttl]
        return bool(await self._run(lambda: self._complete([self._prefix + key], args)))

    async def release(self, key: str, token: str) -> None:
        """Give ``key`` up so that a retry can claim it at once."""
        await self._run(lambda: self._release([self._prefix + key], [f"in-progress:{token}"]))
