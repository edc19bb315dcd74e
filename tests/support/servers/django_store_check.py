"""DjangoStore's contract, in a process of its own (Django's settings are per process).

Run by tests/integrations/test_integrations.py:
``python -m tests.support.servers.django_store_check DB_PATH SETTINGS_EXAMPLE``.
Exits 0 when every check passed, on asyncio and on trio.
"""

from __future__ import annotations

import os
import sys

import django
from django.conf import settings

INSTALLED_APPS: list[str] = []

if __name__ == "__main__":
    namespace: dict[str, object] = {"INSTALLED_APPS": INSTALLED_APPS}
    sys.path.insert(0, os.getcwd())
    from tests.support.readme import examples

    # The settings lines of docs/integrations.md, then Django set up with them.
    exec(compile(examples()[sys.argv[2]], "settings", "exec"), namespace)  # noqa: S102
    settings.configure(
        INSTALLED_APPS=namespace["INSTALLED_APPS"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": sys.argv[1]}},
        USE_TZ=True,
    )
    django.setup()

    import anyio
    from django.core.management import call_command

    from cmpay_async import Md5Signer, NotificationProcessor, PaymentEvent
    from cmpay_async.integrations.django.store import DjangoStore
    from cmpay_async.stores import ClaimState
    from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, sign_notification

    call_command("migrate", verbosity=0)
    call_command("makemigrations", "cmpay", check=True, dry_run=True, verbosity=0)

    class Clock:
        now = 1_000_000.0

        def __call__(self) -> float:
            return self.now

    async def contract(prefix: str) -> None:
        """Each promise of the Store protocol, then a processor on DjangoStore."""
        clock = Clock()
        store = DjangoStore(clock=clock)
        first = await store.claim(f"{prefix}A", lease=60)
        assert first.state is ClaimState.NEW, first
        assert (await store.claim(f"{prefix}A", lease=60)).state is ClaimState.IN_PROGRESS
        assert not await store.complete(f"{prefix}A", "not-the-token")
        clock.now += 61  # the lease ran out: a worker died mid-handler
        second = await store.claim(f"{prefix}A", lease=60)
        assert second.state is ClaimState.NEW, second
        assert not await store.complete(f"{prefix}A", first.token or "")  # the dead one's
        assert await store.complete(f"{prefix}A", second.token or "")
        assert (await store.claim(f"{prefix}A", lease=60)).state is ClaimState.DONE
        third = await store.claim(f"{prefix}B", lease=60)
        await store.release(f"{prefix}B", third.token or "")
        assert (await store.claim(f"{prefix}B", lease=60)).state is ClaimState.NEW

        runs: list[str] = []

        def handler(event: PaymentEvent) -> None:
            runs.append(event.order_id)

        processor = NotificationProcessor(
            verifier=Md5Signer(PUBLIC_TEST_KEY),
            merchant_id=PUBLIC_TEST_MERCHANT,
            store=DjangoStore(),
            handler=handler,
        )
        body = sign_notification(order_id=f"{prefix}C", amount=5)
        answers = [(await processor.process(body)).body for _ in range(3)]
        assert [b"SUCCESS"] * 3 == answers, answers
        assert [f"{prefix}C"] == runs, runs

    anyio.run(contract, "aio", backend="asyncio")
    anyio.run(contract, "trio", backend="trio")
    print("ok")
