"""`personagen adapt`: retrieval, revision, re-scoring and re-alignment, with the stub LLM server
for the failure paths (real MiniLM, FAISS, Ray and alignment), and the embedded defaults end to
end (real llama.cpp server) in the slow test."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_test_server import Faults, LLMTestServer, request_schema
from synthetic import embed_and_index, stub_llm_sets, write_mined

from personagen import TRAITS
from personagen.cli import cli
from personagen.commands.adapt import adapt, trait_shift
from personagen.commands.reference import load
from personagen.config import Config, load_config
from personagen.errors import PersonagenError
from personagen.index.retrieve import similarity_summary
from personagen.index.search import search
from personagen.io.bank import (
    GROUPS,
    KEY,
    QUALITY_TYPE,
    read_group,
    update_manifest,
    write_group,
)
from personagen.io.reference import load_reference
from personagen.llm.structured import OutputError, parse_answer
from personagen.stages.revise import (
    Revision,
    min_words,
    revise_prompt,
    target_group,
    unchanged,
)

NARRATIVES = {
    "p1/0": "This person is a nurse in rural Ohio who works night shifts at a small hospital, "
    "raises two teenagers alone and spends Sundays at church and gardening.",
    "p2/0": "This person is a software engineer in Berlin who writes code late at night, plays "
    "online strategy games with friends and worries about rent and deadlines.",
    "p3/0": "This person is a retired teacher in a village in Wales who volunteers at the "
    "library, walks the dog along the coast every morning and loves choir singing.",
    "p4/0": "This person is a college student in Toronto who studies biology, works part time in "
    "a coffee shop, goes to parties on weekends and posts about music festivals.",
    "p5/0": "This person is a chef in Lagos who runs a busy restaurant kitchen, experiments with "
    "new recipes, argues about football and supports a large extended family.",
    "p6/0": "This person is a young mother in Manila who works from home as an accountant, "
    "cooks for her parents and reads novels when the baby sleeps.",
    "p7/0": "This person is a farmer in rural Ohio who grows corn and soybeans, fixes old "
    "tractors in his barn and coaches the local youth baseball team.",
    "p8/0": "This person is a graphic designer in Berlin who cycles everywhere, paints murals, "
    "goes to techno clubs and is anxious about climate change.",
}


def write_bank(bank, narratives=NARRATIVES, scored=None, kept=None) -> None:
    """A judged bank of `narratives` with bank scores for `scored` ids (default: all), embedded
    with the packaged MiniLM (in-process, so the fast tests skip the embed stage's actors) and
    indexed."""
    ids = list(narratives)
    n = len(ids)
    write_mined(bank, narratives)
    kept = kept or dict.fromkeys(ids, True)
    write_group(
        bank,
        "quality",
        pa.table(
            {
                KEY: ids,
                "quality": pa.nulls(n, QUALITY_TYPE),
                "kept": [kept.get(i, True) for i in ids],
                "reject_reason": pa.nulls(n, pa.string()),
                "duplicate_of": pa.nulls(n, pa.string()),
                "judge_model": ["judge"] * n,
                "judge_prompt_version": ["judge-x"] * n,
            }
        ),
    )
    scored = ids if scored is None else scored
    traits = np.random.default_rng(1).uniform(2, 4, size=(len(scored), 5))
    columns = {f.name: pa.nulls(len(scored), f.type) for f in GROUPS["scores"]}
    columns |= {KEY: pa.array(scored, pa.string()), "instrument": ["ipip-50"] * len(scored)}
    columns |= {t: traits[:, j] for j, t in enumerate(TRAITS)}
    write_group(bank, "scores", pa.table(columns))
    update_manifest(bank, score={"instrument": "ipip-50"})
    embed_and_index(bank)


def request_data(body: dict) -> dict:
    """The DATA block of a request ({} for the logprob probe, which has none)."""
    content = next((m["content"] for m in body["messages"] if "<data>\n" in m["content"]), None)
    if content is None:
        return {}
    return json.loads(content.split("<data>\n", 1)[1].split("\n</data>", 1)[0])


def reviser(body, rng):
    """Revision requests: the persona moved to Osaka (markers kept); score requests: a digit."""
    schema = request_schema(body)
    if schema is None or "revised_narrative" not in schema.get("properties", {}):
        return str(rng.randint(1, 5))
    persona = request_data(body)["persona"]
    return json.dumps(
        {
            "revised_narrative": persona.replace("rural Ohio", "rural Hokkaido")
            .replace("Berlin", "Osaka")
            .replace("Toronto", "Seoul"),
            "changes": ["moved to East Asia"],
        }
    )


def refuse_marked(rate_limited: str):
    """Revisions of REVISEFAIL personas and every scoring request about SCOREFAIL are refused;
    the first revision request of the persona `rate_limited` gets a 429 (then an answer)."""
    limited: list[str] = []

    def decide(body):
        data = request_data(body)
        if "target_group" in data and "REVISEFAIL" in data["persona"]:
            return "400"
        if "statement" in data and "SCOREFAIL" in data["persona"]:
            return "400"
        if "target_group" in data and data["persona"] == rate_limited and not limited:
            limited.append(rate_limited)
            return "429"
        return None

    return decide


def stub_config(server, *extra: str):
    return load_config(
        None,
        [
            f"llm.base_url={server.base_url}",
            "llm.timeout_s=5",
            "llm.backoff_s=0.01",
            "llm.max_retries=2",
            "llm.concurrency=16",
            "progress_s=5",
            "ray.num_cpus=2",
            "ray.object_store_mb=512",
            "reference.builtin_rows=2000",
            "evaluate.floor_repeats=2",
            "align.atoms=256",
            *extra,
        ],
    )


QUERY = "a young person who lives in a big city"


def run_adapt(
    bank, query, reference, out, cfg: Config, *, n=None, k=None, where=(), revise=None, group=None
):
    """`adapt` with its settings given as the command line gives them."""
    cfg = cfg.updated(
        {
            "adapt.n": n,
            "adapt.k": k,
            "adapt.filters": [*cfg.adapt.filters, *where] if where else None,
            "adapt.revise": revise,
        }
    )
    return adapt(cfg, bank, query, load(cfg, reference, group=group), out)


@pytest.mark.slow
def test_adapt_with_failures_accounts_for_every_candidate_and_resumes(ray_local, tmp_path):
    bank, out = tmp_path / "bank", tmp_path / "out"
    narratives = dict(NARRATIVES)
    narratives["p2/0"] += " REVISEFAIL"
    narratives["p4/0"] += " SCOREFAIL"
    write_bank(bank, narratives)
    expected = search(bank, QUERY, 6, ["kept=true"])
    revised = [pid for pid in expected[KEY].to_pylist() if pid != "p2/0"]
    decide = refuse_marked(rate_limited=narratives[revised[0]])
    with LLMTestServer(Faults(), reviser, decide=decide) as srv:
        cfg = stub_config(srv)
        summary = run_adapt(bank, QUERY, "builtin:east-asia", out, cfg, n=3, k=6)
        requests = len(srv.records())

        c = summary.counts
        assert (c["retrieved"], c["candidates"], c["aligned_candidates"]) == (6, 6, 4)
        assert (c["revise_failed"], c["score_failed"], c["chosen"]) == (1, 1, 3)
        assert c["revise:in"] == 6 and c["revise:out"] == 5 and c["revise:retries"] == 1
        assert c["score:in"] == 5 and c["score:out"] == 4 and c["score:failed"] == 1
        moved = ("rural Ohio", "Berlin", "Toronto")  # what the stub reviser edits
        assert c["unchanged"] == sum(not any(m in narratives[p] for m in moved) for p in revised)

        failures = {f["stage"]: f for f in pq.read_table(out / "failures.parquet").to_pylist()}
        assert (failures["revise"][KEY], failures["score"][KEY]) == ("p2/0", "p4/0")
        assert failures["revise"]["reason"].startswith("HTTP 400")
        assert failures["score"]["reason"].startswith("too few items answered")

        candidates = pq.read_table(out / "candidates.parquet")
        assert candidates.column(KEY).to_pylist() == [
            pid for pid in expected.column(KEY).to_pylist() if pid not in ("p2/0", "p4/0")
        ]
        assert candidates.column("similarity").to_pylist() == pytest.approx(
            [
                s
                for pid, s in zip(
                    expected[KEY].to_pylist(), expected["score"].to_pylist(), strict=True
                )
                if pid not in ("p2/0", "p4/0")
            ]
        )
        bank_scores = {r[KEY]: r for r in read_group(bank, "scores").to_pylist()}
        for row in candidates.to_pylist():
            assert row["narrative"] == narratives[row[KEY]]  # the original, untouched
            assert (
                row["revised_narrative"]
                == json.loads(reviser(revise_body(narratives[row[KEY]]), None))["revised_narrative"]
            )
            assert row["revision_changes"] == ["moved to East Asia"]
            assert row["trait_source"] == "revised" and row["instrument"] == "ipip-50"
            assert len(row["item_responses"]) == 50
            for t in TRAITS:
                assert 1 <= row[t] <= 5
                assert row["original_" + t] == pytest.approx(bank_scores[row[KEY]][t])
        assert read_group(bank, "personas").column("narrative").to_pylist() == list(
            narratives.values()
        ), "the bank's narratives must never be replaced"

        chosen = pq.read_table(out / "personas.parquet")
        assert chosen.num_rows == 3 and set(chosen[KEY].to_pylist()) <= set(
            candidates[KEY].to_pylist()
        )
        weights = pq.read_table(out / "weights.parquet")
        assert weights[KEY].to_pylist() == candidates[KEY].to_pylist()
        assert sum(weights["chosen"].to_pylist()) == 3
        report = json.loads((out / "report.json").read_text())
        info = report["info"]
        assert info["command"] == "adapt" and info["query"] == QUERY
        assert info["retrieval"]["retrieved"] == 6 and info["retrieval"]["allowed_by_filters"] == 8
        assert info["retrieval"]["similarity"]["n"] == 6
        assert info["target"].startswith("people living in Eastern Asia")
        assert report["n_before"] == 4 and report["n_after"] == 3
        assert_energy_over_floor(report["sets"]["after"])
        assert "Similarity to the query" in (out / "report.html").read_text()

        # a re-run asks nothing: revisions, scores and failures come from OUT/work
        again = run_adapt(bank, QUERY, "builtin:east-asia", out, cfg, n=3, k=6)
        assert len(srv.records()) == requests
        assert again.counts["aligned_candidates"] == 4 and "revise:in" not in again.counts
        assert pq.read_table(out / "candidates.parquet").equals(candidates)

        # the same folder for another query is refused before anything is asked
        with pytest.raises(PersonagenError, match="another query"):
            run_adapt(bank, "a farmer", "builtin:east-asia", out, cfg, n=3, k=6)
        assert len(srv.records()) == requests


def assert_energy_over_floor(reported: dict) -> None:
    """A set's energy distance to the reference is positive and its "x floor" is that distance
    over the reported own-size noise floor."""
    energy, floor = reported["metrics"]["energy"], reported["floor"]["mean"]["energy"]
    assert energy > 0 and floor > 0
    assert reported["x_floor"]["energy"] == pytest.approx(energy / floor)


def revise_body(persona: str) -> dict:
    """A request body as the reviser sees it, to compute the expected revision."""
    return {
        "messages": [
            {"role": "system", "content": ""},
            {"role": "user", "content": f"<data>\n{json.dumps({'persona': persona})}\n</data>"},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"schema": revise_prompt().schema},
        },
    }


@pytest.mark.slow
def test_no_revise_keeps_bank_scores_and_scores_the_rest(ray_local, tmp_path):
    bank, out = tmp_path / "bank", tmp_path / "out"
    scored = [pid for pid in NARRATIVES if pid != "p8/0"]
    write_bank(bank, scored=scored, kept={"p3/0": False})
    with LLMTestServer(Faults(), reviser) as srv:
        result = CliRunner().invoke(
            cli,
            [
                "adapt",
                str(bank),
                "--query",
                "an artist in a city",
                "--reference",
                "builtin:europe",
                "--n",
                "3",
                "-k",
                "8",
                "--no-revise",
                "--out",
                str(out),
                *[a for s in cfg_sets(srv) for a in ("--set", s)],
            ],
        )
        assert result.exit_code == 0, result.output
        assert "cosine similarity:" in result.output and "aligned candidates" in result.output
        bodies = [r for r in srv.records()]
    candidates = {r[KEY]: r for r in pq.read_table(out / "candidates.parquet").to_pylist()}
    assert "p3/0" not in candidates, "kept=true is the default filter"
    assert len(candidates) == 7
    assert candidates["p8/0"]["trait_source"] == "original"
    assert len(candidates["p8/0"]["item_responses"]) == 50
    bank_scores = {r[KEY]: r for r in read_group(bank, "scores").to_pylist()}
    for pid, row in candidates.items():
        assert row["revised_narrative"] is None
        if pid != "p8/0":
            assert row["trait_source"] == "bank"
            assert [row[t] for t in TRAITS] == [bank_scores[pid][t] for t in TRAITS]
    # one persona scored: the logprob probe + its 50 items, nothing revised
    assert len(bodies) == 1 + 50
    assert json.loads((out / "report.json").read_text())["info"]["revision_trait_shift"] == {"n": 0}


def cfg_sets(server) -> list[str]:
    return [
        *stub_llm_sets(server),
        "reference.builtin_rows=2000",
        "evaluate.floor_repeats=2",
        "align.atoms=256",
    ]


@pytest.mark.slow
def test_errors_come_before_any_request(ray_local, tmp_path):
    bank = tmp_path / "bank"
    write_bank(bank)
    with LLMTestServer(Faults(), reviser) as srv:
        cfg = stub_config(srv)
        with pytest.raises(PersonagenError, match="at most k=4"):
            run_adapt(bank, QUERY, "builtin:east-asia", tmp_path / "o1", cfg, n=5, k=4)
        with pytest.raises(PersonagenError, match="no candidates"):
            run_adapt(
                bank,
                QUERY,
                "builtin:east-asia",
                tmp_path / "o2",
                cfg,
                n=2,
                k=4,
                where=["attributes.location~mars"],
            )
        with pytest.raises(PersonagenError, match="needs a target group"):
            run_adapt(bank, QUERY, "builtin:global", tmp_path / "o3", cfg, n=2, k=4)
        with pytest.raises(PersonagenError, match="unknown group"):
            run_adapt(bank, QUERY, "builtin:global", tmp_path / "o4", cfg, n=2, group="atlantis")
        assert srv.records() == []


# ------------------------------------------------------------------------------ pieces


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(-1, 1), min_size=1, max_size=300), st.integers(1, 20))
def test_similarity_summary_counts_and_orders(scores, bins):
    summary = similarity_summary(np.array(scores), bins)
    assert summary["n"] == len(scores) == sum(summary["histogram"]["counts"])
    names = ("min", "p10", "p25", "median", "p75", "p90", "max")
    values = [summary[k] for k in names]
    assert values == sorted(values)
    assert summary["min"] == min(scores) and summary["max"] == max(scores)
    assert summary["mean"] == pytest.approx(np.mean(scores))
    assert len(summary["histogram"]["edges"]) == bins + 1


def test_revision_answer_must_keep_the_persona():
    prompt = revise_prompt()
    assert "revised_narrative" in prompt.schema["properties"]
    long = " ".join(["word"] * 30)
    answer = parse_answer(
        json.dumps({"revised_narrative": f"  {long}\n", "changes": ["a", "a", " b ", None]}),
        Revision,
        {"min_words": 30},
    )
    assert answer.revised_narrative == long and answer.changes == ["a", "b"]
    with pytest.raises(OutputError, match="at least 31 words"):
        parse_answer(json.dumps({"revised_narrative": long}), Revision, {"min_words": 31})
    assert parse_answer(
        json.dumps({"revised_narrative": long, "changes": ["...", "-", "x"]}), Revision
    ).changes == ["x"]
    assert unchanged(f" {long} ", long) and not unchanged(long, long + " more")
    assert min_words("one two three four five", 40) == 3  # half the original, rounded up
    assert min_words(" ".join(["w"] * 200), 40) == 40


def test_target_group_from_the_reference_group_or_countries():
    east = load_reference("builtin:east-asia", builtin_rows=200)
    text = target_group(east, None, None, None)
    assert text.startswith("people living in Eastern Asia") and "JP" in text and "KR" in text
    europe = load_reference("builtin:europe", builtin_rows=200)
    assert target_group(europe, None, None, None).endswith(", ...)")  # long lists are cut
    assert target_group(east, None, ["jp", "KR"], None) == "people living in JP, KR"
    assert target_group(east, None, None, "retirees in Kyoto") == "retirees in Kyoto"
    world = load_reference("builtin:global", builtin_rows=200)
    with pytest.raises(PersonagenError, match="needs a target group"):
        target_group(world, None, None, None)


def test_trait_shift_is_the_mean_change_over_revised_rows_with_bank_scores():
    rows = {
        "revised_narrative": ["a", "b", None, "c"],
        **{t: [3.0, 4.0, 5.0, 2.0] for t in TRAITS},
        **{"original_" + t: [2.0, 3.5, 1.0, None] for t in TRAITS},
    }
    shift = trait_shift(pa.table(rows))
    assert shift["n"] == 2
    assert shift["mean_change"] == {t: pytest.approx(0.75) for t in TRAITS}
    assert math.isclose(shift["mean_change"]["openness"], ((3 - 2) + (4 - 3.5)) / 2)


# ------------------------------------------------------------------------------ embedded defaults


@pytest.mark.slow
def test_adapt_on_the_embedded_defaults_from_the_command_line(ray_local, tmp_path):
    """The real llama.cpp server revises and scores, the packaged MiniLM embeds (through the
    embed stage) and retrieves, the builtin East Asia summary is the reference."""
    from personagen.llm import server as embedded

    bank, out = tmp_path / "bank", tmp_path / "out"
    write_mined(bank, NARRATIVES)
    sets = [
        "ray.num_cpus=2",
        "ray.object_store_mb=512",
        "llm.embedded.n_ctx=2048",
        "llm.timeout_s=240",
        "adapt.max_tokens=400",
        "adapt.filters=[]",
        "progress_s=15",
        "reference.builtin_rows=2000",
        "evaluate.floor_repeats=2",
    ]
    options = [a for s in sets for a in ("--set", s)]
    runner = CliRunner()
    for command in (["embed", str(bank)], ["index", str(bank)]):
        result = runner.invoke(cli, [*command, *options])
        assert result.exit_code == 0, result.output
    result = runner.invoke(
        cli,
        [
            "adapt",
            str(bank),
            "--query",
            "a young person living in a big city",
            "--reference",
            "builtin:east-asia",
            "-k",
            "3",
            "--n",
            "2",
            "--out",
            str(out),
            *options,
        ],
    )
    assert not embedded._LIVE, "the embedded server is still running"
    assert result.exit_code == 0, result.output
    assert "cosine similarity:" in result.output and "chosen (personas.parquet)" in result.output
    candidates = pq.read_table(out / "candidates.parquet").to_pylist()
    failures = pq.read_table(out / "failures.parquet").to_pylist()
    assert len(candidates) + len(failures) == 3 and len(candidates) >= 2, failures
    copies = 0
    for row in candidates:
        assert row["narrative"] == NARRATIVES[row[KEY]]
        words = len(row["revised_narrative"].split())
        assert words >= min_words(row["narrative"], 40), row["revised_narrative"]
        assert all(any(c.isalnum() for c in change) for change in row["revision_changes"])
        copies += row["revised_narrative"] == row["narrative"]
        assert row["revise_model"] == "smollm2-135m-instruct"
        assert row["answer_mode"] == "logprob" and len(row["item_responses"]) == 50
        assert all(1 <= row[t] <= 5 for t in TRAITS)
        assert row["original_openness"] is None  # the bank was never scored
    chosen = pq.read_table(out / "personas.parquet")
    assert chosen.num_rows == 2
    report = json.loads((out / "report.json").read_text())
    assert report["info"]["retrieval"]["candidates"] == 3
    # SmolLM2-135M often hands the persona back unedited: counted, not hidden
    assert report["info"]["adapt_counts"]["unchanged"] == copies
    assert_energy_over_floor(report["sets"]["after"])
    manifest = json.loads((out / "work" / "manifest.json").read_text())
    assert manifest["revise"]["endpoint"].startswith("embedded:SmolLM2")
