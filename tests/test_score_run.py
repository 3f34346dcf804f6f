"""Scoring and the consistency check on Ray Data: faults, failures, resume from the bank and the
cache, the CLI, and the real embedded model in logprob mode."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from llm_test_server import Faults, LLMTestServer, request_schema
from synthetic import write_mined

from personagen import TRAITS
from personagen.cli import cli
from personagen.commands.score import score
from personagen.config import load_config
from personagen.errors import PersonagenError
from personagen.io.bank import (
    KEY,
    QUALITY_TYPE,
    instruments,
    read_bank,
    read_failures,
    read_group,
    read_manifest,
    write_group,
)
from personagen.io.personas import read_personas
from personagen.psychometrics.instruments import IPIP_50
from personagen.stages.consistency import extremes
from personagen.stages.score import item_order, item_prompt, persona_seed

RECLUSE = (
    "This person is a recluse who has lived alone on a remote farm for twenty years. They avoid "
    "visitors, never go to town gatherings, and spend their evenings reading by the stove."
)


def request_data(body: dict) -> dict:
    """The DATA block of a request ({} for the mode probe, which has none)."""
    content = body["messages"][-1]["content"] if len(body["messages"]) < 2 else ""
    content = content or body["messages"][1]["content"]
    if "<data>" not in content:
        return {}
    return json.loads(content.split("<data>\n", 1)[1].split("\n</data>", 1)[0])


def write_bank(bank, narratives: dict[str, str], kept: dict[str, bool]) -> None:
    write_mined(bank, narratives)
    judged = list(kept)
    write_group(
        bank,
        "quality",
        pa.table(
            {
                KEY: judged,
                "quality": pa.nulls(len(judged), QUALITY_TYPE),
                "kept": [kept[i] for i in judged],
                "reject_reason": [None if kept[i] else "overall 2 < 3" for i in judged],
                "duplicate_of": pa.nulls(len(judged), pa.string()),
                "judge_model": ["judge"] * len(judged),
                "judge_prompt_version": ["judge-x"] * len(judged),
            }
        ),
    )


# ------------------------------------------------------------------------------ the stub


def extravert_logprobs(body):
    """The recluse answers as a strong extravert (the contradiction the check should find);
    everyone answers 3 or 4 otherwise (expected value 3.3 on every item)."""
    data = request_data(body)
    item = next((i for i in IPIP_50.items if i.text == data.get("statement")), None)
    if item is not None and "recluse" in data["persona"] and item.trait == "extraversion":
        return [("5" if item.keyed > 0 else "1", 0.0)]
    return [("3", math.log(0.7)), ("4", math.log(0.3))]


def verdicts(body, rng):
    """Consistency requests: extraversion claims about the recluse are contradicted."""
    schema = request_schema(body)
    if schema is None:
        return "3"
    data = request_data(body)
    return json.dumps(
        {
            "verdicts": [
                {
                    "trait": claim["trait"],
                    "verdict": "contradicted"
                    if "recluse" in data["persona"] and claim["trait"] == "extraversion"
                    else "consistent",
                    "rationale": "test",
                }
                for claim in data["claims"]
            ]
        }
    )


def fail_marked(body):
    data = request_data(body)
    return "400" if "FAILME" in str(data.get("persona")) else None


def cli_args(server, bank) -> list[str]:
    sets = [
        f"llm.base_url={server.base_url}",
        "llm.timeout_s=2",
        "llm.backoff_s=0.01",
        "llm.max_retries=4",
        "llm.concurrency=16",
        "progress_s=2",
        "ray.num_cpus=2",
        "ray.object_store_mb=512",
        "seed=7",
    ]
    return ["score", str(bank), "--check-consistency", *[a for s in sets for a in ("--set", s)]]


@pytest.mark.slow
def test_score_through_faults_resumes_and_flags_contradictions(ray_local, tmp_path):
    bank = tmp_path / "bank"
    narratives = {f"u{i}/0": f"This person {i} works in an office and likes tea." for i in range(8)}
    narratives["u0/0"] = RECLUSE
    narratives["u1/0"] = "FAILME: this person's every answer is refused by the endpoint."
    kept = {pid: True for pid in narratives}
    kept["u2/0"] = False  # rejected by the judge: never scored
    del kept["u3/0"]  # no verdict: scored (score.only_kept is false)
    write_bank(bank, narratives, kept)
    faults = Faults(rates={"429": 0.05, "500": 0.05}, seed=3)
    runner = CliRunner()
    with LLMTestServer(
        faults, responder=verdicts, decide=fail_marked, logprobs=extravert_logprobs
    ) as server:
        result = runner.invoke(cli, cli_args(server, bank))
        assert result.exit_code == 0, result.output
        assert (
            "scores written" in result.output and "contradicted by their narrative" in result.output
        )
        first = json.loads((bank / "summary-score.json").read_text())["counts"]
        scores = {r[KEY]: r for r in read_group(bank, "scores").to_pylist()}

        # every persona accounted for
        assert first["bank:personas"] == 8 and first["score:rejected"] == 1
        assert first["score:unjudged"] == 1 and first["score:todo"] == 7 == first["score:in"]
        assert (first["score:out"], first["score:failed"]) == (6, 1)
        assert first["score:retries"] > 0 and first["score:requests"] > 6 * 50
        assert set(scores) == {f"u{i}/0" for i in (0, 3, 4, 5, 6, 7)}
        failed = read_failures(bank, "score").to_pylist()
        assert [f["input_id"] for f in failed] == ["u1/0"]
        assert failed[0]["reason"].startswith("too few items answered")
        assert failed[0]["attempts"] < 50 + 10, "the failing persona should stop early"

        # the stored rows: order from the recorded seed, expected values, traits, flags
        version = item_prompt().version
        for pid, row in scores.items():
            assert row["score_seed"] == persona_seed(7, pid)
            assert row["item_ids"] == [i.id for i in item_order(IPIP_50, row["score_seed"])]
            assert row["answer_mode"] == "logprob" and row["score_prompt_version"] == version
            assert row["instrument"] == "ipip-50" and row["item_errors"] == []
        for pid in ("u3/0", "u4/0"):
            assert scores[pid]["item_responses"] == pytest.approx([3.3] * 50)
            assert scores[pid]["score_flags"] == ["low_variance"]
        recluse = scores["u0/0"]
        openness = [3.3 if i.keyed > 0 else 6 - 3.3 for i in IPIP_50.items if i.trait == "openness"]
        assert recluse["extraversion"] == 5.0
        assert recluse["openness"] == pytest.approx(np.mean(openness))  # 7 forward, 3 reverse
        assert recluse["score_flags"] == ["inconsistent:extraversion"]
        checks = read_group(bank, "consistency").to_pylist()
        assert [c[KEY] for c in checks] == ["u0/0"]
        assert checks[0]["consistency"][0]["verdict"] == "contradicted"
        assert checks[0]["consistency"][0]["level"] == "very high"
        assert first["bank:inconsistent"] == 1 and first["consistency:out"] == 1

        manifest = read_manifest(bank)
        assert manifest["score"]["instrument"] == "ipip-50"
        assert manifest["score"]["answer_mode"] == "logprob"
        assert manifest["score"]["prompt_version"] == version
        assert manifest["llm_usage"]["score"]["prompt_tokens"] == first["score:prompt_tokens"] > 0
        assert manifest["llm_usage"]["consistency"]["requests"] == first["consistency:requests"]

        # a re-run asks nothing
        requests = len(server.records())
        result = runner.invoke(cli, cli_args(server, bank))
        assert result.exit_code == 0, result.output
        assert len(server.records()) == requests, "a finished bank was asked again"
        again = json.loads((bank / "summary-score.json").read_text())["counts"]
        assert again["score:skipped_done"] == 7 and again.get("score:in", 0) == 0
        assert again["consistency:skipped_done"] == 1

        # a run that died before writing anything: answers come back from the cache
        for folder in ("scores", "consistency", "failures"):
            shutil.rmtree(bank / folder)
        requests = len(server.records())
        result = runner.invoke(cli, cli_args(server, bank))
        assert result.exit_code == 0, result.output
        third = json.loads((bank / "summary-score.json").read_text())["counts"]
        assert third["score:cache_hits"] >= 6 * 50 and third["consistency:cache_hits"] == 1
        new = len(server.records()) - requests
        assert new <= 3 + 50, "only the probe and the refused persona should be asked"
    rescored = {r[KEY]: r for r in read_group(bank, "scores").to_pylist()}
    assert rescored["u0/0"]["item_responses"] == recluse["item_responses"]
    assert rescored["u0/0"]["score_flags"] == ["inconsistent:extraversion"]


# ------------------------------------------------------------------------------ extremes


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(2, 60), st.just(5)), elements=st.floats(1, 5)),
    st.sampled_from([0.05, 0.1, 0.25]),
)
def test_extremes_are_the_tails_beyond_the_median(scores, q):
    high, low = extremes(scores, q)
    assert not (high & low).any()
    for j in range(scores.shape[1]):
        column = scores[:, j]
        median = np.median(column)
        assert (column[high[:, j]] > median).all() and (column[low[:, j]] < median).all()
        assert (column[high[:, j]] >= np.quantile(column, 1 - q)).all()
        if np.unique(column).size == column.size:  # no ties: about the fraction asked for
            assert high[:, j].sum() <= math.ceil(q * column.size) + 1
        if np.ptp(column) == 0:
            assert not high[:, j].any() and not low[:, j].any()


def test_extremes_by_hand():
    column = np.arange(1, 21, dtype=float)  # 1..20
    scores = np.column_stack([column, np.full(20, 3.0), column[::-1], column, column])
    scores[0, 3] = np.nan
    high, low = extremes(scores, 0.1)
    assert np.flatnonzero(high[:, 0]).tolist() == [18, 19]  # 19, 20: at or above q90 = 18.1
    assert np.flatnonzero(low[:, 0]).tolist() == [0, 1]
    assert not high[:, 1].any() and not low[:, 1].any()  # no spread, no extremes
    assert np.flatnonzero(high[:, 2]).tolist() == [0, 1]
    assert not low[0, 3] and np.flatnonzero(low[:, 3]).tolist() == [1, 2]  # NaN is no score


# ------------------------------------------------------------------------------ the real model

REAL = {
    "r1/0": (
        "This person is a retired librarian in a small coastal town who lives alone with two "
        "cats. She avoids crowds and parties, prefers long walks and quiet evenings with a book, "
        "and worries a great deal about her health and about money. She keeps a strict daily "
        "schedule and writes careful lists for everything."
    ),
    "r2/0": (
        "This person is a sales manager in his thirties who organises a party almost every "
        "weekend, talks to everyone he meets and loves being the centre of attention. He is "
        "relaxed and rarely stressed, often late and a little disorganised, and always curious "
        "about new places, food and ideas."
    ),
}


@pytest.mark.slow
def test_real_embedded_model_scores_in_logprob_mode(ray_local, tmp_path):
    from personagen.llm import server as embedded

    bank = tmp_path / "bank"
    write_bank(bank, dict(REAL), {})
    cfg = load_config(
        None,
        [
            "llm.embedded.n_ctx=1024",
            "llm.timeout_s=240",
            "ray.num_cpus=2",
            "ray.object_store_mb=512",
            "progress_s=15",
        ],
    )
    summary = score(cfg, bank)
    assert not embedded._LIVE, "the embedded server is still running"
    assert summary.counts["score:out"] == 2, read_failures(bank).to_pylist()
    rows = read_bank(bank).to_pylist()
    values = []
    for row in rows:
        assert row["answer_mode"] == "logprob"
        assert len(row["item_responses"]) == 50 and None not in row["item_responses"]
        assert all(1 <= v <= 5 for v in row["item_responses"])
        assert all(0 <= h <= math.log(5) + 1e-6 for h in row["item_entropy"])
        assert all(1 <= row[t] <= 5 for t in TRAITS)
        values += row["item_responses"]
    assert len(set(values)) > 10, "expected values should differ between items and personas"
    manifest = read_manifest(bank)
    assert manifest["score"]["endpoint"].startswith("embedded:SmolLM2")
    assert manifest["score"]["answer_mode"] == "logprob"
    assert manifest["llm_usage"]["score"]["completion_tokens"] >= 100


@pytest.mark.slow
def test_a_second_instrument_adds_its_scores(ray_local, tmp_path):
    """Scoring with a second instrument keeps the first one's scores; readers must then say
    which instrument's traits they mean; `--replace` drops only that instrument's scores."""
    bank = tmp_path / "bank"
    narratives = {f"u{i}/0": f"This person {i} keeps bees and sings in a choir." for i in range(3)}
    write_bank(bank, narratives, {pid: True for pid in narratives})
    runner = CliRunner()
    with LLMTestServer(Faults(seed=5), logprobs=extravert_logprobs) as server:
        args = [a for a in cli_args(server, bank) if a != "--check-consistency"]
        for instrument in ("ipip-50", "ipip-neo-120"):
            result = runner.invoke(cli, [*args, "--instrument", instrument])
            assert result.exit_code == 0, result.output
        scores = read_group(bank, "scores")
        assert sorted(
            zip(
                scores.column(KEY).to_pylist(), scores.column("instrument").to_pylist(), strict=True
            )
        ) == [
            (pid, instrument)
            for pid in sorted(narratives)
            for instrument in ("ipip-50", "ipip-neo-120")
        ]
        items = {r["instrument"]: len(r["item_ids"]) for r in scores.to_pylist()}
        assert items == {"ipip-50": 50, "ipip-neo-120": 120}
        assert instruments(bank) == ["ipip-50", "ipip-neo-120"]
        with pytest.raises(PersonagenError, match=r"2 instruments .*--instrument"):
            read_bank(bank)
        assert read_bank(bank, instrument="ipip-neo-120").num_rows == 3
        chosen = read_personas(bank, instrument="ipip-50")
        assert chosen.instrument == "ipip-50" and len(chosen.ids()) == 3
        result = runner.invoke(
            cli, ["evaluate", "--personas", str(bank), "--reference", "builtin:east-asia"]
        )
        assert result.exit_code == 2 and "choose one with --instrument" in result.output

        result = runner.invoke(cli, [*args, "--instrument", "ipip-50", "--replace"])
        assert result.exit_code == 0, result.output
        counts = json.loads((bank / "summary-score.json").read_text())["counts"]
        assert counts["score:in"] == 3 == counts["score:out"], (
            "the replaced instrument was not scored again"
        )
        assert counts["score:cache_hits"] >= 3 * 50
    after = read_group(bank, "scores")
    assert sorted(after.column("instrument").to_pylist()) == ["ipip-50"] * 3 + ["ipip-neo-120"] * 3
