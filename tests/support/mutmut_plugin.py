"""A pytest plugin for ``nox -s mutants`` only (loaded by ``-p`` from ``[tool.mutmut]``).

mutmut forks each mutant's run from a server that has already imported the package and the
tests, which saves about 2 s a mutant. Two things need care in that model:

- Code that runs at import (the registry is built then) ran before any mutant was active,
  so a mutant there would go untested. For those mutants the forked run drops every module
  of the project and imports it afresh, under the mutant; and since every test depends on
  what was built at import, the core tests are all linked to that code (mutmut would link
  it to the first test only).
- With ``-x`` a killed mutant stops at its first failing test; running the fast tests first
  (by the durations mutmut measured) makes that early.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

_HERE = Path.cwd().resolve()


def _import_time_functions() -> frozenset[str]:
    """The project's functions that run when the package is imported (mutmut's names)."""
    try:
        from mutmut.mutation.trampoline import get_mutant_under_test, set_mutant_under_test
        from mutmut.state import state
    except ImportError:  # not under mutmut
        return frozenset()
    if "cmpay_async" in sys.modules:
        # Imported already: which code ran at import can no longer be observed, so every
        # mutant is treated as one that needs a fresh import (slow but never wrong).
        return frozenset({"*"})
    before = get_mutant_under_test()
    set_mutant_under_test("stats")
    try:
        import cmpay_async
        import cmpay_async.stores  # noqa: F401

        hits = frozenset(state()._stats)
    finally:
        if before:
            set_mutant_under_test(before)
        else:
            os.environ.pop("MUTANT_UNDER_TEST", None)
            set_mutant_under_test(None)
    return hits


_IMPORT_TIME = _import_time_functions()


def _own_module(name: str) -> bool:
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    return bool(path) and Path(path).resolve().is_relative_to(_HERE) and name != __name__


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests() -> None:
    """Under a mutant of import-time code, re-import the project under that mutant."""
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    if "__mutmut_" not in mutant:
        return
    function = mutant.rsplit("__mutmut_", 1)[0]
    if "*" in _IMPORT_TIME or function in _IMPORT_TIME:
        for name in [n for n in list(sys.modules) if _own_module(n)]:
            del sys.modules[name]
        try:
            import cmpay_async
            import cmpay_async.stores  # noqa: F401
            import tests.conftest  # noqa: F401
        except Exception:
            # The package (or the tests' own set-up) does not even import under this mutant:
            # killed. Said here with pytest's own "tests failed" code, because an exception
            # raised while pytest reads its conftests escapes pytest.main, and mutmut files
            # that as a timeout.
            os._exit(pytest.ExitCode.TESTS_FAILED)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """Under a mutant, a test module that fails to import is a failing suite: killed.

    Only a mutant of import-time code can cause it (the other runs reuse the modules the
    server collected). pytest would say "interrupted" (exit 2), which mutmut files as a run
    stopped by the user, not as a kill.
    """
    if report.failed and "__mutmut_" in os.environ.get("MUTANT_UNDER_TEST", ""):
        os._exit(pytest.ExitCode.TESTS_FAILED)


# The tests that judge import-time code (the registry's definitions): those of the pure core
# and the client's requests, which check fields, orders, rules and signatures to the byte. The
# slow end-to-end modules would add a minute a surviving mutant and nothing these miss.
_CORE_TESTS = frozenset(
    f"tests/{name}.py"
    for name in [
        "core/test_registry",
        "core/test_signing",
        "core/test_codec",
        "core/test_validation",
        "core/test_rules",
        "core/test_protocol",
        "notify/test_notify",
        "core/test_models",
        "core/test_messages",
        "core/test_keys",
        "notify/test_mappings",
        "client/test_place_order",
        "e2e/test_orders",
        "client/test_client",
        "client/test_promises",
        "core/test_hostile_input",
        "core/test_pickle",
        "core/test_secrets",
    ]
)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """While mutmut links tests to functions, link the core tests to import-time code too."""
    if (
        os.environ.get("MUTANT_UNDER_TEST") == "stats"
        and "*" not in _IMPORT_TIME
        and item.nodeid.split("::")[0] in _CORE_TESTS
    ):
        from mutmut.state import state

        state()._stats.update(_IMPORT_TIME)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the fastest tests first, by the durations of mutmut's clean run."""
    stats = _HERE / "mutmut-stats.json"
    if "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", "") or not stats.exists():
        return
    durations: dict[str, float] = json.loads(stats.read_text()).get("duration_by_test", {})
    items.sort(key=lambda item: durations.get(item.nodeid, float("inf")))
