"""Scoring one persona against the fault-injecting server (no Ray): logprob values by hand, text
and batch answers, failed items and the minimum per trait, mode detection, item order."""

from __future__ import annotations

import asyncio
import json
import math
import threading

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_test_server import Faults, LLMTestServer, request_schema
from scipy.stats import entropy

from personagen.cli import cli
from personagen.config import load_config
from personagen.errors import PersonagenError
from personagen.io.bank import GROUPS, write_group
from personagen.llm.client import Endpoint, LLMClient
from personagen.llm.structured import OutputError
from personagen.llm.usage import USAGE_FIELDS, Usage
from personagen.psychometrics.instruments import IPIP_50, instrument_from_dict
from personagen.runtime.sinks import split_stage_rows
from personagen.stages.base import ask
from personagen.stages.score import (
    TooFewItems,
    item_order,
    item_prompt,
    persona_seed,
    resolve_mode,
    resolve_stage,
    score_stage,
)

NARRATIVE = "This person is a night-shift nurse who reads crime novels and avoids parties."
TEXT = {item.text: item for item in IPIP_50.items}


def request_data(body: dict) -> dict:
    """The DATA block of a score request (JSON, as the prompt carries it)."""
    content = body["messages"][1]["content"]
    return json.loads(content.split("<data>\n", 1)[1].split("\n</data>", 1)[0])


def item_of(body: dict):
    return TEXT[request_data(body)["statement"]]


def options(server: LLMTestServer, *extra: str) -> list[str]:
    return [
        f"llm.base_url={server.base_url}",
        "llm.backoff_s=0.01",
        "llm.max_retries=2",
        "llm.timeout_s=5",
        *extra,
    ]


def score_one(server, mode, *extra, row=None, instrument=IPIP_50):
    """Run the score stage's row function on one persona; (columns, usage)."""
    cfg = load_config(overrides=options(server, *extra))
    stage = score_stage(cfg, instrument, mode)
    llm = cfg.stage_llm("score")

    async def main():
        client = LLMClient(llm, Endpoint.remote(server.base_url))
        usage = Usage()
        try:
            out = await ask(
                stage, client, row or {"persona_id": "p/0", "narrative": NARRATIVE}, usage
            )
        finally:
            await client.aclose()
        return out, usage

    return asyncio.run(main())


def by_id(out: dict, column: str) -> dict:
    return dict(zip(out["item_ids"], out[column], strict=True))


# ------------------------------------------------------------------------------ logprob mode

E1, E2 = IPIP_50.items[0], IPIP_50.items[1]  # "life of the party" (+), "don't talk a lot" (-)
TOP = {
    E1.text: [("4", math.log(0.5)), (" 5", math.log(0.3)), ("2", math.log(0.1)), ("Sure", -2.3)],
    E2.text: [("1", math.log(0.8)), ("2.", math.log(0.2))],
}


def test_logprob_mode_expected_values_by_hand():
    bodies = []
    lock = threading.Lock()

    def logprobs(body):
        with lock:
            bodies.append(body)
        return TOP.get(request_data(body)["statement"], [("3", 0.0), ("Hi", -5.0)])

    with LLMTestServer(logprobs=logprobs) as server:
        out, usage = score_one(server, "logprob")
    assert out["answer_mode"] == "logprob" and out["instrument"] == "ipip-50"
    responses, entropies = by_id(out, "item_responses"), by_id(out, "item_entropy")
    # E1: 4 with 0.5, 5 with 0.3, 2 with 0.1 ("Sure" is not an answer): renormalised over 0.9
    assert responses["E1"] == pytest.approx((4 * 0.5 + 5 * 0.3 + 2 * 0.1) / 0.9)
    assert entropies["E1"] == pytest.approx(entropy([5 / 9, 3 / 9, 1 / 9]), rel=1e-6)
    assert responses["E2"] == pytest.approx(1.2) and entropies["E2"] == pytest.approx(
        entropy([0.8, 0.2]), rel=1e-6
    )
    assert responses["N1"] == 3.0 and entropies["N1"] == 0.0
    # E2 is reverse keyed: 6 - 1.2 = 4.8; the other eight E items answer 3
    assert out["extraversion"] == pytest.approx((3.7 / 0.9 + 4.8 + 8 * 3) / 10)
    assert out["neuroticism"] == out["openness"] == 3.0
    assert out["item_errors"] == [] and out["score_flags"] == ["low_variance"]  # 48 threes
    assert usage.requests == 50 and usage.repairs == 0
    # one-token answers with the alternatives, greedy; persona first, statement last
    assert {(b["max_tokens"], b["top_logprobs"], b["temperature"]) for b in bodies} == {(1, 20, 0)}
    assert len({json.dumps(b["messages"][0]) for b in bodies}) == 1
    users = [b["messages"][1]["content"] for b in bodies]
    prefix = users[0][: users[0].index('"statement"')]
    assert NARRATIVE in prefix and all(u.startswith(prefix) for u in users)


