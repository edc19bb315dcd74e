"""Fault injection: one-shot faults, armed by method or by name (over HTTP, on the command line).

One table, ``FAULTS``, drives all three uses of a fault's name: which method arms it (the
name is the method's), how a value given by name becomes that method's arguments, and what a
refusal lists as the known faults. A new fault is a method of ``FaultControls`` and a row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

__all__ = ["FAULTS", "Fault", "FaultControls", "Faults", "NotifyFaults"]


@attrs.define(kw_only=True)
class Faults:
    """One-shot faults, to test how merchant code copes."""

    return_code: str | None = None
    raw_answer: tuple[int, bytes] | None = None
    tamper_answer: bool = False
    delay: float = 0.0
    #: Process the order, then cut the connection mid-answer.
    drop_after_processing: bool = False


@attrs.define(kw_only=True)
class NotifyFaults:
    """One-shot faults for the next payment's OfflineNotify delivery."""

    #: Before the real OfflineNotify, post a copy with a broken signature.
    forged: bool = False
    #: Post the first OfflineNotify this many extra times.
    duplicates: int = 0
    #: Post those extra copies all at the same instant as the first attempt.
    concurrent: bool = False
    #: Lose every notification of the payment: no OfflineNotify, and the buyer's browser
    #: never returns the PageNotify (only a query can find the payment).
    lost: bool = False
    #: The sandbox posts the PageNotify to ``callbackUrl`` itself, at the same instant as the
    #: first OfflineNotify, as a buyer's browser returning at that moment would.
    page_at_once: bool = False


class FaultControls:
    """The fault methods of ``Sandbox``: each arms a fault for the next request or payment."""

    #: Faults for the next service request, taken (and so disarmed) by it.
    faults: Faults
    #: Faults for the next payment's notifications, taken by it.
    notify_faults: NotifyFaults

    def fail_next(self, return_code: str) -> None:
        """Answer the next valid order with this return code instead of success."""
        self.faults.return_code = return_code

    def answer_next(self, status: int, body: bytes) -> None:
        """Answer the next request with this raw status and body."""
        self.faults.raw_answer = (status, body)

    def tamper_next(self) -> None:
        """Break the signature of the next answer."""
        self.faults.tamper_answer = True

    def delay_next(self, seconds: float) -> None:
        """Wait this long (real time) before answering the next request."""
        self.faults.delay = seconds

    def drop_next(self) -> None:
        """Process the next order, then cut the connection before the answer is complete."""
        self.faults.drop_after_processing = True

    def forge_next_notification(self) -> None:
        """Precede the next payment's OfflineNotify with a copy whose signature is broken."""
        self.notify_faults.forged = True

    def duplicate_next_notification(self, times: int = 1, *, concurrent: bool = False) -> None:
        """Post the next payment's first OfflineNotify ``times`` extra times (at once if told)."""
        self.notify_faults.duplicates = times
        self.notify_faults.concurrent = concurrent

    def race_next_page_notify(self) -> None:
        """Post the next payment's PageNotify at the same instant as its first OfflineNotify."""
        self.notify_faults.page_at_once = True

    def lose_next_notifications(self) -> None:
        """Lose every notification of the next payment: only reconciliation can find it."""
        self.notify_faults.lost = True

    def arm(self, faults: Mapping[str, object]) -> list[str]:
        """Arm faults by name, as ``POST /_sandbox/faults`` and ``cmpay sandbox --fault`` do.

        Keys are the fault methods' names; values their argument (``{"fail_next":
        "IPS0008", "delay_next": 2.5, "drop_next": true, "answer_next": {"status": 500,
        "body": "..."}, "duplicate_next_notification": {"times": 10, "concurrent": true}}``).
        Every key is checked before any is armed: a ``ValueError`` names the first bad one.
        """
        calls = [fault_call(name, value) for name, value in faults.items()]
        for fault, args, kwargs in calls:
            fault.method(self, *args, **kwargs)
        return [fault.name for fault, _, _ in calls]


#: A method's arguments: positional, then keyword.
Arguments = tuple[tuple[object, ...], dict[str, Any]]


@attrs.frozen
class Fault:
    """A fault reachable by name: the method that arms it, and how a value becomes arguments."""

    #: The ``FaultControls`` method that arms it; the fault's name is the method's.
    method: Callable[..., None]
    #: Turns the value given by name into the method's arguments; ``ValueError`` if it can't.
    parse: Callable[[str, object], Arguments]

    @property
    def name(self) -> str:
        """The fault's name: its method's."""
        return self.method.__name__


def _flag(name: str, value: object) -> Arguments:
    if value is not True:
        raise ValueError(f"{name}: give true to arm it")
    return (), {}


def _return_code(name: str, value: object) -> Arguments:
    if not (isinstance(value, str) and value):
        raise ValueError(f'{name}: give a return code such as "IPS0008"')
    return (value,), {}


def _seconds(name: str, value: object) -> Arguments:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name}: give seconds, a number from 0")
    return (value,), {}


def _object(name: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{name}: give a JSON object of its arguments")
    return value


def _raw_answer(name: str, value: object) -> Arguments:
    given = _object(name, value)
    status, body = given.get("status"), given.get("body", "")
    if not isinstance(status, int) or isinstance(status, bool) or not isinstance(body, str):
        raise ValueError(f'{name}: give {{"status": <int>, "body": "<text>"}}')
    return (status, body.encode()), {}


def _copies(name: str, value: object) -> Arguments:
    # A bare number is the count of copies.
    given = _object(name, {"times": value} if isinstance(value, int) else value)
    times, concurrent = given.get("times", 1), given.get("concurrent", False)
    if not isinstance(times, int) or isinstance(times, bool) or times < 1:
        raise ValueError(f"{name}: times must be a positive integer")
    if not isinstance(concurrent, bool) or set(given) - {"times", "concurrent"}:
        raise ValueError(f'{name}: give {{"times": n, "concurrent": bool}}')
    return (times,), {"concurrent": concurrent}


#: Every fault reachable by name, in the order a refusal lists them.
FAULTS: Mapping[str, Fault] = {
    fault.name: fault
    for fault in (
        Fault(method=FaultControls.fail_next, parse=_return_code),
        Fault(method=FaultControls.answer_next, parse=_raw_answer),
        Fault(method=FaultControls.tamper_next, parse=_flag),
        Fault(method=FaultControls.delay_next, parse=_seconds),
        Fault(method=FaultControls.drop_next, parse=_flag),
        Fault(method=FaultControls.forge_next_notification, parse=_flag),
        Fault(method=FaultControls.duplicate_next_notification, parse=_copies),
        Fault(method=FaultControls.lose_next_notifications, parse=_flag),
        Fault(method=FaultControls.race_next_page_notify, parse=_flag),
    )
}


def fault_call(name: str, value: object) -> tuple[Fault, tuple[object, ...], dict[str, Any]]:
    """The fault a name stands for and its method's arguments; ``ValueError`` for anything else."""
    fault = FAULTS.get(name)
    if fault is None:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
    args, kwargs = fault.parse(name, value)
    return fault, args, kwargs
