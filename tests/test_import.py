"""`personagen import`: persona sets in their public schemas (PersonaHub JSONL, Nemotron-Personas
Parquet, generic JSONL/CSV/Parquet) become banks that the rest of personagen takes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from synthetic import write_histories, write_mined

from personagen import TRAITS
from personagen.cli import cli
from personagen.commands.import_set import import_set
from personagen.commands.mine import mine
from personagen.config import Config
from personagen.errors import PersonagenError
from personagen.io.bank import GROUPS, KEY, read_failures, read_group, read_manifest, write_group
from personagen.io.persona_sets import detect_format, open_persona_set
from personagen.io.personas import read_personas

NO_ATTRIBUTES = dict.fromkeys(
    ["age_range", "gender", "occupation", "location", "interests", "values"]
)


def personas(bank: Path) -> dict[str, dict]:
    return {row[KEY]: row for row in read_group(bank, "personas").to_pylist()}


def failures(bank: Path) -> dict[str, str]:
    table = read_failures(bank, "import")
    return dict(zip(table["input_id"].to_pylist(), table["reason"].to_pylist(), strict=True))


# ------------------------------------------------------------------------------- PersonaHub


def personahub_file(folder: Path) -> Path:
    """persona.jsonl as PersonaHub ships it (one `persona` per line), with bad lines mixed in."""
    lines = [
        b'{"persona": "A Political Analyst specialized in El Salvador\'s political landscape."}',
        b'{"persona": "A nurse who works night shifts in a rural Ohio clinic."}',
        b'{"persona": "A retired postman',  # cut off
        b'{"persona": "A caf\xe9 owner in Lyon."}',  # latin-1, not UTF-8
        b"",
        b'{"persona": "   "}',
        b'["A list, not an object"]',
        b'{"description": "no persona field"}',
        '{"persona": "Une enseignante de Montréal."}'.encode(),
    ]
    path = folder / "persona.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_personahub_jsonl(tmp_path):
    src = personahub_file(tmp_path)
    summary = import_set(Config(), src, tmp_path / "bank")

    c = summary.counts
    assert (c["import:in"], c["import:out"], c["import:failed"]) == (8, 3, 5)  # blank: no row
    kinds = {k.rsplit(":", 1)[1]: v for k, v in c.items() if k.startswith("import:failed:")}
    assert kinds == {"not_json": 1, "not_utf8": 1, "no_text": 2, "not_object": 1}
    rows = personas(tmp_path / "bank")
    assert sorted(rows) == ["persona/1", "persona/2", "persona/9"]  # line numbers
    assert rows["persona/9"]["narrative"] == "Une enseignante de Montréal."
    assert rows["persona/1"]["narrative"].startswith("A Political Analyst")
    assert rows["persona/2"] | {"narrative": None} == {
        KEY: "persona/2",
        "user_id": "2",
        "window_id": None,
        "narrative": None,
        "attributes": NO_ATTRIBUTES,
        "source_meta": "{}",
        "model": None,
        "prompt_version": None,
    }
    assert failures(tmp_path / "bank") == {
        "persona:line 3": "not JSON (Unterminated string starting at: column 13)",
        "persona:line 4": "not UTF-8 (byte 0xe9 at byte 19)",
        "persona:line 6": "empty text in 'persona'",
        "persona:line 7": "not a JSON object (a list)",
        "persona:line 8": "no text: no 'persona' in the row",
    }
    manifest = read_manifest(tmp_path / "bank")["import"]
    assert manifest["format"] == "personahub" and manifest["container"] == "jsonl"
    assert manifest["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert manifest["bytes"] == src.stat().st_size and manifest["source"] == str(src.resolve())
    assert manifest["columns"] == {"text": ["persona"], "attributes": {}, "id": None}
    assert manifest["counts"]["rows_read"] == 8 and manifest["counts"]["failed"] == 5
    assert manifest["name"] == "persona" and manifest["finished"]


def test_personahub_synthesis_subset_keeps_the_synthesized_text(tmp_path):
    src = tmp_path / "math.jsonl"
    row = {
        "input persona": "A high school teacher who loves puzzles.",
        "synthesized text": "A train leaves at 3 pm ...",
        "description": "math problem",
    }
    src.write_text(json.dumps(row) + "\n", encoding="utf-8")
    assert open_persona_set(src).format == "personahub"
    import_set(Config(), src, tmp_path / "bank")
    (persona,) = personas(tmp_path / "bank").values()
    assert persona[KEY] == "math/1" and persona["narrative"] == row["input persona"]
    meta = {"synthesized text": row["synthesized text"], "description": "math problem"}
    assert json.loads(persona["source_meta"]) == meta


# ---------------------------------------------------------------------------- Nemotron


NEMOTRON_TOPICS = ["professional", "sports", "arts", "travel", "culinary"]


def nemotron_row(uuid: str, who: str, **values) -> dict:
    """A row with Nemotron-Personas-USA's columns, in its order."""
    row = {"uuid": uuid}
    row |= {f"{t}_persona": f"{who} ({t})." for t in NEMOTRON_TOPICS}
    row |= {
        "persona": f"{who} is thoughtful.",
        "cultural_background": "Grew up in the Midwest.",
        "skills_and_expertise": "Cash handling and inventory.",
        "skills_and_expertise_list": "['Cash handling', 'Inventory tracking']",
        "hobbies_and_interests": "Running and folk music.",
        "hobbies_and_interests_list": "['Running', 'Folk music']",
        "career_goals_and_ambitions": "Become a shift supervisor.",
        "sex": "Female",
        "age": 34,
        "marital_status": "never_married",
        "education_level": "some_college",
        "bachelors_field": None,
        "occupation": "food_service_worker",
        "city": "Madison",
        "state": "WI",
        "zipcode": "53703",
        "country": "USA",
    }
    return row | values


