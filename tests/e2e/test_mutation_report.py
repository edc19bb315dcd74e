"""The mutation report's equivalence rules: a survivor is left out of the score only when its
diff alone proves that no behaviour can tell it from the original."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.mutation_report import _by_rule, _Table

CLIENT, SQLITE = "cmpay_async._client.xǁCmpayClientǁ_post__mutmut_1", "cmpay_async.stores.sqlite.x"


@pytest.mark.parametrize(
    ("name", "before", "after", "why"),
    [
        (CLIENT, '{"Content-Type": t}', '{"content-type": t}', "HTTP header name"),
        (CLIENT, 'get("content-length", "")', 'get("CONTENT-LENGTH", "")', "HTTP header name"),
        (SQLITE, '"DELETE FROM t WHERE key = ?"', '"delete from t where key = ?"', "SQL"),
        (SQLITE, '"expires = EXCLUDED.expires "', '"expires = excluded.expires "', "SQL"),
        ("cmpay_async._codec.x", 'encode("utf-8")', 'encode("UTF-8")', "codec name"),
    ],
)
def test_case_only_changes_that_nothing_can_see_are_equivalent(
    name: str, before: str, after: str, why: str
) -> None:
    """Letter case of a header name, an SQL statement in a store, a codec name."""
    reason = _by_rule(name, [before], [after])

    assert reason is not None
    assert why in reason


@pytest.mark.parametrize(
    ("name", "before", "after"),
    [
        (CLIENT, 'encoding != "identity"', 'encoding != "IDENTITY"'),  # a value, compared
        (CLIENT, 'get("XXcontent-lengthXX", "")', 'get("content-length", "")'),  # not case only
        ("cmpay_async._codec.x", '"SELECT a FROM t"', '"select a from t"'),  # SQL outside stores
        (SQLITE, "\"WHERE state = 'in_progress'\"", "\"WHERE STATE = 'IN_PROGRESS'\""),
        (SQLITE, '"WHERE key = %s"', '"WHERE KEY = %S"'),  # a placeholder
    ],
)
def test_other_changes_are_not(name: str, before: str, after: str) -> None:
    """A compared value's case, a renamed header, SQL text outside a store, an SQL string or
    placeholder: not equivalent."""
    assert None is _by_rule(name, [before], [after])


def test_every_listed_survivor_has_a_reason() -> None:
    """The hand-kept tables give each mutant a reason of some substance."""
    tables = json.loads(
        (Path(__file__).parents[2] / "benchmarks" / "equivalent_mutants.json").read_text()
    )

    for table in ("equivalent", "accepted"):
        for mutant, reason in tables[table].items():
            assert mutant in tables["changes"], mutant  # judged on a recorded change
            assert mutant.startswith("cmpay_async.")
            assert "__mutmut_" in mutant
            assert len(reason) >= 40, mutant


def test_a_renumbered_mutant_is_judged_by_its_change_not_its_name() -> None:
    """After an edit, mutant 7 may be what mutant 5 was: the reason follows the change."""
    fn = "cmpay_async._codec.x_f__mutmut_"
    table = _Table(
        {f"{fn}5": "why five", "cmpay_async._codec.x_g__mutmut_1": "legacy"},
        {f"{fn}5": "-a = 0\n+a = 1"},
    )

    assert "why five" == table.reason(f"{fn}5", "-a = 0\n+a = 1")  # unchanged
    assert None is table.reason(f"{fn}5", "-b = 0\n+b = None")  # 5 is now another change
    assert "why five" == table.reason(f"{fn}7", "-a = 0\n+a = 1")  # that change is now 7
    assert None is table.reason("cmpay_async._codec.x_h__mutmut_7", "-a = 0\n+a = 1")
    assert "legacy" == table.reason("cmpay_async._codec.x_g__mutmut_1", "-c\n+d")


def test_a_moved_function_keeps_its_recorded_change_when_only_one_entry_matches() -> None:
    """A function moved to another module keeps its reason for the same change; a name
    recorded in two modules with that change is ambiguous and trusted in neither."""
    table = _Table(
        {
            "cmpay_async._codec.x_f__mutmut_5": "why five",
            "cmpay_async._codec.x_g__mutmut_1": "g in codec",
            "cmpay_async._client.x_g__mutmut_2": "g in client",
        },
        {
            "cmpay_async._codec.x_f__mutmut_5": "-a = 0\n+a = 1",
            "cmpay_async._codec.x_g__mutmut_1": "-b\n+c",
            "cmpay_async._client.x_g__mutmut_2": "-b\n+c",
        },
    )

    assert "why five" == table.reason("cmpay_async._values.x_f__mutmut_9", "-a = 0\n+a = 1")
    assert None is table.reason("cmpay_async._values.x_f__mutmut_9", "-a = 0\n+a = 2")
    assert None is table.reason("cmpay_async._values.x_other__mutmut_5", "-a = 0\n+a = 1")
    assert None is table.reason("cmpay_async._binding.x_g__mutmut_4", "-b\n+c")