def test_an_answer_without_logprobs_is_read_as_text_and_no_scale_token_is_asked_again():
    def logprobs(body):
        item = item_of(body)
        if item.id == "O1":
            return None  # this one answer comes without logprobs: its text "4" is the answer
        if item.id == "O2" and len(body["messages"]) == 2:
            return [("I", -0.1), ("The", -2.0)]  # no digit among the top tokens: ask again
        return [("2", 0.0)]

    def responder(body, rng):
        return "4" if item_of(body).id == "O1" else "I"

    with LLMTestServer(responder=responder, logprobs=logprobs) as server:
        out, usage = score_one(server, "logprob")
    responses = by_id(out, "item_responses")
    assert responses["O1"] == 4.0 and by_id(out, "item_entropy")["O1"] is None
    assert responses["O2"] == 2.0 and usage.repairs == 1 and usage.requests == 51
    assert out["answer_mode"] == "logprob+text"


# ------------------------------------------------------------------------------ calibrated mode

CONTENT_FREE_ANSWER = [("3", math.log(0.6)), ("4", math.log(0.2)), ("2", math.log(0.2))]
PERSONA_ANSWER = [("3", math.log(0.5)), ("4", math.log(0.3)), ("2", math.log(0.2))]


def prior_or_persona(body):
    """Without a persona (N/A, "" or [MASK]) every item gets 3 with 0.6, 2 and 4 with 0.2; the
    persona 3 with 0.5, 4 with 0.3, 2 with 0.2: after calibration it leans towards 4."""
    data = request_data(body) if len(body["messages"]) > 1 else {}
    if data.get("persona") in ("N/A", "", "[MASK]"):
        return CONTENT_FREE_ANSWER
    return PERSONA_ANSWER


