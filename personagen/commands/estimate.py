"""`personagen build --dry-run`: what a build would send to the LLM, before spending anything.

The real inputs go through the real ingest (redaction, windowing), then each history's real
prompts are rendered and counted (with the ingest's token counter) — no LLM is started. What a
prompt holds that only the LLM can produce (the persona narrative the judge and the scorer read,
the answers) is estimated from stated assumptions, printed beside the figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from personagen.commands.build import finished_ids, stream_stages
from personagen.config import Config
from personagen.errors import PersonagenError
from personagen.llm.prompts import posts_data
from personagen.llm.usage import Price
from personagen.psychometrics.answers import CONTENT_FREE
from personagen.psychometrics.instruments import get_instrument
from personagen.runtime.cluster import init_ray
from personagen.runtime.ingest import ingested
from personagen.stages.ingest import resolve_inputs
from personagen.stages.judge import judge_prompt
from personagen.stages.mine import mine_prompt
from personagen.stages.score import (
    BATCH_TOKENS_PER_ITEM,
    ScoreParams,
    batch_messages,
    batch_prompt,
    item_messages,
    item_prompt,
)
from personagen.text.windowing import count_tokens

NARRATIVE_WORDS = 250
"""Assumed narrative length (the miner is asked for 150-300 words)."""
TOKENS_PER_WORD = 1.35
MINE_ANSWER_TOKENS = int(NARRATIVE_WORDS * TOKENS_PER_WORD) + 120
"""Narrative plus the attributes JSON."""
JUDGE_ANSWER_TOKENS = 260
"""Four criteria with a short rationale each, plus the overall score, as JSON."""
ASSUMED_ATTRIBUTES = {
    "age_range": "25-34",
    "gender": "male",
    "occupation": "secondary school teacher",
    "location": "Leeds, United Kingdom",
    "interests": ["running", "baking", "science fiction", "travel"],
    "values": ["family", "honesty", "independence"],
}
"""A persona's attributes as a miner typically answers them: the judge reads them with the
narrative."""


@dataclass
class StageEstimate:
    stage: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Estimate:
    histories: int
    already_done: int
    stages: list[StageEstimate] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)


def _messages_tokens(messages: list[dict[str, str]]) -> int:
    return sum(count_tokens(m["content"]) + 4 for m in messages)


def history_prompt_tokens(batch: pa.Table) -> pa.Table:
    """Per history row: the mining prompt's tokens and the judge prompt's tokens for its posts
    and the assumed attributes (the narrative is added on the driver, from its assumed length)."""
    mine, judge = mine_prompt(), judge_prompt()
    persona = {"narrative": "", "attributes": ASSUMED_ATTRIBUTES}
    mine_tokens, judge_tokens = [], []
    for posts in batch.column("posts").to_pylist():
        data = posts_data(posts)
        mine_tokens.append(_messages_tokens(mine.messages({"posts": data})))
        judge_tokens.append(_messages_tokens(judge.messages({"posts": data, "persona": persona})))
    return pa.table(
        {
            "history_id": batch.column("history_id"),
            "mine_tokens": pa.array(mine_tokens, pa.int64()),
            "judge_tokens": pa.array(judge_tokens, pa.int64()),
        }
    )


def estimate(cfg: Config, bank: str | Path) -> Estimate:
    """Requests and tokens per stage of `personagen build` (from `build.input`) on the real
    inputs."""
    source = cfg.build.input
    if source is None:
        raise PersonagenError("no input histories: set build.input or pass --input")
    files, fmt = resolve_inputs(source, cfg.build.format)
    stages = stream_stages(cfg)
    bank = Path(bank)
    instrument = get_instrument(cfg.score.instrument).id
    done = finished_ids(bank, stages, instrument) if bank.is_dir() else set()
    done = pa.array(sorted(done), pa.string())
    init_ray(cfg.ray)
    totals = ingested(files, fmt, cfg.ingest, history_prompt_tokens)
    todo = totals.filter(pc.invert(pc.is_in(totals.column("history_id"), value_set=done)))
    result = Estimate(totals.num_rows, totals.num_rows - todo.num_rows)
    n = todo.num_rows
    narrative_tokens = int(NARRATIVE_WORDS * TOKENS_PER_WORD)
    result.assumptions = [
        f"narratives of ~{NARRATIVE_WORDS} words (~{narrative_tokens} tokens) in judge and "
        "score prompts, with six short attributes in judge prompts",
        f"mining answers ~{MINE_ANSWER_TOKENS} tokens, judge answers ~{JUDGE_ANSWER_TOKENS}",
        "every mined persona is judged and scored (the judge keeps fewer: an upper bound)",
        "tokens counted with the ingest's approximation of BPE tokenizers (about ±10%)",
    ]
    mine_prompt_tokens = _sum(todo, "mine_tokens")
    result.stages.append(
        _stage(
            "mine", cfg.stage_llm("mine").model, n, mine_prompt_tokens, n * MINE_ANSWER_TOKENS, cfg
        )
    )
    if "judge" in stages:
        judge_llm = cfg.stage_llm("judge")
        prompt = _sum(todo, "judge_tokens") + n * narrative_tokens
        result.stages.append(
            _stage("judge", judge_llm.model, n, prompt, n * JUDGE_ANSWER_TOKENS, cfg)
        )
    if "score" in stages:
        result.stages.append(_score_estimate(cfg, n, narrative_tokens, result.assumptions))
    return result


def _sum(table: pa.Table, column: str) -> int:
    return int(pc.sum(table.column(column)).as_py() or 0)


def _score_estimate(
    cfg: Config, personas: int, narrative_tokens: int, assumptions: list[str]
) -> StageEstimate:
    """Per-item modes: one request per item (one answer token); batch: one per chunk."""
    instrument = get_instrument(cfg.score.instrument)
    llm = cfg.stage_llm("score")
    narrative = "x " * narrative_tokens
    if cfg.score.mode == "batch":
        chunk = cfg.score.items_per_request or len(instrument.items)
        chunks = math.ceil(len(instrument.items) / chunk)
        params = ScoreParams(instrument, "batch", batch_prompt(), cfg.seed, cfg.score)
        items = list(instrument.items[:chunk])
        per_request = _messages_tokens(batch_messages(params, narrative, items))
        answer = BATCH_TOKENS_PER_ITEM * chunk
        requests = personas * chunks
    else:
        params = ScoreParams(instrument, "logprob", item_prompt(), cfg.seed, cfg.score)
        per_item = [_messages_tokens(item_messages(params, narrative, i)) for i in instrument.items]
        per_request = math.ceil(sum(per_item) / len(per_item))
        answer = 1
        requests = personas * len(instrument.items)
        assumptions.append(
            f"scoring: {len(instrument.items)} items of {instrument.id}, one request each, "
            "one answer token (logprob/text mode; retries not counted); the shared persona "
            "prefix is billed in full unless the endpoint caches prompts"
        )
        if cfg.score.mode == "calibrated":
            once = len(CONTENT_FREE) * len(instrument.items)
            requests += once
            assumptions.append(
                f"calibrated scoring: {once} content-free requests once per run (counted at a "
                "persona request's length)"
            )
    return _stage("score", llm.model, requests, requests * per_request, requests * answer, cfg)


def _stage(
    stage: str, model: str, requests: int, prompt: int, completion: int, cfg: Config
) -> StageEstimate:
    price: Price | None = cfg.llm.prices.get(model)
    cost = None
    if price is not None:
        cost = (prompt * price.prompt + completion * price.completion) / 1e6
    return StageEstimate(stage, model, requests, prompt, completion, cost)
