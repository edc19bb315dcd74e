"""The public surface: where each name is exported, and the import paths kept from before.

``cmpay_async`` offers the processor's store protocol and the in-memory store beside
``NotificationProcessor``; ``cmpay_async.stores`` offers the protocol and every store that
needs only the standard library; the stores with a driver stay modules named after it.
"""

from __future__ import annotations

import subprocess
import sys

import cmpay_async
import cmpay_async.stores


def test_the_store_protocol_and_memory_store_stand_beside_the_processor() -> None:
    """``from cmpay_async import Store, MemoryStore`` gives the stores' own classes."""
    from cmpay_async import MemoryStore, NotificationProcessor, Store
    from cmpay_async.stores.memory import MemoryStore as memory_store

    assert (Store, MemoryStore) == (cmpay_async.stores.Store, memory_store)
    assert {"Store", "MemoryStore", "NotificationProcessor"} <= set(cmpay_async.__all__)
    assert NotificationProcessor is cmpay_async.NotificationProcessor


def test_the_stores_package_offers_every_standard_library_store() -> None:
    """``cmpay_async.stores`` exports the protocol, MemoryStore and SqliteStore, no driver's."""
    from cmpay_async.stores.sqlite import SqliteStore

    expected = ["ClaimState", "Claimed", "MemoryStore", "SqliteStore", "Store"]
    assert expected == sorted(cmpay_async.stores.__all__)
    assert SqliteStore is cmpay_async.stores.SqliteStore


def test_importing_the_stores_loads_no_driver() -> None:
    """Redis and psycopg are imported only by their own modules, never by the package face."""
    code = (
        "import sys, cmpay_async, cmpay_async.stores; "
        "print(sorted(m for m in ('redis', 'psycopg') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "[]" == done.stdout.strip()


def test_the_import_paths_of_moved_names_still_work() -> None:
    """Names that moved to the module of their job are still found where they were."""
    from cmpay_async import _binding, _codec, _values, _verify
    from cmpay_async._protocol import verify_fields
    from cmpay_async.stores import _contract, driver_failure, new_token, run_abandoning, scrub

    assert verify_fields is _verify.verify_fields
    assert (driver_failure, new_token, run_abandoning, scrub) == (
        _contract.driver_failure,
        _contract.new_token,
        _contract.run_abandoning,
        _contract.scrub,
    )
    assert (cmpay_async.parse_date, cmpay_async.parse_pay_url) == (
        _values.parse_date,
        _values.parse_pay_url,
    )
    assert (cmpay_async.decode_payload, cmpay_async.encode_form) == (
        _codec.decode_payload,
        _codec.encode_form,
    )
    assert callable(_binding.typed_values)
