"""Type checks and JSON-safe dicts for every model, derived from the models' own annotations.

No model writes its own conversion: each class is compiled once, from ``attrs.fields`` and
its type hints, into one plan of (name, check, to JSON, from JSON) per attribute. The plan
decides three things the same way: what a constructor accepts (a ``str`` where an enum or an
``int`` belongs raises instead of yielding ``paid == False``), what ``to_dict`` writes (ints,
strings, ISO dates, enum values, nested dicts and lists) and what ``from_dict`` reads back
(exactly that, and nothing else: every refusal names the field).
"""

from __future__ import annotations

import datetime as dt
import enum
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._exceptions import DecodeError, Problem, ValidationError

__all__ = ["CHINA_TZ", "check_types", "from_dict", "to_dict"]

#: China Standard Time, the gateway's clock (no daylight saving). Defined here, below the
#: models, because a datetime read back at +08:00 gets this zone again.
CHINA_OFFSET = dt.timedelta(hours=8)
CHINA_TZ = dt.timezone(CHINA_OFFSET, "CST")


class _Refused(Exception):
    """Why a value is refused, and where below the current attribute (a nested path)."""

    def __init__(self, why: str, field: str = "") -> None:
        super().__init__(why)
        self.why = why
        self.field = field


Check = Callable[[object], None]
Convert = Callable[[Any], Any]


@attrs.frozen
class _Rule:
    name: str
    check: Check
    dump: Convert
    load: Convert
    required: bool


_PLANS: dict[type, tuple[_Rule, ...]] = {}


def _plan(cls: type) -> tuple[_Rule, ...]:
    plan = _PLANS.get(cls)
    if plan is None:
        hints = typing.get_type_hints(cls)
        plan = _PLANS[cls] = tuple(
            _Rule(
                f.name,
                *_compile(hints[f.name]),
                required=f.default is attrs.NOTHING,
            )
            for f in attrs.fields(cls)
        )
    return plan


def check_types(instance: object) -> None:
    """Raise ``ValidationError`` naming every attribute whose value has the wrong type."""
    problems = []
    for rule in _plan(type(instance)):
        try:
            rule.check(getattr(instance, rule.name))
        except _Refused as why:
            problems.append(Problem(rule.name, str(why), "type"))
    if problems:
        raise ValidationError(problems)


def to_dict(instance: object) -> dict[str, Any]:
    """The model as a JSON-safe dict: ints, strings, ISO dates, enum values, lists and dicts."""
    return {rule.name: rule.dump(getattr(instance, rule.name)) for rule in _plan(type(instance))}


def from_dict(cls: type[Any], data: object) -> Any:
    """Rebuild a model from ``to_dict`` output; anything else raises ``DecodeError``."""
    try:
        return _load_model(cls, data)
    except _Refused as refused:
        raise DecodeError(refused.why, field=refused.field or None) from None


def _load_model(cls: type[Any], data: object) -> Any:
    if not isinstance(data, Mapping):
        raise _Refused(f"must be a dict, not {_type_name(data)}")
    plan = _plan(cls)
    known = {rule.name for rule in plan}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise _Refused(f"unknown key for {cls.__name__}", unknown[0])
    values: dict[str, Any] = {}
    for rule in plan:
        if rule.name not in data:
            if rule.required:
                raise _Refused("missing", rule.name)
            continue
        try:
            values[rule.name] = rule.load(data[rule.name])
        except _Refused as refused:
            where = f"{rule.name}.{refused.field}" if refused.field else rule.name
            raise _Refused(refused.why, where) from None
    try:
        return cls(**values)
    except ValidationError as exc:  # a rule of the model itself (e.g. a negative amount)
        problem = exc.problems[0]
        raise _Refused(problem.rule, problem.field) from None


# -- one compiled rule per annotation ------------------------------------------------------------


def _compile(hint: Any) -> tuple[Check, Convert, Convert]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) != 1:  # pragma: no cover - the models have no wider unions
            raise TypeError(f"unsupported annotation {hint!r}")
        return _optional(*_compile(inner[0]))
    if hint is str:
        return _STR
    if hint is int:
        return _INT
    if hint is bool:
        return _BOOL
    if hint is dt.datetime:
        return _DATETIME
    if hint is dt.date:
        return _DATE
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum(hint)
    if isinstance(hint, type) and attrs.has(hint):
        return _nested(hint)
    if origin is Mapping or origin is dict:
        return _MAPPING_STR_INT
    if origin is tuple:
        return _PAIRS
    raise TypeError(f"unsupported annotation {hint!r}")  # pragma: no cover


def _type_name(value: object) -> str:
    return type(value).__name__


def _check_str(value: object) -> None:
    if type(value) is not str and (not isinstance(value, str) or isinstance(value, enum.Enum)):
        raise _Refused(f"must be a str, not {_type_name(value)}")