def test_calibrated_mode_divides_out_each_items_content_free_prior(tmp_path):
    asked = []
    lock = threading.Lock()

    def logprobs(body):
        data = request_data(body) if len(body["messages"]) > 1 else {}
        with lock:
            asked.append((data.get("persona"), data.get("statement")))
        return prior_or_persona(body)

    with LLMTestServer(logprobs=logprobs) as server:
        cfg = load_config(overrides=options(server, "score.mode=calibrated", "llm.timeout_s=60"))
        endpoint = Endpoint.remote(server.base_url)
        stage, usage = resolve_stage(
            cfg, IPIP_50, cfg.stage_llm("score"), endpoint, str(tmp_path / "cache")
        )
        # the probe, then each item under each of the three content-free personas
        assert usage.requests - usage.retries == 1 + 3 * 50  # (a loaded machine may time out)
        assert len(asked) == len(server.records()) == usage.requests
        content_free = {(p, item.text) for p in ("N/A", "", "[MASK]") for item in IPIP_50.items}
        assert set(asked) == {(None, None)} | content_free  # the probe, every item thrice
        again, usage = resolve_stage(
            cfg, IPIP_50, cfg.stage_llm("score"), endpoint, str(tmp_path / "cache")
        )
        assert usage.requests == 0 and usage.cache_hits == 151, "measured once, then cached"
        llm = cfg.stage_llm("score")

        async def main():
            client = LLMClient(llm, endpoint)
            try:
                return await ask(
                    stage, client, {"persona_id": "p/0", "narrative": NARRATIVE}, Usage()
                )
            finally:
                await client.aclose()

        out = asyncio.run(main())
    smoothing = 0.01
    prior = (1 - smoothing) * np.array([0, 0.2, 0.6, 0.2, 0]) + smoothing / 5
    weights = np.array([0, 0.2, 0.5, 0.3, 0]) / prior
    probs = weights / weights.sum()
    expected = float(np.dot(np.arange(1, 6), probs))
    assert expected > 3.1  # the uncalibrated expected value: 2 * 0.2 + 3 * 0.5 + 4 * 0.3
    assert out["answer_mode"] == "calibrated"
    assert out["item_responses"] == pytest.approx([expected] * 50)
    assert out["item_entropy"] == pytest.approx([entropy(probs)] * 50, rel=1e-6)
    record = stage.provenance["calibration"]
    assert stage.provenance["answer_mode"] == "calibrated"
    assert record["content_free"] == ["N/A", "", "[MASK]"] and record["smoothing"] == smoothing
    assert record["prompt_version"] == item_prompt().version
    assert record["priors"]["E1"] == pytest.approx(list(prior))
    assert again.provenance["calibration"] == record


def test_calibrated_mode_needs_logprobs_and_a_persona():
    with (
        LLMTestServer(logprobs=lambda body: None) as server,
        pytest.raises(PersonagenError, match=r"score\.mode=calibrated, but the endpoint"),
    ):
        resolve(server, "score.mode=calibrated")
    cfg = load_config()
    with pytest.raises(PersonagenError, match="no-persona baseline answers per item"):
        score_stage(cfg, IPIP_50, "calibrated", bare_temperature=1.0)
    with pytest.raises(ValueError, match="content-free priors"):
        score_stage(cfg, IPIP_50, "calibrated")
    with pytest.raises(PersonagenError, match="personagen score BANK --mode embedding"):
        resolve_mode(load_config(overrides=["score.mode=embedding"]).score, IPIP_50, None, None)


# ------------------------------------------------------------------------------ text mode


def test_text_mode_parses_strictly_and_asks_again():
    def responder(body, rng):
        item, repaired = item_of(body), len(body["messages"]) > 2
        if item.id == "A1":
            return "maybe"  # never a scale point
        if item.id == "A2" and not repaired:
            return "I would say 4"
        return {"+": "5.", "-": " 1\n"}["+" if item.keyed > 0 else "-"]

    with LLMTestServer(responder=responder) as server:
        out, usage = score_one(server, "text", "score.item_retries=2")
        bodies = server.records()
    responses = by_id(out, "item_responses")
    assert responses["A2"] == 5.0 and responses["A1"] is None
    assert out["item_errors"] == [
        "A1: invalid answer after 3 attempts: 'maybe' is not one digit from 1 to 5"
    ]
    assert out["answer_mode"] == "text" and set(by_id(out, "item_entropy").values()) == {None}
    assert usage.repairs == 3 and usage.requests == len(bodies) == 53
    # a consistent answerer: every trait at the top after reverse keying
    assert [out[t] for t in IPIP_50.traits] == [5.0] * 5
    assert "failed_items:1" in out["score_flags"]


# ------------------------------------------------------------------------------ batch mode


