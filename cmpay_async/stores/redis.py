"""RedisStore: several machines sharing one Redis. Needs ``pip install 'cmpay-async[redis]'``.

A claim is ``SET key in-progress:<token> NX PX <lease>``: atomic, and the lease expires in
Redis itself, whatever happens to the worker. Completing and releasing are Lua scripts that
act only while the key still holds the caller's token. redis-py's synchronous client runs
in anyio worker threads, so the store works on asyncio and trio alike.

Connecting and each read give up after ``timeout`` seconds (5 by default), and the whole call
is cut off after twice that whatever redis-py does; every failure is a ``StoreError``. On
first use the store reads the server's persistence and eviction settings and logs a warning
when a restart or eviction could make it forget a handled payment (see ``check()``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from cmpay_async._exceptions import ConfigurationError, StoreError

from ._contract import Claimed, ClaimState, driver_failure, new_token, run_abandoning

__all__ = ["RedisStore"]

T = TypeVar("T")

logger = logging.getLogger("cmpay_async")

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


def _risks(settings: dict[str, str]) -> list[str]:
    """What in a Redis server's settings could make it forget a handled event."""
    risks = []
    if settings.get("appendonly", "no") != "yes":
        if not settings.get("save", "").strip():
            risks.append(
                "it persists nothing (appendonly no, no save points): a restart forgets every "
                "handled payment"
            )
        else:
            risks.append(
                f"it persists only snapshots (appendonly no, save {settings['save']!r}): a crash "
                "forgets the payments handled since the last snapshot"
            )
    elif settings.get("appendfsync") == "no":
        risks.append(
            "appendfsync no: a machine crash may lose the last seconds of handled payments"
        )
    if settings.get("maxmemory", "0") != "0" and settings.get("maxmemory-policy") != "noeviction":
        risks.append(
            f"maxmemory-policy {settings.get('maxmemory-policy')!r}: a full server evicts keys, "
            "and a handled payment evicted is handled again"
        )
    return risks


class RedisStore:
    """A store in Redis; ``url`` as redis-py takes it (``redis://host:6379/0``)."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "cmpay:event:",
        done_ttl: int = 90 * 24 * 3600,
        timeout: float = 5.0,
    ) -> None:
        try:
            import redis
        except ImportError:
            raise ConfigurationError(
                "RedisStore needs redis-py: pip install 'cmpay-async[redis]'"
            ) from None
        if not 0 < timeout <= 30:
            raise ConfigurationError(f"timeout must be above 0 and at most 30 s, not {timeout!r}")
        self._module: Any = redis
        try:
            self._redis: Any = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
        except ValueError:
            raise ConfigurationError(
                "url must be a redis://, rediss:// or unix:// URL that redis-py accepts"
            ) from None
        options = self._redis.connection_pool.connection_kwargs
        self._secrets = (options.get("password"), url)
        self._host = (
            f"{options['host']}:{options.get('port', 6379)}"
            if "host" in options
            else options.get("path")
        )
        self._prefix = prefix
        #: Seconds a handled key is remembered: longer than the gateway's 24 h of retries.
        self.done_ttl = done_ttl
        #: Seconds to connect or to read an answer; a whole call is cut off after twice this.
        self.timeout = timeout
        self._checked = False
        self._complete = self._redis.register_script(_COMPLETE)
        self._release = self._redis.register_script(_RELEASE)

    @property
    def call_bound(self) -> float:
        """Seconds within which every call of this store ends.

        The whole call is cut off at twice ``timeout``.
        """
        return 2 * self.timeout

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()

    async def _run(self, operation: str, work: Callable[[], T]) -> T:
        """Run ``work`` in a thread: the one place redis-py's errors become ``StoreError``."""
        try:
            return await run_abandoning(work, timeout=2 * self.timeout)
        except StoreError:
            raise
        except (self._module.RedisError, OSError) as exc:
            # redis-py tells a failed connect from a failed command only by its message
            # ("Error 111 connecting to ...", "Timeout connecting to server").
            connecting = "connecting to" in str(exc)
            error = driver_failure(
                exc,
                backend="RedisStore",
                operation="connect" if connecting else operation,
                host=self._host,
                secrets=self._secrets,
                timed_out=isinstance(exc, (self._module.TimeoutError, TimeoutError)),
                # A command that failed may have been applied: a claim then stays held
                # until its lease ends.
                maybe_sent=not connecting,
            )
            raise error from error.__cause__

    def _settings(self) -> dict[str, str] | None:
        settings: dict[str, str] = {}
        try:
            for name in ("appendonly", "appendfsync", "save", "maxmemory", "maxmemory-policy"):
                settings.update(self._redis.config_get(name))
        except self._module.ResponseError as exc:  # CONFIG renamed or not permitted
            logger.info("RedisStore could not read the server's settings (%s)", exc)
            return None
        return settings

    def _check_once(self) -> None:
        if self._checked:
            return
        settings = self._settings()
        self._checked = True
        for risk in _risks(settings or {}) if settings is not None else ():
            logger.warning("the Redis at %s may forget handled payments: %s", self._host, risk)

    async def check(self) -> list[str]:
        """What in the server's settings could make it forget a handled event (empty: none).

        The first claim logs each at WARNING; call this from a deployment check to fail early.
        An empty list also when the server refuses ``CONFIG GET`` (many hosted Redis do).
        """
        settings = await self._run("check", self._settings)
        return _risks(settings) if settings is not None else []

    async def claim(self, key: str, *, lease: float) -> Claimed:
        """Own ``key`` for ``lease`` seconds if nobody handled or holds it."""
        name = self._prefix + key
        token = new_token()
        milliseconds = max(1, int(lease * 1000))

        def work() -> Claimed:
            self._check_once()
            for _ in range(2):  # the holder's lease may end between SET and GET
                if self._redis.set(name, f"in-progress:{token}", nx=True, px=milliseconds):
                    return Claimed(ClaimState.NEW, token)
                held = self._redis.get(name)
                if held == _DONE:
                    return Claimed(ClaimState.DONE)
                if held is not None:
                    return Claimed(ClaimState.IN_PROGRESS)
            return Claimed(ClaimState.IN_PROGRESS)

        return await self._run("claim", work)

    async def complete(self, key: str, token: str) -> bool:
        """Mark ``key`` handled; False if ``token`` no longer owns it."""
        args: list[str | int] = [f"in-progress:{token}", _DONE, self.done_ttl]
        done = await self._run("complete", lambda: self._complete([self._prefix + key], args))
        return bool(done)

    async def release(self, key: str, token: str) -> None:
        """Give ``key`` up so that a retry can claim it at once."""
        await self._run(
            "release", lambda: self._release([self._prefix + key], [f"in-progress:{token}"])
        )
