"""A soak merchant node's web app: ``uvicorn --workers 2 benchmarks.soak_app:app``.

Configured by environment variables the soak harness sets (``SOAK_*``): the shared store, the
ledger file every handler run appends to, and the flag file that asks one handler run to
SIGKILL its own worker halfway (the fault "worker killed inside the handler").
"""

from __future__ import annotations

import os
import signal
import time

from starlette.applications import Starlette

from cmpay_async import Md5Signer, NotificationProcessor, PaymentEvent
from cmpay_async.integrations.starlette import notify_endpoint, return_endpoint
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT

NODE = os.environ.get("SOAK_NODE", "node")
LEDGER = os.environ.get("SOAK_LEDGER", "ledger.csv")
KILL_FLAG = os.environ.get("SOAK_KILL_FLAG", "")
#: Seconds a worker owns an event: short, so that a payment whose worker was killed is
#: handled again within the quick run (the handler takes milliseconds).
LEASE = float(os.environ.get("SOAK_LEASE", "10"))


def make_store() -> object:
    """The store all nodes share: PostgreSQL or Redis, as ``SOAK_STORE`` says."""
    if os.environ.get("SOAK_STORE", "postgres") == "redis":
        from cmpay_async.stores.redis import RedisStore

        return RedisStore(os.environ["SOAK_REDIS_URL"], prefix="soak:event:", timeout=2.0)
    from cmpay_async.stores.postgres import PostgresStore

    return PostgresStore(os.environ["SOAK_PG_DSN"], table="soak_events", timeout=2.0)


def append_line(path: str, line: str) -> None:
    """Append one line with a single O_APPEND write (atomic among processes for small lines)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def handle(event: PaymentEvent) -> None:
    """The shop's handler: a little work, then one ledger line per run for a paid order."""
    time.sleep(0.005)  # the handler's own work (an orders-table update, say)
    if KILL_FLAG:
        try:
            # Claiming the flag by renaming it: exactly one handler run anywhere takes it.
            os.rename(KILL_FLAG, f"{KILL_FLAG}.taken.{os.getpid()}")
        except OSError:
            pass
        else:
            os.kill(os.getpid(), signal.SIGKILL)  # killed inside the handler, before its effect
    if event.paid:
        append_line(LEDGER, f"{event.order_id},{NODE},{os.getpid()}\n")


PROCESSOR = NotificationProcessor(
    verifier=Md5Signer(PUBLIC_TEST_KEY),
    merchant_id=PUBLIC_TEST_MERCHANT,
    store=make_store(),  # type: ignore[arg-type]
    handler=handle,
    lease=LEASE,
    store_timeout=5.0,
)

app = Starlette()
app.add_route("/cmpay/notify", notify_endpoint(PROCESSOR), methods=["POST"])
app.add_route(
    "/cmpay/return",
    return_endpoint(PROCESSOR, success_url="/paid", failure_url="/not-paid"),
    methods=["GET", "POST"],
)