def test_batch_mode_one_json_answer_in_the_order_asked():
    seen = []

    def responder(body, rng):
        schema = request_schema(body)
        seen.append(schema)
        return json.dumps({i: 1 + IPIP_50.item_ids().index(i) % 5 for i in schema["properties"]})

    with LLMTestServer(responder=responder) as server:
        out, usage = score_one(server, "batch")
    assert usage.requests == 1 and out["answer_mode"] == "batch"
    assert [list(schema["properties"]) for schema in seen] == [out["item_ids"]]
    assert {json.dumps(p) for p in seen[0]["properties"].values()} == {
        json.dumps({"type": "integer", "enum": [1, 2, 3, 4, 5]})
    }
    assert out["item_ids"] == [i.id for i in item_order(IPIP_50, out["score_seed"])]
    for item_id, value in by_id(out, "item_responses").items():
        assert value == 1 + IPIP_50.item_ids().index(item_id) % 5


def test_batch_answers_off_the_scale_or_incomplete_get_one_repair():
    def responder(body, rng):
        ids = list(request_schema(body)["properties"])
        if len(body["messages"]) == 2:  # first answer: one rating off the scale, one item missing
            return json.dumps({i: 9 if k == 0 else 3 for k, i in enumerate(ids[:-1])})
        return json.dumps(dict.fromkeys(ids, 2))

    with LLMTestServer(responder=responder) as server:
        out, usage = score_one(server, "batch")
        repair = server.records()
    assert usage.requests == 2 and usage.repairs == 1 and len(repair) == 2
    assert set(out["item_responses"]) == {2.0}


def test_batch_chunks_fail_alone_and_count_against_the_minimum():
    order = item_order(IPIP_50, persona_seed(0, "p/0"))
    bad_chunk = {item.text for item in order[:10]}  # the first of five requests of 10 items
    lost = {t: sum(i.trait == t for i in order[:10]) for t in IPIP_50.traits}
    assert max(lost.values()) <= 5, "the test needs every trait to keep 5 of its 10 items"

    def decide(body):
        texts = {s["text"] for s in request_data(body)["statements"]}
        return "400" if texts & bad_chunk else None

    with LLMTestServer(decide=decide) as server:
        out, usage = score_one(
            server, "batch", "score.items_per_request=10", "score.min_items_per_trait=5"
        )
    assert usage.requests == 5
    assert sum(v is None for v in out["item_responses"]) == 10
    assert len(out["item_errors"]) == 10 and all("HTTP 400" in e for e in out["item_errors"])
    assert "failed_items:10" in out["score_flags"]


# ------------------------------------------------------------------------------ failures


def test_failed_items_are_retried_then_recorded_and_the_trait_uses_the_rest():
    failing = {"E1", "E2"}

    def decide(body):
        return "500" if item_of(body).id in failing else None

    def logprobs(body):
        item = item_of(body)
        return [(str(1 + int(item.id[1:]) % 5), 0.0)]  # E3 -> 4, E4 -> 5, E5 -> 1, ...

    with LLMTestServer(decide=decide, logprobs=logprobs) as server:
        out, usage = score_one(server, "logprob", "llm.max_retries=2")
        outcomes = server.outcomes()
    assert outcomes["500"] == 2 * 3  # each failing item: first try + 2 retries
    assert usage.retries == 4 and usage.requests == 48 + 6
    assert [e.split(":")[0] for e in sorted(out["item_errors"])] == ["E1", "E2"]
    assert all("HTTP 500" in e and "gave up after 3 attempts" in e for e in out["item_errors"])
    responses = by_id(out, "item_responses")
    assert responses["E1"] is None and responses["E2"] is None
    answered = [i for i in IPIP_50.items if i.trait == "extraversion" and i.id not in failing]
    keyed = [
        (1 + int(i.id[1:]) % 5) if i.keyed > 0 else 6 - (1 + int(i.id[1:]) % 5) for i in answered
    ]
    assert out["extraversion"] == pytest.approx(np.mean(keyed)) and len(keyed) == 8
    assert "failed_items:2" in out["score_flags"]


