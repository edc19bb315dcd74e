"""The sandbox's faults: one table names them for the methods, HTTP and the command line."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from cmpay_async._sandbox import FAULTS
from cmpay_async._sandbox._faults import FaultControls
from cmpay_async.testing import Sandbox

#: A value for each fault by name, and what its method is called with; written out here.
BY_NAME: dict[str, tuple[object, tuple[Any, ...], dict[str, Any]]] = {
    "fail_next": ("IPS0008", ("IPS0008",), {}),
    "answer_next": ({"status": 502, "body": "busy"}, (502, b"busy"), {}),
    "tamper_next": (True, (), {}),
    "delay_next": (2.5, (2.5,), {}),
    "drop_next": (True, (), {}),
    "forge_next_notification": (True, (), {}),
    "duplicate_next_notification": ({"times": 4, "concurrent": True}, (4,), {"concurrent": True}),
    "lose_next_notifications": (True, (), {}),
    "race_next_page_notify": (True, (), {}),
}


def _armed(sandbox: Sandbox) -> tuple[object, object]:
    """Everything a fault can set, as comparable values."""
    return (repr(sandbox.faults), repr(sandbox.notify_faults))


def test_every_fault_method_has_a_row_named_after_it() -> None:
    """A fault method without a row could not be armed over HTTP; a row is named by its
    method, so the name is written once."""
    methods = {
        name
        for name, _ in inspect.getmembers(FaultControls, inspect.isfunction)
        if not name.startswith("_") and name != "arm"
    }

    assert methods == set(FAULTS)
    assert sorted(BY_NAME) == sorted(FAULTS)
    assert all(fault.method is getattr(FaultControls, name) for name, fault in FAULTS.items())


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_arming_by_name_calls_the_method_with_the_parsed_value(name: str) -> None:
    """Each name's value becomes the method's arguments: both ways arm the same state."""
    value, args, kwargs = BY_NAME[name]
    by_name, by_method = Sandbox(), Sandbox()

    assert [name] == by_name.arm({name: value})
    getattr(by_method, name)(*args, **kwargs)

    assert _armed(by_method) == _armed(by_name)
    assert _armed(Sandbox()) != _armed(by_name)


def test_a_refusal_lists_the_faults_in_the_tables_order() -> None:
    """An unknown name is refused with every known one, in the table's order."""
    with pytest.raises(ValueError, match="unknown fault 'explode_next'") as caught:
        Sandbox().arm({"explode_next": True})

    assert str(caught.value).endswith("known: " + ", ".join(BY_NAME))
