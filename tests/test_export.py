"""`personagen export`: every format loads back with nothing lost (count, ids, traits, weights),
in the real library where it installs in CI (`datasets`, `huggingface_hub`) and against the
documented schema of OASIS and Concordia (their installs pull CUDA torch or ~150 packages, see
the README); bad input is one line, exit 2, and nothing written."""

from __future__ import annotations

import ast
import csv
import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from synthetic import write_scored_bank

from personagen import TRAITS
from personagen.cli import cli
from personagen.commands.export import export
from personagen.errors import PersonagenError
from personagen.exports import FORMATS, flat
from personagen.exports.formats import WRITERS
from personagen.exports.hf import source_corpus
from personagen.exports.oasis import first_sentence, mbti
from personagen.exports.sets import read_source
from personagen.io.bank import KEY, update_manifest

# camel-oasis 0.2.5, oasis/social_agent/agents_generator.py: the keys generate_reddit_agents and
# generate_reddit_agent_graph read from each object of the Reddit profile list (JSON) ...
OASIS_REDDIT_FIELDS = ("realname", "username", "bio", "persona", "age", "gender", "mbti", "country")
# ... and the columns generate_agents and generate_twitter_agent_graph read from the Twitter CSV
# (pandas.read_csv; the two lists through ast.literal_eval).
OASIS_TWITTER_COLUMNS = (
    "name",
    "username",
    "description",
    "user_char",
    "following_agentid_list",
    "previous_tweets",
)
# gdm-concordia 2.1.0, concordia/typing/prefab.py: InstanceConfig(prefab, role, params) and the
# values of Role.
CONCORDIA_ROLES = {"entity", "game_master", "initializer"}
# concordia/utils/helper_functions.get_package_classes names prefabs <module>__<class>:
# concordia/prefabs/entity/basic.py Entity, whose params are these ...
CONCORDIA_ENTITY = ("basic__Entity", {"name", "goal", "randomize_choices"})
# ... and concordia/prefabs/game_master/formative_memories_initializer.py GameMaster, whose
# FormativeMemoriesInitializer (components/game_master/next_game_master.py) refuses a player's
# memories given as one string and a context that is not a string.
CONCORDIA_INITIALIZER = (
    "formative_memories_initializer__GameMaster",
    {
        "name",
        "next_game_master_name",
        "shared_memories",
        "player_specific_context",
        "player_specific_memories",
    },
)