def nemotron_file(folder: Path) -> Path:
    rows = [
        nemotron_row("e7c05746", "Mary Alberti"),
        nemotron_row("e7c05746", "A copy of Mary", age=35),  # the same uuid again
        nemotron_row(
            "0b1d2c3e", "Nobody", persona=None, **{f"{t}_persona": "" for t in NEMOTRON_TOPICS}
        ),
        nemotron_row(
            "9f8e7d6c", "Raj Patel", sex="Male", age=61, city="Edison", state="NJ", zipcode=None
        ),
        nemotron_row(None, "No id"),
    ]
    path = folder / "nemotron-usa.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_nemotron_parquet(tmp_path):
    src = nemotron_file(tmp_path)
    summary = import_set(Config(), src, tmp_path / "bank", name="nemotron")

    c = summary.counts
    assert (c["import:in"], c["import:out"], c["import:failed"]) == (5, 2, 3)
    rows = personas(tmp_path / "bank")
    assert sorted(rows) == ["nemotron/9f8e7d6c", "nemotron/e7c05746"]
    mary = rows["nemotron/e7c05746"]
    assert mary["user_id"] == "e7c05746"
    assert mary["narrative"] == "\n\n".join(
        ["Mary Alberti is thoughtful."] + [f"Mary Alberti ({t})." for t in NEMOTRON_TOPICS]
    )
    assert mary["attributes"] == {
        "age_range": "34",
        "gender": "Female",
        "occupation": "food_service_worker",
        "location": "Madison, WI, USA",
        "interests": ["Running", "Folk music"],
        "values": None,
    }
    assert json.loads(mary["source_meta"]) == {
        "cultural_background": "Grew up in the Midwest.",
        "skills_and_expertise": "Cash handling and inventory.",
        "skills_and_expertise_list": "['Cash handling', 'Inventory tracking']",
        "hobbies_and_interests": "Running and folk music.",
        "career_goals_and_ambitions": "Become a shift supervisor.",
        "marital_status": "never_married",
        "education_level": "some_college",
        "bachelors_field": None,
        "zipcode": "53703",
    }
    raj = rows["nemotron/9f8e7d6c"]["attributes"]
    assert (raj["age_range"], raj["gender"], raj["location"]) == ("61", "Male", "Edison, NJ, USA")
    assert failures(tmp_path / "bank") == {
        "nemotron:row 2": "duplicate id 'e7c05746' (first at row 1)",
        "nemotron:row 3": "empty text in 'persona', 'professional_persona', 'sports_persona', "
        "'arts_persona', 'travel_persona', 'culinary_persona'",
        "nemotron:row 5": "no id: 'uuid' is missing or empty",
    }
    columns = read_manifest(tmp_path / "bank")["import"]["columns"]
    assert columns["id"] == "uuid" and columns["text"][0] == "persona"
    assert columns["attributes"]["location"] == ["city", "state", "country"]


