"""Each LLM stage's two pure functions, without a client or Ray: `request(row, params)` builds
exactly the request the stage sends (data in the user message, the answer model, its schema and
validation context), `parse(row, answer, params)` exactly the stage's columns."""

from __future__ import annotations

import json

import pytest

from personagen.config import load_config
from personagen.io.bank import KEY
from personagen.psychometrics.instruments import IPIP_50
from personagen.stages import consistency, judge, mine, queries, revise, score
from personagen.stages.base import LLMStage, passed
from personagen.stages.persona import PersonaAnswer

CFG = load_config(None, ["llm.model=stage-model", "mine.min_words=12", "seed=3"])
POSTS = [{"date": "2,June,2004", "text": "Rehearsal ran late; my email is a@b.example."}]
NARRATIVE = (
    "A cellist who rehearses every night in a cold church hall, teaches children on Saturday "
    "mornings, cooks badly for her flatmates and writes long letters to her sister abroad."
)


def data_block(request) -> dict:
    """The JSON data of a request's user message (what the model reads as data)."""
    user = request.messages[-1]["content"]
    return json.loads(user.split("<data>\n", 1)[1].split("\n</data>", 1)[0])


def test_mine_requests_the_posts_and_parses_a_redacted_persona():
    stage = mine.mine_stage(CFG, meta_columns=("gender",))
    row = {"history_id": "u1/0", "user_id": "u1", "posts": POSTS, "gender": "female"}
    request = stage.request(row, stage.params)
    assert isinstance(stage, LLMStage) and request.answer is PersonaAnswer
    assert data_block(request) == {"posts": [{"date": "2,June,2004", "text": POSTS[0]["text"]}]}
    assert request.context == {"min_words": 12}
    assert request.prompt_version == mine.mine_prompt().version == stage.prompt_version
    answer = PersonaAnswer.model_validate(
        {"narrative": NARRATIVE + " Write to her at c@d.example any time you like, friends.",
         "attributes": {"occupation": "musician", "interests": "cello, cooking"}},
        context={"min_words": 12},
    )  # fmt: skip
    out = stage.parse(row, answer, stage.params)
    assert out[KEY] == "u1/0" and out["model"] == "stage-model"
    assert "c@d.example" not in out["narrative"] and "[EMAIL]" in out["narrative"]
    assert out["attributes"]["interests"] == ["cello", "cooking"]
    assert json.loads(out["source_meta"]) == {"gender": "female"}
    assert set(out) == set(mine.MINE_COLUMNS.names)


def test_judge_requests_persona_with_posts_and_applies_the_threshold():
    stage = judge.judge_stage(CFG.updated({"judge.threshold": 4}), after="mine")
    row = {"persona_id": "u1/0", "posts": POSTS, "narrative": NARRATIVE, "attributes": {}}
    request = stage.request(row, stage.params)
    assert data_block(request)["persona"] == {"narrative": NARRATIVE, "attributes": {}}
    assert request.answer is judge.Judgement and stage.after == "mine"
    criterion = {"rationale": "fits", "score": 3}
    verdict = judge.Judgement.model_validate(
        {c: criterion for c in judge.CRITERIA} | {"overall": 3}
    )
    out = stage.parse(row, verdict, stage.params)
    assert out["kept"] is False and out["reject_reason"] == "overall 3 < threshold 4"
    assert out["quality"]["overall"] == 3.0 and out["judge_model"] == "stage-model"
    assert json.loads(out["quality"]["rationale"]) == {c: "fits" for c in judge.CRITERIA}


def test_consistency_asks_about_exactly_the_claimed_traits():
    stage = consistency.consistency_stage(CFG)
    claims = [{"trait": "extraversion", "level": consistency.HIGH, "score": 4.8}]
    row = {"persona_id": "p", "narrative": NARRATIVE, "claims": claims}
    request = stage.request(row, stage.params)
    assert data_block(request)["claims"] == [
        {
            "trait": "extraversion",
            "level": "very high",
            "means": consistency.MEANING[("extraversion", "very high")],
        }
    ]
    assert request.context == {"traits": ["extraversion"]}
    answer = consistency.ConsistencyAnswer.model_validate(
        {"verdicts": [{"trait": "Extraversion", "verdict": "contradicted", "rationale": "quiet"}]},
        context=request.context,
    )
    out = stage.parse(row, answer, stage.params)
    assert out["consistency"] == [{**claims[0], "verdict": "contradicted", "rationale": "quiet"}]
    assert consistency.flags_with_verdicts(
        ["low_variance", "inconsistent:openness"], ["extraversion"]
    ) == [
        "low_variance",
        "inconsistent:extraversion",
    ]


def test_revise_and_queries_build_their_requests_from_the_row():
    stage = revise.revise_stage(CFG, "people living in Japan", "young city dwellers")
    request = stage.request({"persona_id": "p", "narrative": NARRATIVE}, stage.params)
    assert data_block(request) == {
        "persona": NARRATIVE,
        "target_group": "people living in Japan",
        "study": "young city dwellers",
    }
    assert request.context == {"min_words": revise.min_words(NARRATIVE, 40)}
    answer = revise.Revision(revised_narrative=NARRATIVE + " In Osaka.", changes=["moved"])
    out = stage.parse({"persona_id": "p"}, answer, stage.params)
    assert out["revise_target"] == "people living in Japan" and out["revision_changes"] == ["moved"]

    asked = queries.queries_stage(CFG.updated({"train_embedder.queries_per_persona": 2}))
    request = asked.request({"persona_id": "p", "text": NARRATIVE}, asked.params)
    assert request.schema["properties"]["queries"]["minItems"] == 2 and request.context == {"n": 2}
    answer = queries.PersonaQueries.model_validate(
        {"queries": ["a night cellist", "a teacher of children"]}, context={"n": 2}
    )
    assert asked.parse({}, answer, asked.params)["queries"] == answer.queries


def test_batch_scoring_is_one_request_whose_failure_fails_every_trait():
    stage = score.score_stage(CFG, IPIP_50, "batch", after="judge")
    assert isinstance(stage, LLMStage) and stage.provenance["answer_mode"] == "batch"
    row = {"persona_id": "p/0", "narrative": NARRATIVE, "kept": True}
    request = stage.request(row, stage.params)
    order = [i.id for i in score.item_order(IPIP_50, score.persona_seed(3, "p/0"))]
    assert list(request.schema["properties"]) == order == request.context["ids"]
    assert stage.request({**row, "kept": False}, stage.params) is None  # rejected: not scored
    answer = score.BatchAnswers.model_validate(dict.fromkeys(order, 4), context=request.context)
    out = stage.parse(row, answer, stage.params)
    assert out["item_ids"] == order and out["extraversion"] == 3.0  # 4 and 6 - 4 alternate
    assert out["answer_mode"] == "batch" and out["score_model"] == "stage-model"
    reason = stage.explain(row, "invalid answer: no JSON", stage.params)
    assert reason.startswith("too few items answered: agreeableness at most 0 of 10")
    assert reason.endswith("e.g. " + order[0] + ": invalid answer: no JSON")


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"mine__error": None, "mine__attempts": 1}, True),
        ({"mine__error": "timeout", "mine__attempts": 3}, False),
        ({"mine__error": None, "mine__attempts": None}, False),
    ],
)
def test_a_stage_takes_only_rows_that_passed_the_one_before(row, expected):
    assert passed(judge.judge_stage(CFG, after="mine"), row) is expected
    assert passed(judge.judge_stage(CFG), row) is True