def test_a_trait_short_of_items_fails_the_persona_and_stops_early():
    order = item_order(IPIP_50, persona_seed(0, "p/0"))
    first_e = [i.id for i in order if i.trait == "extraversion"][:3]

    def decide(body):
        return "400" if item_of(body).id in first_e else None

    with LLMTestServer(Faults(latency_s=0.02), decide=decide) as server:
        with pytest.raises(TooFewItems) as err:
            score_one(server, "logprob", "llm.concurrency=2")
        sent = len(server.records())
    message = str(err.value)
    assert message.startswith("too few items answered: extraversion at most 7 of 10 (minimum 8)")
    assert f"e.g. {first_e[0]}: HTTP 400" in message and "stopped early" in message
    third = [i.id for i in order].index(first_e[2])
    assert sent <= third + 3 < 50, "requests went on after the persona could not succeed"
    assert isinstance(err.value, OutputError)  # so the stage records it as the row's failure


def test_the_minimum_is_checked_against_the_instrument_before_any_request(tmp_path):
    write_personas(tmp_path / "bank", 1)
    result = CliRunner().invoke(
        cli, ["score", str(tmp_path / "bank"), "--set", "score.min_items_per_trait=11"]
    )
    assert result.exit_code == 2 and "exceeds the items of instrument 'ipip-50'" in result.output


# ------------------------------------------------------------------------------ mode detection


def resolve(server, *extra, instrument=IPIP_50):
    cfg = load_config(overrides=options(server, "llm.max_retries=0", *extra))
    llm = cfg.stage_llm("score")
    return resolve_mode(cfg.score, instrument, llm, Endpoint.remote(server.base_url))


def test_mode_detection_probes_once(caplog):
    with LLMTestServer() as server:
        mode, usage = resolve(server)
        assert (mode, usage.requests, len(server.records())) == ("logprob", 1, 1)
        assert resolve(server, "score.mode=text")[0] == "text"
        assert resolve(server, "score.mode=batch")[0] == "batch"
        assert len(server.records()) == 1, "an explicit mode needs no probe"
    with LLMTestServer(logprobs=lambda body: None) as server:
        assert resolve(server)[0] == "text"
        assert "no top_logprobs (the answer has no top_logprobs)" in caplog.text
        with pytest.raises(PersonagenError, match=r"score\.mode=logprob, but the endpoint gives"):
            resolve(server, "score.mode=logprob")
    with LLMTestServer(Faults(rules={'"top_logprobs"': "400"})) as server:
        assert resolve(server)[0] == "text"
    with (
        LLMTestServer(Faults(rules={"music": "500"})) as server,
        pytest.raises(PersonagenError, match="does not answer: HTTP 500"),
    ):
        resolve(server)


def test_scales_beyond_one_digit_are_answered_as_text():
    spec = {
        "id": "ten",
        "scale": {"min": 0, "max": 10, "labels": [str(i) for i in range(11)]},
        "traits": ["openness"],
        "items": [{"id": "X1", "text": "I love new ideas.", "trait": "openness", "keyed": "+"}],
    }
    ten = instrument_from_dict(spec)
    with LLMTestServer() as server:
        assert resolve(server, instrument=ten)[0] == "text"
        assert not server.records(), "no probe for a scale that cannot be read from one token"
        with pytest.raises(PersonagenError, match="single-digit scale points"):
            resolve(server, "score.mode=logprob", instrument=ten)
        out, _ = score_one(
            server, "text", "score.min_items_per_trait=1", instrument=ten
        )  # the stub answers 1-5: on a 0-10 scale, mapped to 1-5 for the trait column
    value = out["item_responses"][0]
    assert out["openness"] == pytest.approx(1 + value * 4 / 10)


# ------------------------------------------------------------------------------ item order


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31), st.text(min_size=1, max_size=30))
def test_item_order_is_a_reproducible_permutation(seed, persona_id):
    a = item_order(IPIP_50, persona_seed(seed, persona_id))
    assert a == item_order(IPIP_50, persona_seed(seed, persona_id))
    assert sorted(i.id for i in a) == sorted(IPIP_50.item_ids())
    assert 0 <= persona_seed(seed, persona_id) < 2**63