def test_nemotron_text_columns_can_be_chosen(tmp_path):
    src = nemotron_file(tmp_path)
    import_set(Config(), src, tmp_path / "bank", text_columns=["professional_persona", "persona"])
    mary = personas(tmp_path / "bank")["nemotron-usa/e7c05746"]
    assert mary["narrative"] == "Mary Alberti (professional).\n\nMary Alberti is thoughtful."
    assert "sports_persona" in json.loads(mary["source_meta"])


# ------------------------------------------------------------------------------ generic


def test_generic_csv_with_chosen_columns(tmp_path):
    src = tmp_path / "survey.csv"
    src.write_bytes(
        b"pid,bio,about,sex,age_group,county,hobbies,wave\n"
        b'p1,"Keeps bees.","Votes in every election,\nrain or shine.",F,45-54,Kerry,'
        b'"bees, hiking",3\n'
        b"p2,Drives a taxi.,,M,25-34,Cork,,3\n"
        b"p3,Too,many,fields,here,x,y,z,extra\n"
        b"p4,Caf\xe9 owner.,,F,35-44,Clare,,3\n"
        b",No id here.,,F,35-44,Clare,,3\n"
    )
    summary = import_set(
        Config(),
        src,
        tmp_path / "bank",
        fmt="generic",
        text_columns=["bio", "about"],
        attribute_columns=["sex", "age_range=age_group", "location=county", "interests=hobbies"],
        id_column="pid",
    )
    assert (summary.counts["import:in"], summary.counts["import:out"]) == (5, 2)
    rows = personas(tmp_path / "bank")
    assert (
        rows["survey/p1"]["narrative"] == "Keeps bees.\n\nVotes in every election,\nrain or shine."
    )
    assert rows["survey/p1"]["attributes"] == {
        "age_range": "45-54",
        "gender": "F",
        "occupation": None,
        "location": "Kerry",
        "interests": ["bees", "hiking"],
        "values": None,
    }
    assert rows["survey/p2"]["narrative"] == "Drives a taxi."
    assert json.loads(rows["survey/p2"]["source_meta"]) == {"wave": "3"}
    assert failures(tmp_path / "bank") == {
        "survey:row 3": "9 fields, the header has 8",
        "survey:row 4": "not UTF-8 (byte 0xe9 in 'bio')",
        "survey:row 5": "no id: 'pid' is missing or empty",
    }


