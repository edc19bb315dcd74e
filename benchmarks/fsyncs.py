"""Disk syncs per handled notification with SqliteStore, counted by strace.

``python -m benchmarks.fsyncs [--count N]`` (Linux, ``strace`` on the PATH) runs, in a child
process traced with ``strace -f -e trace=fsync,fdatasync,sched_yield``, N distinct
notifications through ``NotificationProcessor`` and ``SqliteStore``, one after another or all
at once (N tasks), and prints the syncs per handled notification of each. Only the steady
state is counted: the child first handles N other notifications the same way (opening its
per-thread connections, whose first synced commit also syncs the directory once), then marks
the start with a ``sched_yield`` call, and the syncs after the mark are counted.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import sys, anyio
from cmpay_async import Md5Signer, NotificationProcessor
from cmpay_async.stores.sqlite import SqliteStore
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, sign_notification

path, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
bodies = [sign_notification(order_id=f"F{mode[0]}{n:06d}", amount=100) for n in range(count)]
handled = []

async def handler(event):
    handled.append(event.order_id)

warm = [sign_notification(order_id=f"W{mode[0]}{n:06d}", amount=100) for n in range(count)]

async def run(processor, chunk):
    if mode == "sequential":
        for body in chunk:
            assert (await processor.process(body)).body == b"SUCCESS"
    else:
        async with anyio.create_task_group() as tg:
            for body in chunk:
                tg.start_soon(processor.process, body)

async def main():
    processor = NotificationProcessor(
        verifier=Md5Signer(PUBLIC_TEST_KEY), merchant_id=PUBLIC_TEST_MERCHANT,
        store=SqliteStore(path), handler=handler,
    )
    await run(processor, warm)
    os.sched_yield()  # the mark: syncs after it are counted
    await run(processor, bodies)
    assert len(handled) == 2 * count, len(handled)
    os._exit(0)  # a server keeps running: the checkpoint of the last close is not counted

import os
anyio.run(main)
"""

_SETUP = r"""
import sys, anyio
from cmpay_async.stores.sqlite import SqliteStore
store = SqliteStore(sys.argv[1])
token = anyio.run(lambda: store.claim("setup", lease=1)).token
anyio.run(store.complete, "setup", token)
"""


def syncs(path: Path, mode: str, count: int) -> int:
    """fsync plus fdatasync calls after the child's mark."""
    log = Path(str(path) + ".strace")
    subprocess.run(
        ["strace", "-f", "-e", "trace=fsync,fdatasync,sched_yield", "-y", "-o", str(log),
         sys.executable, "-c", _CHILD, str(path), mode, str(count)],
        capture_output=True, check=True,
    )  # fmt: skip
    calls = re.findall(r"\b(fsync|fdatasync|sched_yield)\(", log.read_text())
    return calls[calls.index("sched_yield") + 1 :].count("fsync") + calls[
        calls.index("sched_yield") + 1 :
    ].count("fdatasync")


def main(argv: list[str] | None = None) -> int:
    """Print syncs per notification, one after another and all at once."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if shutil.which("strace") is None:
        print("strace is not installed: nothing measured")
        return 1
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("sequential", "concurrent"):
            path = Path(tmp, f"{mode}.db")
            subprocess.run([sys.executable, "-c", _SETUP, str(path)], check=True)
            figures[mode] = syncs(path, mode, args.count) / args.count
    print(f"SqliteStore, {args.count} notifications: disk syncs per handled notification")
    for mode, per in figures.items():
        print(f"  {mode:<11} {per:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
