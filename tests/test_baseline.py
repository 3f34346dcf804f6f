"""`personagen baseline`: LLM-written personas, the bare model, a random draw; each a bank."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from llm_test_server import Faults, LLMTestServer, request_schema, schema_responder
from synthetic import stub_llm_sets, write_mined

from personagen import TRAITS
from personagen.cli import cli
from personagen.commands.baseline import baseline, persona_ids
from personagen.config import Config
from personagen.errors import PersonagenError
from personagen.io.bank import (
    GROUPS,
    KEY,
    read_failures,
    read_group,
    read_manifest,
    write_group,
)
from personagen.io.personas import read_personas
from personagen.psychometrics.instruments import IPIP_50
from personagen.stages.describe import request_seed


class Capture:
    """The default stub answers, keeping every request body."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.respond = schema_responder(60)

    def __call__(self, body, rng):
        if "<data>" in body["messages"][-1]["content"]:  # not the logprob probe
            self.bodies.append(body)
        return self.respond(body, rng)


def data_of(body: dict) -> dict:
    content = body["messages"][-1]["content"]
    return json.loads(content.split("<data>\n", 1)[1].split("\n</data>", 1)[0])


def invoke(server, *args: str):
    sets = [*stub_llm_sets(server), "progress_s=2", "seed=11"]
    result = CliRunner().invoke(cli, ["baseline", *args, *[a for s in sets for a in ("--set", s)]])
    return result


@pytest.mark.slow
def test_llm_personas_are_written_from_nothing_each_with_its_own_seed(ray_local, tmp_path):
    bank = tmp_path / "llm"
    capture = Capture()
    with LLMTestServer(Faults(seed=1), capture) as server:
        result = invoke(server, "--kind", "llm-personas", "--n", "5", "--out", str(bank))
        assert result.exit_code == 0, result.output
        personas = read_group(bank, "personas")
        assert sorted(personas.column(KEY).to_pylist()) == persona_ids("llm-personas", 5)
        assert all(len(t.split()) == 60 for t in personas.column("narrative").to_pylist())
        assert [b["temperature"] for b in capture.bodies] == [1.0] * 5
        seeds = sorted(b["seed"] for b in capture.bodies)
        assert seeds == sorted(request_seed(11, i) for i in persona_ids("llm-personas", 5))
        assert all(data_of(b) == {"words": "150 to 300 words"} for b in capture.bodies)
        assert all(request_schema(b)["required"] for b in capture.bodies)
        manifest = read_manifest(bank)
        assert manifest["origin"] == "baseline:llm-personas"
        assert manifest["baseline"]["temperature"] == 1.0 and manifest["baseline"]["seed"] == 11

        # a larger N writes only the new ones; other settings are refused
        result = invoke(server, "--kind", "llm-personas", "--n", "7", "--out", str(bank))
        assert result.exit_code == 0, result.output
        assert len(capture.bodies) == 7
        assert read_group(bank, "personas").num_rows == 7
        result = invoke(
            server, "--kind", "llm-personas", "--n", "7", "--temperature", "0.5", "--out", str(bank)
        )
        assert result.exit_code == 2
        assert "temperature 1.0, not 0.5" in result.output and "--replace" in result.output
        result = invoke(server, "--kind", "no-persona", "--n", "7", "--out", str(bank))
        assert result.exit_code == 2
        assert "holds baseline:llm-personas personas, not baseline:no-persona" in result.output


