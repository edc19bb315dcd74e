"""A merchant's handler for the real-worker inbox tests: counts runs in a shared SQLite file.

Named by CMPAY_PAYMENT_HANDLER=tests.support.inbox_handler:record. Every run that returns has added
one row (no unique key: a second run of one payment shows as a second row). Orders listed in
CMPAY_SLOW_ORDERS first write a marker with the worker's pid and then wait, so the test can
kill that worker mid-handler.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

from cmpay_async import PaymentEvent


def record(event: PaymentEvent) -> None:
    """Count one completed run of ``event``'s handler."""
    if event.order_id in os.environ.get("CMPAY_SLOW_ORDERS", "").split(","):
        marker = Path(os.environ["CMPAY_MARKERS"]) / event.order_id
        if not marker.exists():  # only the first run is slow: the retry completes
            marker.write_text(str(os.getpid()))
            time.sleep(30)  # killed here by the test
    # closing(): a connection's own "with" commits but does not close it.
    with contextlib.closing(sqlite3.connect(os.environ["CMPAY_HANDLED_DB"], timeout=30)) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS runs (order_id TEXT, pid INTEGER)")
        db.execute("INSERT INTO runs VALUES (?, ?)", (event.order_id, os.getpid()))