def test_generic_jsonl_maps_known_demographic_columns(tmp_path):
    src = tmp_path / "people.jsonl"
    rows = [
        {
            "id": 7,
            "text": "A ferry pilot.",
            "gender": "female",
            "age": 41.0,
            "country": "Kenya",
            "interests": ["chess", "radio"],
            "extra": {"a": 1},
        },
        {"id": 8, "gender": "male"},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert open_persona_set(src).format == "generic"
    summary = import_set(Config(), src, tmp_path / "bank")
    assert summary.counts["import:failed:no_text"] == 1
    (pilot,) = personas(tmp_path / "bank").values()
    assert pilot[KEY] == "people/7" and pilot["narrative"] == "A ferry pilot."
    assert pilot["attributes"] == NO_ATTRIBUTES | {
        "age_range": "41",
        "gender": "female",
        "location": "Kenya",
        "interests": ["chess", "radio"],
    }
    assert json.loads(pilot["source_meta"]) == {"extra": {"a": 1}}
    assert failures(tmp_path / "bank") == {"people:line 2": "no text: no 'text' in the row"}


def test_generic_parquet_without_ids_uses_row_numbers(tmp_path):
    src = tmp_path / "set.parquet"
    table = pa.table(
        {
            "id": ["a", "b", "c"],
            "narrative": ["First.", "Second.", "Third."],
            "values": [["honesty"], None, ["family", "faith"]],
        }
    )
    pq.write_table(table, src)
    import_set(Config(), src, tmp_path / "bank", id_column="", name="mine")
    rows = personas(tmp_path / "bank")
    assert sorted(rows) == ["mine/1", "mine/2", "mine/3"]
    assert rows["mine/3"]["attributes"]["values"] == ["family", "faith"]
    assert json.loads(rows["mine/1"]["source_meta"]) == {"id": "a"}


def test_formats_are_told_by_columns_and_bad_options_are_named():
    assert detect_format(["persona"]) == "personahub"
    assert detect_format(["input persona", "synthesized text", "description"]) == "personahub"
    assert detect_format(["uuid", "persona", "arts_persona", "sex"]) == "nemotron"
    assert detect_format(["persona", "age"]) == "generic"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fmt": "generic"}, r"none of the generic text columns .*--text-column"),
        ({"text_columns": ["bio"]}, r"no column 'bio' \(--text-column\); its columns: words"),
        ({"text_columns": ["words"], "attribute_columns": ["height"]}, r"which attribute"),
        ({"text_columns": ["words"], "attribute_columns": ["mood=words"]}, r"unknown attribute"),
        ({"text_columns": ["words"], "name": "a/b"}, r"bad --name"),
    ],
)
def test_bad_options_are_errors_before_anything_is_written(tmp_path, options, message):
    src = tmp_path / "x.jsonl"
    src.write_text('{"words": "hi"}\n', encoding="utf-8")
    with pytest.raises(PersonagenError, match=message):
        import_set(Config(), src, tmp_path / "bank", **options)
    assert not (tmp_path / "bank").exists()


# --------------------------------------------------------- one set per bank, idempotent


def scores_for(ids: list[str]) -> pa.Table:
    traits = np.random.default_rng(0).uniform(2, 4, size=(len(ids), len(TRAITS)))
    columns = {f.name: pa.nulls(len(ids), f.type) for f in GROUPS["scores"]}
    columns |= {KEY: pa.array(ids, pa.string()), "instrument": ["ipip-50"] * len(ids)}
    return pa.table(columns | {t: traits[:, j] for j, t in enumerate(TRAITS)})


def test_reimport_is_idempotent_and_keeps_scores_joined(tmp_path):
    src, bank = nemotron_file(tmp_path), tmp_path / "bank"
    import_set(Config(), src, bank)
    before = read_group(bank, "personas").sort_by(KEY)
    write_group(bank, "scores", scores_for(before[KEY].to_pylist()))

    again = import_set(Config(), src, bank)
    assert again.counts["import:out"] == 2
    assert read_group(bank, "personas").sort_by(KEY).equals(before)
    assert len(failures(bank)) == 3 and read_failures(bank).num_rows == 3  # not doubled
    scored = read_personas(bank)
    assert sorted(scored.ids()) == before[KEY].to_pylist() and scored.unscored == 0
    places = dict(zip(scored.ids(), scored.table["attributes"].to_pylist(), strict=True))
    assert {pid: a["location"] for pid, a in places.items()} == {
        "nemotron-usa/9f8e7d6c": "Edison, NJ, USA",
        "nemotron-usa/e7c05746": "Madison, WI, USA",
    }


