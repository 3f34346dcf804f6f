import json

import numpy as np
import pyarrow as pa
import pytest

from personagen.errors import PersonagenError
from personagen.io import bank


def personas(ids, narrative="n"):
    return pa.table(
        {
            "persona_id": ids,
            "user_id": [i.split("/")[0] for i in ids],
            "window_id": [0] * len(ids),
            "narrative": [f"{narrative} {i}" for i in ids],
            "attributes": [
                {
                    "age_range": "20-29",
                    "gender": None,
                    "occupation": None,
                    "location": None,
                    "interests": ["x"],
                    "values": [],
                }
            ]
            * len(ids),
            "source_meta": ["{}"] * len(ids),
            "model": ["m"] * len(ids),
            "prompt_version": ["v1"] * len(ids),
        }
    )


def test_groups_join_on_persona_id_with_nulls_for_unreached_rows(tmp_path):
    bank.write_group(tmp_path, "personas", personas(["a/0", "b/0", "c/0"]))
    bank.write_group(
        tmp_path,
        "embeddings",
        pa.table(
            {
                "persona_id": ["c/0", "a/0"],
                "embedding": [np.ones(4, np.float32), np.zeros(4, np.float32)],
                "embed_model": ["mini", "mini"],
            }
        ),
    )
    table = bank.read_bank(tmp_path)
    assert table.column("persona_id").to_pylist() == ["a/0", "b/0", "c/0"]
    assert table.column("embedding").to_pylist() == [[0.0] * 4, None, [1.0] * 4]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 4)
    assert table.column("kept").null_count == 3  # the judge has not run
    assert bank.read_bank(tmp_path, columns=["persona_id", "narrative"]).num_columns == 2


def test_later_copy_of_a_row_wins_and_ids_are_unique(tmp_path):
    bank.write_group(tmp_path, "personas", personas(["a/0", "b/0"], "old"))
    bank.write_group(tmp_path, "personas", personas(["b/0"], "new"))
    table = bank.read_group(tmp_path, "personas")
    assert sorted(table.column("persona_id").to_pylist()) == ["a/0", "b/0"]
    assert (
        dict(
            zip(
                table.column("persona_id").to_pylist(),
                table.column("narrative").to_pylist(),
                strict=True,
            )
        )["b/0"]
        == "new b/0"
    )


def test_done_ids_include_failures_of_the_stage(tmp_path):
    bank.write_group(tmp_path, "personas", personas(["a/0"]))
    bank.write_failures(tmp_path, bank.failure_rows(["b/0"], "mine", ["timeout"], [3]))
    bank.write_failures(tmp_path, bank.failure_rows(["c/0"], "judge", ["bad json"], [2]))
    assert bank.done_ids(tmp_path, "personas") == {"a/0"}
    assert bank.done_ids(tmp_path, "personas", failed_stage="mine") == {"a/0", "b/0"}
    failures = bank.read_failures(tmp_path, "judge")
    assert failures.to_pylist()[0]["reason"] == "bad json"


def test_parts_are_written_atomically(tmp_path):
    bank.write_group(tmp_path, "personas", personas(["a/0"]))
    names = [p.name for p in (tmp_path / "personas").iterdir()]
    assert len(names) == 1 and names[0].startswith("part-") and names[0].endswith(".parquet")
    # a leftover temp file of a killed writer is ignored by readers
    (tmp_path / "personas" / ".tmp-part-x.parquet").write_bytes(b"PAR1 half written")
    assert bank.read_group(tmp_path, "personas").num_rows == 1
    assert bank.write_group(tmp_path, "personas", personas([])) is None


def test_conform_names_missing_columns(tmp_path):
    with pytest.raises(PersonagenError, match="narrative"):
        bank.write_group(tmp_path, "personas", pa.table({"persona_id": ["a"]}))
    with pytest.raises(PersonagenError, match="unknown bank group"):
        bank.read_group(tmp_path, "nosuch")
    with pytest.raises(PersonagenError, match="no persona bank"):
        bank.read_bank(tmp_path / "missing")
    bank.write_group(tmp_path, "personas", personas(["a/0"]))
    with pytest.raises(PersonagenError, match="has no columns openess"):
        bank.read_bank(tmp_path, columns=["openess"])


def test_manifest_merges_sections(tmp_path):
    bank.update_manifest(tmp_path, stages={"mine": {"rows": 3}}, models={"llm": "x"})
    manifest = bank.update_manifest(tmp_path, stages={"judge": {"rows": 2}})
    assert manifest["stages"] == {"mine": {"rows": 3}, "judge": {"rows": 2}}
    assert json.loads((tmp_path / "manifest.json").read_text())["models"] == {"llm": "x"}
    assert manifest["format"] == "personagen-bank/1"


def test_empty_bank_groups_read_as_empty_tables(tmp_path):
    assert bank.read_group(tmp_path, "scores").num_rows == 0
    assert "openness" in bank.read_group(tmp_path, "scores").column_names
    assert bank.done_ids(tmp_path, "quality") == set()


def test_parts_written_before_a_column_was_added_read_it_as_null(tmp_path):
    """A bank scored before `trait_interval` existed: its old parts and a new one read as one
    table, the old rows with a null interval."""
    schema = bank.GROUPS["scores"]
    old_schema = pa.schema([f for f in schema if f.name != "trait_interval"])
    old = pa.table({f.name: pa.nulls(1, f.type) for f in old_schema}, schema=old_schema)
    old = old.set_column(0, "persona_id", pa.array(["a/0"])).set_column(
        1, "instrument", pa.array(["ipip-50"])
    )
    bank.write_part(tmp_path / "scores", old)
    interval = {f.name: 2.0 for f in bank.TRAIT_INTERVAL_TYPE}
    new = pa.table({f.name: pa.nulls(1, f.type) for f in schema}, schema=schema)
    new = (
        new.set_column(0, "persona_id", pa.array(["b/0"]))
        .set_column(1, "instrument", pa.array(["ipip-50"]))
        .set_column(
            schema.get_field_index("trait_interval"),
            "trait_interval",
            pa.array([interval], bank.TRAIT_INTERVAL_TYPE),
        )
    )
    bank.write_group(tmp_path, "scores", new)
    rows = {r["persona_id"]: r for r in bank.read_group(tmp_path, "scores").to_pylist()}
    assert rows["a/0"]["trait_interval"] is None and rows["b/0"]["trait_interval"] == interval
    picked = bank.read_group(tmp_path, "scores", ["trait_interval"])
    assert picked.column_names == ["persona_id", "instrument", "trait_interval"]
