"""Readers keep the latest copy of a row written twice (the index relies on the same rule)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from personagen.errors import PersonagenError
from personagen.io.bank import _latest_per_key
from personagen.io.histories import histories_files, histories_schema


def test_latest_copy_of_each_key_wins_in_first_seen_order_of_the_copies():
    table = pa.table({"persona_id": ["a", "b", "a", "c", "b"], "v": [1, 2, 3, 4, 5]})
    latest = _latest_per_key(table, ("persona_id",))
    assert latest.to_pylist() == [
        {"persona_id": "a", "v": 3},
        {"persona_id": "c", "v": 4},
        {"persona_id": "b", "v": 5},
    ]
    unique = pa.table({"persona_id": ["x", "y"], "v": [1, 2]})
    assert _latest_per_key(unique, ("persona_id",)) == unique


def test_history_inputs_that_are_not_ingest_output_get_a_clear_error(tmp_path):
    raw = tmp_path / "posts.jsonl"
    raw.write_text('{"user_id": "u1", "text": "hello"}\n')
    with pytest.raises(PersonagenError, match=r"not a histories Parquet file.*personagen ingest"):
        histories_schema(histories_files(raw))
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"user_id": ["u1"], "text": ["hello"]}), other)
    with pytest.raises(PersonagenError, match="lack columns history_id, window_id, posts"):
        histories_schema(histories_files(other))
    with pytest.raises(PersonagenError, match="no histories Parquet"):
        histories_files(tmp_path / "empty-folder-that-is-missing")