def _check_int(value: object) -> None:
    if type(value) is not int and (not isinstance(value, int) or isinstance(value, bool)):
        raise _Refused(f"must be an int, not {_type_name(value)}")


def _check_bool(value: object) -> None:
    if type(value) is not bool:
        raise _Refused(f"must be a bool, not {_type_name(value)}")


def _load_checked(check: Check) -> Convert:
    def load(value: Any) -> Any:
        check(value)
        return value

    return load


def _same(value: Any) -> Any:
    return value


_STR = (_check_str, _same, _load_checked(_check_str))
_INT = (_check_int, _same, _load_checked(_check_int))
_BOOL = (_check_bool, _same, _load_checked(_check_bool))


def _check_date(value: object) -> None:
    if type(value) is not dt.date and (
        not isinstance(value, dt.date) or isinstance(value, dt.datetime)
    ):
        raise _Refused(f"must be a datetime.date, not {_type_name(value)}")


def _load_date(value: Any) -> dt.date:
    if not isinstance(value, str):
        raise _Refused(f"must be an ISO date string, not {_type_name(value)}")
    try:
        parsed = dt.date.fromisoformat(value)
    except ValueError:
        raise _Refused(f"{value[:40]!r} is not an ISO date (YYYY-MM-DD)") from None
    if parsed.isoformat() != value:  # fromisoformat accepts other shapes since 3.11
        raise _Refused(f"{value[:40]!r} is not an ISO date (YYYY-MM-DD)")
    return parsed


_DATE = (_check_date, lambda v: v.isoformat(), _load_date)


def _check_datetime(value: object) -> None:
    if not isinstance(value, dt.datetime):
        raise _Refused(f"must be a datetime.datetime, not {_type_name(value)}")
    if value.utcoffset() is None:
        raise _Refused("must be timezone-aware")


def _load_datetime(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise _Refused(f"must be an ISO date and time string, not {_type_name(value)}")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _Refused(f"{value[:40]!r} is not an ISO date and time") from None
    offset = parsed.utcoffset()
    if offset is None:
        raise _Refused(f"{value[:40]!r} has no UTC offset")
    return parsed.replace(tzinfo=CHINA_TZ) if offset == CHINA_OFFSET else parsed


_DATETIME = (_check_datetime, lambda v: v.isoformat(), _load_datetime)


def _enum(cls: type[enum.Enum]) -> tuple[Check, Convert, Convert]:
    members = {m.value: m for m in cls}
    allowed = ", ".join(repr(v) for v in members)

    def check(value: object) -> None:
        if not isinstance(value, cls):
            raise _Refused(f"must be {cls.__name__}, not {_type_name(value)}")

    def load(value: Any) -> enum.Enum:
        try:
            return members[value]
        except (KeyError, TypeError):
            raise _Refused(f"{value!r:.40} is not one of {allowed}") from None

    return check, lambda v: v.value, load


def _nested(cls: type) -> tuple[Check, Convert, Convert]:
    def check(value: object) -> None:
        if not isinstance(value, cls):
            raise _Refused(f"must be {cls.__name__}, not {_type_name(value)}")

    def load(value: Any) -> Any:
        return _load_model(cls, value)

    return check, to_dict, load


def _optional(check: Check, dump: Convert, load: Convert) -> tuple[Check, Convert, Convert]:
    def check_optional(value: object) -> None:
        if value is not None:
            check(value)

    return (
        check_optional,
        lambda v: None if v is None else dump(v),
        lambda v: None if v is None else load(v),
    )


def _check_mapping(value: object) -> None:
    if not isinstance(value, Mapping):
        raise _Refused(f"must be a mapping, not {_type_name(value)}")
    for key, item in value.items():
        if type(key) is not str:
            raise _Refused(f"key {key!r:.40} is not a str")
        try:
            _check_int(item)
        except _Refused as why:
            raise _Refused(f"{key!r:.40}: {why}") from None


def _load_mapping(value: Any) -> dict[str, int]:
    _check_mapping(value)
    return dict(value)


_MAPPING_STR_INT = (_check_mapping, dict, _load_mapping)


def _check_pairs(value: object) -> None:
    if not isinstance(value, tuple):
        raise _Refused(f"must be a tuple of (str, str) pairs, not {_type_name(value)}")
    for pair in value:
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(type(p) is str for p in pair)):
            raise _Refused(f"{pair!r:.40} is not a (str, str) pair")


def _load_pairs(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        raise _Refused(f"must be a list of [str, str] pairs, not {_type_name(value)}")
    pairs = []
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2 and all(type(p) is str for p in pair)):
            raise _Refused(f"{pair!r:.40} is not a [str, str] pair")
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


_PAIRS = (_check_pairs, lambda v: [list(p) for p in v], _load_pairs)