@pytest.mark.slow
def test_no_persona_respondents_are_the_bare_model_sampled(ray_local, tmp_path):
    """Text mode: the server samples each answer at the temperature, with a seed per
    respondent and item."""
    bank = tmp_path / "bare"
    capture = Capture()
    with LLMTestServer(Faults(seed=2), capture) as server:
        text = ("--set", "score.mode=text")
        result = invoke(server, "--kind", "no-persona", "--n", "4", "--out", str(bank), *text)
        assert result.exit_code == 0, result.output
        assert len(capture.bodies) == 4 * 50, "text mode: one request per respondent and item"
        assert all(b["temperature"] == 1.0 and "logprobs" not in b for b in capture.bodies)
        assert all(set(data_of(b)) == {"scale", "statement"} for b in capture.bodies)
        by_item: dict[str, set[int]] = {}
        for body in capture.bodies:
            by_item.setdefault(data_of(body)["statement"], set()).add(body["seed"])
        assert len(by_item) == 50 and all(len(s) == 4 for s in by_item.values())

        scores = read_group(bank, "scores")
        assert sorted(scores.column(KEY).to_pylist()) == persona_ids("no-persona", 4)
        assert set(scores.column("answer_mode").to_pylist()) == {"text"}
        responses = np.array(scores.column("item_responses").to_pylist(), dtype=float)
        assert set(np.unique(responses)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
        assert len({tuple(r) for r in responses}) == 4, "respondents must differ"
        assert read_manifest(bank)["score"]["bare_temperature"] == 1.0

        # a second instrument asks the bare model again, in the same way
        sets = [*stub_llm_sets(server), "progress_s=2", "seed=11"]
        args = ["score", str(bank), "--instrument", "ipip-neo-120", *text]
        result = CliRunner().invoke(cli, [*args, *[a for s in sets for a in ("--set", s)]])
        assert result.exit_code == 0, result.output
        assert len(capture.bodies) == 4 * (50 + 120)
        assert all(set(data_of(b)) == {"scale", "statement"} for b in capture.bodies)
        chosen = read_personas(bank, instrument="ipip-neo-120")
        assert len(chosen.ids()) == 4


@pytest.mark.slow
def test_no_persona_answers_are_drawn_from_the_answer_distribution(ray_local, tmp_path):
    """With logprobs, one request per item serves every respondent (the cache), and each
    respondent's answer is drawn from it with its own seed: reproducibly."""
    bank = tmp_path / "bare"

    def even(body):
        return [("3", math.log(0.5)), ("4", math.log(0.5))]

    with LLMTestServer(Faults(seed=2), logprobs=even) as server:
        result = invoke(server, "--kind", "no-persona", "--n", "6", "--out", str(bank))
        assert result.exit_code == 0, result.output
        counts = json.loads((bank / "summary-score.json").read_text())["counts"]
        asked = counts["score:requests"] - 1  # the logprob probe aside
        assert 50 <= asked < 6 * 50 and asked + counts["score:cache_hits"] == 6 * 50
        scores = read_group(bank, "scores")
        assert set(scores.column("answer_mode").to_pylist()) == {"sample"}
        responses = np.array(scores.column("item_responses").to_pylist(), dtype=float)
        assert set(np.unique(responses)) == {3.0, 4.0}
        assert len({tuple(r) for r in responses}) == 6
        result = invoke(server, "--kind", "no-persona", "--n", "6", "--out", str(bank), "--replace")
        assert result.exit_code == 0, result.output
    again = read_group(bank, "scores")
    first = dict(zip(scores.column(KEY).to_pylist(), responses.tolist(), strict=True))
    for pid, row in zip(
        again.column(KEY).to_pylist(), again.column("item_responses").to_pylist(), strict=True
    ):
        assert row == first[pid], "a respondent's answers must not depend on the run"


def full(group: str, columns: dict) -> pa.Table:
    """A `group` table with these columns, every other column of the group null."""
    n = len(next(iter(columns.values())))
    fields = GROUPS[group]
    return pa.table(
        {f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in fields}, schema=fields
    )


def source_bank(path, n: int = 30) -> list[str]:
    """A bank of `n` personas scored on two instruments; every third judged and rejected, the
    last unjudged."""
    ids = [f"u{i:03d}/0" for i in range(n)]
    write_mined(path, {i: f"Persona {i} likes tea." for i in ids})
    judged = ids[:-1]
    kept = [k % 3 != 0 for k in range(len(judged))]
    write_group(path, "quality", full("quality", {KEY: judged, "kept": kept}))
    rng = np.random.default_rng(0)
    for instrument in ("ipip-50", "ipip-neo-120"):
        traits = rng.uniform(1, 5, (n, 5)).T.tolist()
        columns = {
            KEY: ids,
            "instrument": [instrument] * n,
            **dict(zip(TRAITS, traits, strict=True)),
        }
        write_group(path, "scores", full("scores", columns))
    return ids


def test_a_random_set_is_drawn_from_the_personas_the_judge_did_not_reject(tmp_path):
    ids = source_bank(tmp_path / "src")
    rejected = {ids[k] for k in range(0, 29, 3)}
    out = tmp_path / "random"
    cfg = Config(seed=3)
    summary = baseline(cfg, "random", 12, out, source=tmp_path / "src")
    drawn = read_group(out, "personas").column(KEY).to_pylist()
    assert len(drawn) == 12 == len(set(drawn)) and not set(drawn) & rejected
    assert summary.counts["source:eligible"] == 30 - len(rejected)
    eligible = sorted(set(ids) - rejected)
    expected = np.random.default_rng(3).choice(np.array(eligible), 12, replace=False).tolist()
    assert sorted(drawn) == sorted(expected)
    scores = read_group(out, "scores")
    assert scores.num_rows == 24 and set(scores.column(KEY).to_pylist()) == set(drawn)
    assert read_group(out, "quality").num_rows == len(set(drawn) - {ids[-1]})
    assert read_manifest(out)["origin"] == "baseline:random"
    assert read_personas(out, instrument="ipip-50").trait_matrix().shape == (12, 5)

    again = baseline(cfg, "random", 12, out, source=tmp_path / "src")
    assert sorted(read_group(out, "personas").column(KEY).to_pylist()) == sorted(drawn)
    assert again.counts["bank:scores"] == 24
    with pytest.raises(PersonagenError, match=r"more than the 20 personas .* at most 20"):
        baseline(cfg, "random", 21, tmp_path / "other", source=tmp_path / "src")
    with pytest.raises(PersonagenError, match=r"seed 3, not 4.*--replace"):
        baseline(Config(seed=4), "random", 12, out, source=tmp_path / "src")


def test_bad_requests_are_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(PersonagenError, match="--from BANK names the bank a random set"):
        baseline(Config(), "random", 3, out)
    with pytest.raises(PersonagenError, match="--from BANK names"):
        baseline(Config(), "llm-personas", 3, out, source=tmp_path)
    with pytest.raises(PersonagenError, match="--n must be at least 1, not 0"):
        baseline(Config(), "no-persona", 0, out)
    with pytest.raises(PersonagenError, match="unknown baseline kind 'gpt'"):
        baseline(Config(), "gpt", 3, out)
    assert not out.exists()
    result = CliRunner().invoke(
        cli, ["baseline", "--kind", "random", "--n", "2", "--out", str(out)]
    )
    assert result.exit_code == 2 and result.output.startswith("error: --from BANK")
    assert not out.exists()


@pytest.mark.slow
def test_real_embedded_model_writes_and_answers_as_itself(ray_local, tmp_path):
    """The embedded llama.cpp server (SmolLM2): two written personas, two bare respondents."""
    llm = tmp_path / "llm"
    cfg = Config(seed=5).updated({"ray.num_cpus": 2, "ray.object_store_mb": 512})
    summary = baseline(cfg, "llm-personas", 2, llm)
    assert summary.counts["describe:out"] + summary.counts["describe:failed"] == 2
    written = read_group(llm, "personas").column("narrative").to_pylist()
    failed = read_failures(llm, "describe").column("reason").to_pylist()
    assert len(written) + len(failed) == 2
    assert all(len(t.split()) >= cfg.mine.min_words for t in written)
    assert len(set(written)) == len(written), "seeded samples must differ"

    bare = tmp_path / "bare"
    summary = baseline(cfg, "no-persona", 2, bare)
    scores = read_group(bare, "scores")
    assert summary.counts["score:out"] == scores.num_rows == 2
    responses = np.array(scores.column("item_responses").to_pylist(), dtype=float)
    assert responses.shape == (2, len(IPIP_50.items))
    assert not np.array_equal(responses[0], responses[1]), "samples at temperature 1 differ"
