"""Run code in a forked child: the one helper of the tests that fork a process in use."""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable


def in_child(work: Callable[[], None]) -> int:
    """Run ``work`` in a forked child; return its exit status (0: no exception)."""
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a threaded process may deadlock; the callers fork
        # while their worker and portal threads are idle, which is the case they are about.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which reports by its exit status
        code = 1
        try:
            work()
            code = 0
        except BaseException as exc:
            print(f"child failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while True:  # a child that hangs fails the test instead of hanging the suite
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return -9
        time.sleep(0.05)