def _run(*args):
    return CliRunner().invoke(cli, [*map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A bank of 60 personas (55 scored) and a set of 20 aligned from it."""
    root = tmp_path_factory.mktemp("export")
    bank = root / "bank"
    write_scored_bank(bank, 60, unscored=5)
    rng = np.random.default_rng(1)
    y = np.clip(rng.normal(3.2, 0.6, (600, 5)), 1, 5)
    pq.write_table(pa.table({t: y[:, j] for j, t in enumerate(TRAITS)}), root / "ref.parquet")
    result = _run(
        "align", "--personas", bank, "--reference", root / "ref.parquet", "--n", 20,
        "--out", root / "aligned", "--seed", 3,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return bank, root / "aligned"


def _expected(aligned):
    """(ids, trait matrix, weights) of the aligned set, from the files align wrote."""
    chosen = pq.read_table(aligned / "personas.parquet")
    weights = pq.read_table(aligned / "weights.parquet", columns=[KEY, "weight"]).to_pydict()
    weight_of = dict(zip(weights[KEY], weights["weight"], strict=True))
    ids = chosen.column(KEY).to_pylist()
    x = [[row[t] for t in TRAITS] for row in chosen.to_pylist()]
    return ids, x, [weight_of[i] for i in ids]


def _load_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _load_csv(path):
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for name in (*TRAITS, "weight"):
            row[name] = float(row[name])
        row["interests"] = json.loads(row["interests"])
    return rows


def _load_hf(path):
    import datasets

    return datasets.load_from_disk(str(path)).to_list()


def _load_oasis(path):
    """The Reddit profiles, checked field by field against the Twitter CSV as OASIS reads it."""
    reddit = json.loads((path / "reddit_profiles.json").read_text(encoding="utf-8"))
    twitter = pd.read_csv(path / "twitter_profiles.csv")
    assert list(twitter[KEY]) == [r[KEY] for r in reddit]
    for trait in TRAITS:
        assert list(twitter[trait]) == [r[trait] for r in reddit]
    return reddit


def _load_concordia(path):
    return json.loads(path.read_text(encoding="utf-8"))["personas"]


LOADERS = {
    "oasis": _load_oasis,
    "concordia": _load_concordia,
    "hf": _load_hf,
    "jsonl": _load_jsonl,
    "csv": _load_csv,
}


def test_the_cli_lists_every_format_the_writers_know():
    assert FORMATS == tuple(WRITERS) == tuple(LOADERS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_aligned_set_round_trips_in_every_format(built, tmp_path, fmt):
    _, aligned = built
    out = tmp_path / f"out-{fmt}"
    result = _run("export", aligned, "--to", fmt, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out} ({fmt}, aligned {aligned / 'personas.parquet'})" in result.output
    rows = LOADERS[fmt](out)
    ids, x, weights = _expected(aligned)
    assert len(rows) == 20
    assert [r[KEY] for r in rows] == ids
    assert [[r[t] for t in TRAITS] for r in rows] == x
    assert [r["weight"] for r in rows] == weights
    assert {r["instrument"] for r in rows} == {"ipip-50"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name], "a temporary file is left"


def test_jsonl_csv_and_hf_keep_the_narrative_and_attributes(built, tmp_path):
    _, aligned = built
    chosen = pq.read_table(aligned / "personas.parquet").to_pylist()
    for fmt in ("jsonl", "csv", "hf"):
        export(aligned, fmt, tmp_path / fmt)
    jsonl, rows_csv, hf = (LOADERS[f](tmp_path / f) for f in ("jsonl", "csv", "hf"))
    for row, j, c, h in zip(chosen, jsonl, rows_csv, hf, strict=True):
        assert j["narrative"] == c["narrative"] == h["narrative"] == row["narrative"]
        assert j["attributes"] == h["attributes"] == row["attributes"]
        assert c["occupation"] == row["attributes"]["occupation"]
        assert c["interests"] == row["attributes"]["interests"]
        assert "original_narrative" not in j, "an aligned set has no revision"


def test_oasis_profiles_hold_the_fields_its_loaders_read(built, tmp_path):
    _, aligned = built
    export(aligned, "oasis", tmp_path / "oasis")
    reddit = json.loads((tmp_path / "oasis" / "reddit_profiles.json").read_text())
    chosen = pq.read_table(aligned / "personas.parquet").to_pylist()
    for i, (profile, row) in enumerate(zip(reddit, chosen, strict=True), start=1):
        assert set(OASIS_REDDIT_FIELDS) <= set(profile)
        assert profile["realname"] == f"Persona {i}" and profile["username"] == f"persona_{i}"
        assert profile["persona"] == row["narrative"]
        assert profile["bio"] == row["narrative"].split(". ")[0] + "."
        assert profile["age"] == row["attributes"]["age_range"]
        assert profile["gender"] == row["attributes"]["gender"]
        assert profile["country"] == row["attributes"]["location"]
        assert profile["mbti"] == mbti(row)
    twitter = pd.read_csv(tmp_path / "oasis" / "twitter_profiles.csv")
    assert set(OASIS_TWITTER_COLUMNS) <= set(twitter.columns)
    for column in ("following_agentid_list", "previous_tweets"):
        assert all(ast.literal_eval(v) == [] for v in twitter[column])
    assert list(twitter["user_char"]) == [r["narrative"] for r in chosen]
    assert list(twitter["name"]) == [f"Persona {i}" for i in range(1, 21)]


def test_concordia_instances_match_its_prefab_schema(built, tmp_path):
    _, aligned = built
    export(aligned, "concordia", tmp_path / "players.json")
    spec = json.loads((tmp_path / "players.json").read_text())
    chosen = pq.read_table(aligned / "personas.parquet").to_pylist()
    names = [f"Persona {i}" for i in range(1, 21)]
    entities = [i for i in spec["instances"] if i["role"] == "entity"]
    initializers = [i for i in spec["instances"] if i["role"] == "initializer"]
    assert {i["role"] for i in spec["instances"]} <= CONCORDIA_ROLES
    assert len(spec["instances"]) == 21 and len(initializers) == 1
    assert [e["params"]["name"] for e in entities] == names
    for entity in entities:
        assert entity["prefab"] == CONCORDIA_ENTITY[0]
        assert set(entity["params"]) <= CONCORDIA_ENTITY[1]
    prefab, allowed = CONCORDIA_INITIALIZER
    params = initializers[0]["params"]
    assert initializers[0]["prefab"] == prefab and set(params) <= allowed
    assert params["player_specific_context"] == {
        name: row["narrative"] for name, row in zip(names, chosen, strict=True)
    }
    assert params["player_specific_memories"] == {
        name: [row["narrative"]] for name, row in zip(names, chosen, strict=True)
    }
    assert [p["name"] for p in spec["personas"]] == names


def test_the_hf_card_carries_provenance_alignment_and_limits(built, tmp_path):
    from huggingface_hub import DatasetCard

    _, aligned = built
    export(aligned, "hf", tmp_path / "hf")
    card = DatasetCard.load(tmp_path / "hf" / "README.md")
    assert card.data.to_dict() == {
        "license": "other",
        "license_name": "blog-authorship-corpus",
        "license_link": "https://u.cs.biu.ac.il/~koppel/BlogCorpus.htm",
        "pretty_name": "personagen aligned persona set: aligned",
        "size_categories": ["n<1K"],
        "tags": ["personas", "synthetic", "social-simulation", "big-five", "personagen"],
    }
    text = card.text
    report = json.loads((aligned / "report.json").read_text())
    after = report["sets"]["after"]
    assert "Blog Authorship Corpus" in text
    assert "| mine | test | v0 | 20 |" in text and "| score | scorer-1 | score-v1 | 20 |" in text
    assert "| score | scorer-1 | http://llm:8000/v1 | 0.0 | 0 |" in text
    assert f"- Reference: {report['info']['reference']}" in text
    energy = (
        f"| energy distance | {report['sets']['before']['metrics']['energy']:.4g} | "
        f"{report['sets']['before']['x_floor']['energy']:.2f}× | "
        f"{after['metrics']['energy']:.4g} | {after['x_floor']['energy']:.2f}× | "
        f"{after['floor']['mean']['energy']:.4g} |"
    )
    assert energy in text
    assert "| \\|mean error\\| (mean over traits) |" in text, "pipes in labels are escaped"
    flagged = sum(
        1 for f in pq.read_table(aligned / "personas.parquet")["score_flags"].to_pylist() if f
    )
    assert f"- {flagged:,} of 20 personas carry score flags" in text
    assert "## Intended use" in text and "## Known limits" in text


def test_the_license_flag_replaces_the_corpus_licence(built, tmp_path):
    from huggingface_hub import DatasetCard

    _, aligned = built
    result = _run(
        "export", aligned, "--to", "hf", "--out", tmp_path / "hf", "--license", "cc-by-4.0"
    )
    assert result.exit_code == 0, result.output
    data = DatasetCard.load(tmp_path / "hf" / "README.md").data.to_dict()
    assert data["license"] == "cc-by-4.0" and "license_name" not in data


def test_a_bank_card_names_its_imported_source_and_no_alignment(tmp_path):
    from huggingface_hub import DatasetCard

    bank = tmp_path / "bank"
    write_scored_bank(bank, 12, unscored=2)
    update_manifest(bank, **{"import": {"format": "personahub", "source": "persona.jsonl"}})
    export(bank, "hf", tmp_path / "hf")
    card = DatasetCard.load(tmp_path / "hf" / "README.md")
    assert card.data.license == "cc-by-nc-sa-4.0"
    assert card.data.source_datasets == ["proj-persona/PersonaHub"]
    assert card.data.pretty_name == "personagen persona bank: bank"
    assert "Not aligned: this is the whole scored set." in card.text
    assert "2 personas without trait scores were left out." in card.text
    assert "- The personas were imported from persona.jsonl as that set wrote them." in card.text
    rows = _load_hf(tmp_path / "hf")
    assert [r[KEY] for r in rows] == [f"u{i}/0" for i in range(10)]
    assert "weight" not in rows[0]


def test_the_source_corpus_comes_from_the_manifest():
    assert source_corpus({"import": {"format": "personahub", "source": "p.jsonl"}}) == {
        "name": "PersonaHub (proj-persona/PersonaHub)",
        "license": "cc-by-nc-sa-4.0",
        "source_datasets": ["proj-persona/PersonaHub"],
        "path": "p.jsonl",
    }
    assert source_corpus({"import": {"format": "nemotron"}})["license"] == "cc-by-4.0"
    unknown = source_corpus({"histories": "runs/blogs/histories"})
    assert unknown["license"] == "unknown" and unknown["path"] == "runs/blogs/histories"


def test_a_bank_exports_its_scored_personas(built, tmp_path):
    bank, _ = built
    summary = export(bank, "jsonl", tmp_path / "bank.jsonl")
    rows = _load_jsonl(tmp_path / "bank.jsonl")
    assert summary.counts == {"read": 60, "unscored": 5, "exported": 55}
    assert [r[KEY] for r in rows] == [f"u{i}/0" for i in range(55)]
    assert all("weight" not in r for r in rows)
    scores = pq.read_table(bank / "scores").to_pylist()
    assert [[r[t] for t in TRAITS] for r in rows] == [[s[t] for t in TRAITS] for s in scores]


def test_an_adapted_set_exports_its_revised_narratives(built, tmp_path):
    _, aligned = built
    adapted = tmp_path / "adapted"
    shutil.copytree(aligned, adapted)
    table = pq.read_table(adapted / "personas.parquet")
    revised = [f"Revised {i}." if i % 2 else None for i in range(table.num_rows)]
    table = table.set_column(
        table.column_names.index("revised_narrative"), "revised_narrative", pa.array(revised)
    )
    pq.write_table(table, adapted / "personas.parquet")
    report = json.loads((adapted / "report.json").read_text())
    report["info"] |= {"command": "adapt", "query": "nurses", "target": "East Asia"}
    (adapted / "report.json").write_text(json.dumps(report))
    assert read_source(adapted).kind == "adapted"
    export(adapted, "jsonl", tmp_path / "adapted.jsonl")
    rows = _load_jsonl(tmp_path / "adapted.jsonl")
    originals = table.column("narrative").to_pylist()
    assert [r["narrative"] for r in rows] == [
        r or o for r, o in zip(revised, originals, strict=True)
    ]
    assert [r["original_narrative"] for r in rows] == originals


def test_a_set_aligned_with_repeats_keeps_every_copy(built, tmp_path):
    _, aligned = built
    repeated = tmp_path / "repeated"
    shutil.copytree(aligned, repeated)
    table = pq.read_table(repeated / "personas.parquet")
    table = pa.concat_tables([table, table.slice(0, 3)])
    pq.write_table(table, repeated / "personas.parquet")
    report = json.loads((repeated / "report.json").read_text())
    (repeated / "report.json").write_text(
        json.dumps(report | {"info": report["info"] | {"replace": True}})
    )
    export(repeated, "csv", tmp_path / "rows.csv")
    assert [r[KEY] for r in _load_csv(tmp_path / "rows.csv")] == table.column(KEY).to_pylist()
    (repeated / "report.json").write_text(json.dumps(report))
    with pytest.raises(PersonagenError, match="duplicate persona_id"):
        read_source(repeated)


def test_a_bank_scored_with_two_instruments_needs_one(tmp_path):
    bank = tmp_path / "bank"
    write_scored_bank(bank, 10)
    write_scored_bank(bank, 10, instrument="ipip-neo-120", seed=1)
    result = _run("export", bank, "--to", "jsonl", "--out", tmp_path / "x.jsonl")
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: bank {bank} is scored with 2 instruments (ipip-50, ipip-neo-120): "
        "choose one with --instrument"
    )
    result = _run(
        "export", bank, "--to", "jsonl", "--out", tmp_path / "x.jsonl", "--instrument",
        "ipip-neo-120",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {r["instrument"] for r in _load_jsonl(tmp_path / "x.jsonl")} == {"ipip-neo-120"}


def _bad_inputs(built, tmp_path):
    _, aligned = built
    traits_only = tmp_path / "traits.parquet"
    pq.write_table(pq.read_table(aligned / "personas.parquet", columns=[KEY, *TRAITS]), traits_only)
    unscored = tmp_path / "unscored"
    write_scored_bank(unscored, 4, unscored=4)
    (tmp_path / "taken.jsonl").write_text("keep me\n")
    (tmp_path / "empty").mkdir()
    return {
        "no set": (
            [tmp_path / "empty", "--to", "csv"],
            f"no persona set at {tmp_path / 'empty'}: give a bank folder",
        ),
        "traits only": ([traits_only, "--to", "oasis"], "have no narrative column: export a bank"),
        "nothing scored": ([unscored, "--to", "hf"], "run `personagen score` on the bank first"),
        "out exists": (
            [aligned, "--to", "jsonl", "--out", tmp_path / "taken.jsonl"],
            "taken.jsonl exists: pass --overwrite to replace it",
        ),
        "licence elsewhere": (
            [aligned, "--to", "csv", "--license", "mit"],
            "--license is for --to hf",
        ),
    }


@pytest.mark.parametrize(
    "case", ["no set", "traits only", "nothing scored", "out exists", "licence elsewhere"]
)
def test_bad_input_is_one_line_and_writes_nothing(built, tmp_path, case):
    args, message = _bad_inputs(built, tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    if "--out" not in args:
        args = [*args, "--out", tmp_path / "out"]
    result = _run("export", *args)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")
    assert message in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "taken.jsonl").read_text() == "keep me\n"


def test_a_failing_writer_leaves_nothing_and_keeps_what_it_would_replace(
    built, tmp_path, monkeypatch
):
    _, aligned = built

    def half_then_fail(rows, path, source):
        path.write_text('{"persona_id": "u1/0"}\n')
        raise OSError("disk full")

    monkeypatch.setitem(WRITERS, "jsonl", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        export(aligned, "jsonl", tmp_path / "new.jsonl")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "old.jsonl").write_text("old\n")
    with pytest.raises(OSError, match="disk full"):
        export(aligned, "jsonl", tmp_path / "old.jsonl", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["old.jsonl"]
    assert (tmp_path / "old.jsonl").read_text() == "old\n"
    monkeypatch.setitem(WRITERS, "jsonl", flat.write_jsonl)
    export(aligned, "jsonl", tmp_path / "old.jsonl", overwrite=True)
    assert len(_load_jsonl(tmp_path / "old.jsonl")) == 20


def test_mbti_and_bio_read_off_the_persona():
    traits = dict(zip(TRAITS, [3.5, 2.9, 4.1, 3.0, 1.0], strict=True))
    assert mbti(traits) == "ENTP"
    assert mbti(dict.fromkeys(TRAITS, 3.01)) == "ENFJ"
    assert first_sentence("Works nights. Loves tea.") == "Works nights."
    long = "word " * 50
    assert first_sentence(long) == ("word " * 32).strip() + "…"


def test_the_set_records_where_it_came_from(built):
    bank, aligned = built
    for path in (aligned, aligned / "personas.parquet"):
        source = read_source(path)
        assert (source.kind, source.bank, source.instrument) == ("aligned", bank, "ipip-50")
        assert source.path == aligned / "personas.parquet"
        assert source.manifest["build"] == {"input": "/data/blogs", "format": "blogs-xml"}
        assert source.report["info"]["n"] == 20