def test_orders_differ_between_personas_and_seeds():
    orders = {
        tuple(i.id for i in item_order(IPIP_50, persona_seed(0, f"u{k}/0"))) for k in range(20)
    }
    assert len(orders) == 20
    assert item_order(IPIP_50, persona_seed(1, "u1/0")) != item_order(
        IPIP_50, persona_seed(0, "u1/0")
    )
    first = [item_order(IPIP_50, persona_seed(0, f"u{k}/0"))[0].id for k in range(200)]
    assert len(set(first)) > 30, "the first item should vary (order effects)"


# ------------------------------------------------------------------------------ CLI and bank


def write_personas(bank, n: int, kept=None):
    ids = [f"u{i:03d}/0" for i in range(n)]
    write_group(
        bank,
        "personas",
        pa.table(
            {
                "persona_id": ids,
                "user_id": [i.split("/")[0] for i in ids],
                "window_id": pa.array([0] * n, pa.int32()),
                "narrative": [f"{NARRATIVE} ({i})" for i in range(n)],
                "attributes": pa.nulls(n),
                "source_meta": ["{}"] * n,
                "model": ["m"] * n,
                "prompt_version": ["v"] * n,
            }
        ),
    )
    return ids


def test_cli_errors_name_the_problem(tmp_path):
    bank = tmp_path / "bank"
    bank.mkdir()
    runner = CliRunner()
    result = runner.invoke(cli, ["score", str(bank)])
    assert result.exit_code == 2 and "no personas in" in result.output
    write_personas(bank, 2)
    result = runner.invoke(cli, ["consistency", str(bank)])
    assert result.exit_code == 2 and "has no scores yet" in result.output
    result = runner.invoke(cli, ["score", str(bank), "--instrument", "big-six"])
    assert result.exit_code == 2 and "unknown instrument 'big-six'" in result.output
    result = runner.invoke(cli, ["score", str(bank), "--mode", "guess"])
    assert result.exit_code == 2 and "guess" in result.output


def test_skipped_rows_pass_a_stage_uncounted_and_unwritten():
    """A chain mine -> score where the score stage declined row b (the judge rejected it)."""
    table = pa.table(
        {
            "persona_id": ["a", "b", "c"],
            "history_id": ["a", "b", "c"],
            "mine__error": [None, None, "timeout"],
            "mine__attempts": pa.array([1, 1, 5], pa.int32()),
            "score__error": pa.nulls(3, pa.string()),
            "score__attempts": pa.array([50, None, None], pa.int32()),
        }
    )
    for stage in ("mine", "score"):
        for name in USAGE_FIELDS:
            table = table.append_column(f"{stage}__{name}", pa.array([1, 0, 0], pa.int64()))
    for group in ("personas", "scores"):
        for field in GROUPS[group]:
            if field.name not in table.column_names:
                table = table.append_column(field, pa.nulls(3, field.type))
    groups, failed, counts = split_stage_rows(
        table, [("mine", "personas", "history_id"), ("score", "scores", "persona_id")]
    )
    assert (counts["mine:in"], counts["mine:out"], counts["mine:failed"]) == (3, 2, 1)
    assert (counts["score:in"], counts["score:out"], counts["score:skipped"]) == (1, 1, 1)
    assert groups["personas"].column("persona_id").to_pylist() == ["a", "b"]
    assert groups["scores"].column("persona_id").to_pylist() == ["a"]
    assert failed.column("input_id").to_pylist() == ["c"]


def test_prompt_versions_are_stable_and_distinct():
    assert item_prompt().version.startswith("score-")
    assert item_prompt().version == item_prompt().version
    assert "{{" not in item_prompt().messages({"x": 1}, {"MIN": "1", "MAX": "5"})[1]["content"]
    assert "one digit" in item_prompt().repair
