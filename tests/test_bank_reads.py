"""Readers keep the latest copy of a row written twice (the index relies on the same rule)."""

from __future__ import annotations

import pyarrow as pa

from personagen.io.bank import _latest_per_key


def test_latest_copy_of_each_key_wins_in_first_seen_order_of_the_copies():
    table = pa.table({"persona_id": ["a", "b", "a", "c", "b"], "v": [1, 2, 3, 4, 5]})
    latest = _latest_per_key(table, "persona_id")
    assert latest.to_pylist() == [
        {"persona_id": "a", "v": 3},
        {"persona_id": "c", "v": 4},
        {"persona_id": "b", "v": 5},
    ]
    unique = pa.table({"persona_id": ["x", "y"], "v": [1, 2]})
    assert _latest_per_key(unique, "persona_id") == unique
