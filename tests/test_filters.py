"""Attribute filters: parsing, each operator, nulls and lists, and a property test vs Python."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from personagen.errors import PersonagenError
from personagen.index.filters import parse_filters, parse_where, where_mask

TABLE = pa.table(
    {
        "persona_id": ["a", "b", "c", "d"],
        "kept": [True, False, None, True],
        "openness": [3.5, 4.2, 2.0, None],
        "attributes": [
            {"gender": "Female", "location": "Osaka, Japan", "interests": ["go", "jazz"]},
            {"gender": "male", "location": "Seoul", "interests": ["jazz"]},
            {"gender": "female", "location": "Lagos", "interests": []},
            None,
        ],
    }
)


def mask(*conditions: str) -> list[bool]:
    return where_mask(TABLE, parse_filters(list(conditions))).tolist()


def test_parse_where():
    c = parse_where(" attributes.location ~ japan|korea ")
    assert (c.path, c.op, c.value) == (("attributes", "location"), "~", "japan|korea")
    assert parse_where("openness>=3.5").op == ">="
    assert parse_where("kept!=true").op == "!="
    for bad in ("kept", "=true", "1abc=2", ""):
        with pytest.raises(PersonagenError, match="COLUMN OP VALUE"):
            parse_where(bad)


def test_operators_nulls_and_lists():
    assert mask("kept=true") == [True, False, False, True]
    assert mask("kept!=true") == [False, True, False, False]
    assert mask("attributes.gender=female") == [True, False, True, False]
    assert mask("attributes.gender=male|female") == [True, True, True, False]
    assert mask("attributes.location~JAPAN|seoul") == [True, True, False, False]
    assert mask("openness>=3.5") == [True, True, False, False]
    assert mask("openness<3.5") == [False, False, True, False]
    assert mask("attributes.interests=jazz") == [True, True, False, False]
    assert mask("attributes.interests~g") == [True, False, False, False]
    assert mask("kept=true", "attributes.gender=female") == [True, False, False, False]
    assert mask() == [True] * 4
    assert (
        where_mask(TABLE, parse_filters({"kept": True, "attributes.gender": "female"})).sum() == 1
    )


def test_bad_filters_say_what_is_wrong():
    with pytest.raises(PersonagenError, match="no column 'age'"):
        mask("age>3")
    with pytest.raises(PersonagenError, match="no field 'age'"):
        mask("attributes.age=3")
    with pytest.raises(PersonagenError, match="not a double value"):
        mask("openness>=high")
    with pytest.raises(PersonagenError, match="not a bool value"):
        mask("kept=maybe")
    with pytest.raises(PersonagenError, match="numeric column"):
        mask("attributes.gender>=a")
    with pytest.raises(PersonagenError, match="text column"):
        mask("openness~3")


OPS = {
    "=": lambda v, t: v == t,
    "!=": lambda v, t: v != t,
    ">=": lambda v, t: v >= t,
    "<=": lambda v, t: v <= t,
    ">": lambda v, t: v > t,
    "<": lambda v, t: v < t,
}


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.integers(-5, 5)), min_size=1, max_size=30),
    op=st.sampled_from(list(OPS)),
    threshold=st.integers(-5, 5),
)
def test_numeric_conditions_match_python(values, op, threshold):
    table = pa.table({"x": pa.array(values, pa.int64())})
    got = where_mask(table, parse_filters([f"x{op}{threshold}"]))
    expected = np.array([v is not None and OPS[op](v, threshold) for v in values])
    np.testing.assert_array_equal(got, expected)