def test_another_set_is_refused_and_replace_starts_over(tmp_path):
    bank = tmp_path / "bank"
    import_set(Config(), personahub_file(tmp_path), bank)
    other = nemotron_file(tmp_path)
    with pytest.raises(PersonagenError, match=r"holds personas of the set .*--replace"):
        import_set(Config(), other, bank)
    with pytest.raises(PersonagenError, match=r"with name 'persona', not 'ph'.*--replace"):
        import_set(Config(), tmp_path / "persona.jsonl", bank, name="ph")
    import_set(Config(), other, bank, replace=True)
    assert sorted(personas(bank)) == ["nemotron-usa/9f8e7d6c", "nemotron-usa/e7c05746"]
    assert set(failures(bank)) == {"nemotron-usa:row 2", "nemotron-usa:row 3", "nemotron-usa:row 5"}
    assert read_manifest(bank)["import"]["format"] == "nemotron"


def test_a_bank_of_mined_personas_is_refused_and_mining_into_an_imported_one(tmp_path):
    write_mined(tmp_path / "bank", {"u1/0": "A mined persona."})
    with pytest.raises(PersonagenError, match=r"holds mined personas, not imported.*--replace"):
        import_set(Config(), personahub_file(tmp_path), tmp_path / "bank")
    imported = tmp_path / "imported"
    import_set(Config(), personahub_file(tmp_path), imported)
    histories = write_histories(tmp_path / "in", 3)
    with pytest.raises(PersonagenError, match=r"holds imported personas, not mined.*--replace"):
        mine(Config(), histories, imported)
    assert read_manifest(imported)["origin"] == "imported"


# ---------------------------------------------------------------------------------- CLI


def test_cli_import_exit_codes(tmp_path):
    src, bank = personahub_file(tmp_path), str(tmp_path / "bank")
    runner = CliRunner()
    ok = runner.invoke(cli, ["import", str(src), "--out", bank])
    assert ok.exit_code == 0, ok.output
    assert "rows read" in ok.output and "5 rows not imported" in ok.output
    again = runner.invoke(cli, ["import", str(src), "--format", "personahub", "--out", bank])
    assert again.exit_code == 0, again.output

    refused = runner.invoke(cli, ["import", str(nemotron_file(tmp_path)), "--out", bank])
    assert refused.exit_code == 2
    assert refused.output.startswith("error: bank ") and "--replace" in refused.output
    assert refused.output.count("\n") == 1
    replaced = runner.invoke(
        cli, ["import", str(tmp_path / "nemotron-usa.parquet"), "--out", bank, "--replace"]
    )
    assert replaced.exit_code == 0, replaced.output

    missing = runner.invoke(cli, ["import", str(src), "--out", bank, "--text-column", "bio"])
    assert missing.exit_code == 2 and "no column 'bio'" in missing.output
    assert runner.invoke(cli, ["import", str(src)]).exit_code == 2  # --out is required
    bad_format = runner.invoke(cli, ["import", str(src), "--format", "xml", "--out", bank])
    assert bad_format.exit_code == 2


RAY_SETS = ["--set", "ray.num_cpus=2", "--set", "ray.object_store_mb=512"]


@pytest.mark.slow
def test_an_imported_bank_is_embedded(tmp_path):
    bank = tmp_path / "bank"
    import_set(Config(), nemotron_file(tmp_path), bank)
    result = subprocess.run(
        [sys.executable, "-m", "personagen", "embed", str(bank), *RAY_SETS],
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    embeddings = read_group(bank, "embeddings")
    assert sorted(embeddings[KEY].to_pylist()) == sorted(personas(bank))
    assert embeddings.schema.field("embedding").type.list_size == 384
