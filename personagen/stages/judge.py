"""Quality assessment: a judge LLM scores each persona against the posts it was mined from.

Criteria (1-5, each with a one-sentence rationale): faithfulness (every claim supported by the
posts), specificity (not generic), consistency (no contradictions), plausibility; plus an overall
score. A persona is kept when `overall >= judge.threshold` (and any `judge.min_scores` hold) and
it is not a near-duplicate of a better persona (MinHash over the narratives, `judge.dedup`);
rejected personas stay in the bank with `kept = false` and a `reject_reason`.

Runs inside `personagen mine` by default (each new persona is judged as it is mined, with its
posts at hand) or alone as `personagen judge BANK`, which reads the posts from the histories the
bank was mined from (recorded in its manifest). The judge can be another model or endpoint than
the miner (`judge.model`, `judge.base_url`). The decisions over the whole bank (threshold,
near-duplicates) are `decisions`, a plain function of the judged rows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field, field_validator

from personagen.config import Config, DedupConfig
from personagen.io.bank import GROUPS, KEY
from personagen.llm.prompts import Prompt, load_prompt, posts_data
from personagen.stages.base import LLMStage, Request
from personagen.text import dedup

STAGE = "judge"
CRITERIA = ("faithfulness", "specificity", "consistency", "plausibility")
_FIRST_NUMBER = re.compile(r"\d+(?:\.\d+)?")


# ------------------------------------------------------------------------------ the answer


def _score(value: Any) -> Any:
    """4, 4.0, "4" and "4/5" all mean 4."""
    if isinstance(value, str):
        match = _FIRST_NUMBER.search(value)
        return float(match.group()) if match else value
    return value


class Criterion(BaseModel):
    rationale: str = ""
    score: int = Field(ge=1, le=5)

    @field_validator("score", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return _score(value)


class Judgement(BaseModel):
    faithfulness: Criterion
    specificity: Criterion
    consistency: Criterion
    plausibility: Criterion
    overall: int = Field(ge=1, le=5)

    @field_validator("overall", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return _score(value)


def judge_prompt() -> Prompt:
    return load_prompt("judge", Judgement)


def decide(
    quality: dict[str, Any], threshold: float, min_scores: dict[str, float]
) -> tuple[bool, str | None]:
    """(kept, reject reason) of a judged persona, before duplicate detection."""
    reasons = []
    if quality["overall"] < threshold:
        reasons.append(f"overall {quality['overall']:g} < threshold {threshold:g}")
    for criterion, minimum in sorted(min_scores.items()):
        if quality[criterion] < minimum:
            reasons.append(f"{criterion} {quality[criterion]:g} < minimum {minimum:g}")
    return (not reasons), ("; ".join(reasons) or None)


# ------------------------------------------------------------------------------ one row


@dataclass(frozen=True)
class JudgeParams:
    prompt: Prompt
    threshold: float
    min_scores: tuple[tuple[str, float], ...]
    model: str


JUDGE_COLUMNS = pa.schema([field for field in GROUPS["quality"] if field.name != KEY])


def judge_request(row: dict[str, Any], params: JudgeParams) -> Request:
    """A persona (`narrative`, `attributes`) with its `posts` -> the judge's request."""
    data = {
        "posts": posts_data(row["posts"]),
        "persona": {"narrative": row["narrative"], "attributes": row["attributes"]},
    }
    return Request(params.prompt.messages(data), Judgement, params.prompt.version)


def judge_parse(row: dict[str, Any], verdict: Judgement, params: JudgeParams) -> dict[str, Any]:
    """The judgement -> the `quality` columns, with the threshold applied."""
    quality: dict[str, Any] = {c: float(getattr(verdict, c).score) for c in CRITERIA}
    quality["overall"] = float(verdict.overall)
    quality["rationale"] = json.dumps(
        {c: getattr(verdict, c).rationale for c in CRITERIA}, ensure_ascii=False
    )
    kept, reason = decide(quality, params.threshold, dict(params.min_scores))
    return {
        "quality": quality,
        "kept": kept,
        "reject_reason": reason,
        "duplicate_of": None,
        "judge_model": params.model,
        "judge_prompt_version": params.prompt.version,
    }


def judge_stage(cfg: Config, after: str | None = None) -> LLMStage:
    prompt = judge_prompt()
    params = JudgeParams(
        prompt,
        cfg.judge.threshold,
        tuple(sorted(cfg.judge.min_scores.items())),
        cfg.stage_llm(STAGE).model,
    )
    return LLMStage(
        STAGE, JUDGE_COLUMNS, params, judge_request, judge_parse, prompt.version, KEY, after
    )


# ------------------------------------------------------------------------------ decisions


@dataclass(frozen=True)
class Decisions:
    """The bank-wide verdict of every judged persona, in the order given."""

    kept: list[bool]
    reasons: list[str | None]
    duplicate_of: list[str | None]
    below_threshold: int


def decisions(
    ids: list[str],
    quality: list[dict[str, Any]],
    narratives: list[str | None],
    *,
    threshold: float,
    min_scores: dict[str, float],
    dedup_options: DedupConfig,
) -> Decisions:
    """Threshold, per-criterion minimums and near-duplicates (the better-judged persona of a
    near-duplicate pair is kept) over all judged personas."""
    base = [decide(q, threshold, min_scores) for q in quality]
    duplicate_of: dict[str, str] = {}
    if dedup_options.enabled:
        sigs = dedup.signatures(
            [t or "" for t in narratives], dedup_options.num_perm, dedup_options.shingle
        )
        priority = [q["overall"] + float(np.mean([q[c] for c in CRITERIA])) / 10 for q in quality]
        duplicate_of = dedup.near_duplicates(ids, sigs, dedup_options.threshold, priority)
    kept, reasons, dups = [], [], []
    for pid, (ok, reason) in zip(ids, base, strict=True):
        target = duplicate_of.get(pid)
        if target is not None:
            reason = "; ".join(r for r in (reason, f"near-duplicate of {target}") if r)
        kept.append(ok and target is None)
        reasons.append(reason)
        dups.append(target)
    return Decisions(kept, reasons, dups, sum(not ok for ok, _ in base))
