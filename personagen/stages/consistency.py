"""Trait-narrative consistency: do the narratives support the personas' extreme trait scores?

A small model answering an inventory can give a persona who lives as a recluse a top-decile
extraversion score. After scoring, a judge LLM reads the narrative of every persona with an
extreme trait (in the bank's top or bottom `score.consistency_quantile` of that trait) and says
per extreme trait whether the narrative is consistent with it, says nothing about it, or
contradicts it. The verdicts go to the bank's `consistency` group; each contradicted trait adds
`inconsistent:<trait>` to the persona's `score_flags`, so alignment can leave such personas out.

`personagen consistency BANK`, or `personagen score --check-consistency` (`score.consistency`).
It uses the judge's endpoint and model (`judge.*`) and its own pool (`pools.consistency`). A
persona is checked once, for the traits that were extreme then; a re-run checks personas that
have become extreme or are newly scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ValidationInfo, field_validator, model_validator

from personagen import TRAITS
from personagen.config import Config
from personagen.io.bank import GROUPS, KEY
from personagen.llm.prompts import Prompt, load_prompt
from personagen.psychometrics.flags import INCONSISTENT
from personagen.stages.base import LLMStage, Request

STAGE = "consistency"
HIGH, LOW = "very high", "very low"
MEANING = {
    ("openness", HIGH): "curious, imaginative, drawn to new ideas, art and experiences",
    ("openness", LOW): "conventional and practical, prefers the familiar to the new",
    ("conscientiousness", HIGH): "organised, disciplined, dependable, plans ahead",
    ("conscientiousness", LOW): "disorganised, careless with duties, acts on impulse",
    ("extraversion", HIGH): "outgoing, talkative, seeks company and attention",
    ("extraversion", LOW): "reserved, quiet, keeps to themselves, avoids attention",
    ("agreeableness", HIGH): "warm, trusting, cooperative, considerate of others",
    ("agreeableness", LOW): "critical, blunt, suspicious of others, competitive",
    ("neuroticism", HIGH): "anxious, moody, easily stressed or upset",
    ("neuroticism", LOW): "calm, emotionally stable, rarely worried or upset",
}
CONTRADICTED = "contradicted"
CLAIM_TYPE = pa.list_(
    pa.struct([("trait", pa.string()), ("level", pa.string()), ("score", pa.float64())])
)


# ------------------------------------------------------------------------------ extremes


def extremes(scores: np.ndarray, quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """(n, traits) scores (NaN = none) -> (high, low) boolean masks of the same shape.

    High: at or above the trait's (1 - quantile) quantile in this bank, and above its median;
    low: at or below the quantile, and below the median. So ties at a threshold are all in, and
    a trait without spread (everyone the same) has no extremes at all.
    """
    scores = np.asarray(scores, dtype=np.float64)
    high = np.zeros(scores.shape, dtype=bool)
    low = np.zeros(scores.shape, dtype=bool)
    for j in range(scores.shape[1]):
        column = scores[:, j]
        if np.all(np.isnan(column)):
            continue
        lo, mid, hi = np.nanquantile(column, [quantile, 0.5, 1 - quantile])
        with np.errstate(invalid="ignore"):
            high[:, j] = (column >= hi) & (column > mid)
            low[:, j] = (column <= lo) & (column < mid)
    return high, low


def extreme_claims(scores: pa.Table, quantile: float) -> pa.Table:
    """The bank's personas with at least one extreme trait: `persona_id`, `claims`."""
    matrix = np.column_stack(
        [pc.fill_null(scores.column(t), np.nan).to_numpy(zero_copy_only=False) for t in TRAITS]
    )
    high, low = extremes(matrix, quantile)
    ids, claims = [], []
    for i, pid in enumerate(scores.column(KEY).to_pylist()):
        row = [
            {"trait": trait, "level": level, "score": float(matrix[i, j])}
            for j, trait in enumerate(TRAITS)
            for level, mask in ((HIGH, high), (LOW, low))
            if mask[i, j]
        ]
        if row:
            ids.append(pid)
            claims.append(row)
    return pa.table({KEY: pa.array(ids, pa.string()), "claims": pa.array(claims, CLAIM_TYPE)})


# ------------------------------------------------------------------------------ the answer


class TraitVerdict(BaseModel):
    trait: Literal["openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"]
    verdict: Literal["consistent", "no evidence", "contradicted"]
    rationale: str = ""

    @field_validator("trait", "verdict", mode="before")
    @classmethod
    def _plain(cls, value: Any) -> Any:
        return (
            " ".join(value.lower().replace("_", " ").split()) if isinstance(value, str) else value
        )


class ConsistencyAnswer(BaseModel):
    """Verdicts on exactly the claimed traits (`traits` in the validation context)."""

    verdicts: list[TraitVerdict]

    @model_validator(mode="after")
    def _all_claims(self, info: ValidationInfo) -> ConsistencyAnswer:
        wanted = set((info.context or {}).get("traits", ()))
        given = [v.trait for v in self.verdicts]
        if len(given) != len(set(given)):
            raise ValueError("a trait is judged twice")
        if wanted and set(given) != wanted:
            missing = ", ".join(sorted(wanted - set(given))) or "none"
            extra = ", ".join(sorted(set(given) - wanted)) or "none"
            raise ValueError(
                f"judge exactly the claimed traits (missing: {missing}; extra: {extra})"
            )
        return self


def consistency_prompt() -> Prompt:
    return load_prompt("consistency", ConsistencyAnswer)


# ------------------------------------------------------------------------------ one persona


@dataclass(frozen=True)
class ConsistencyParams:
    prompt: Prompt
    model: str


CONSISTENCY_COLUMNS = pa.schema([f for f in GROUPS["consistency"] if f.name != KEY])


def consistency_request(row: dict[str, Any], params: ConsistencyParams) -> Request:
    """One persona (`narrative`, `claims`: its extreme traits) -> the judge's request."""
    claims = row["claims"]
    data = {
        "persona": row["narrative"],
        "claims": [
            {"trait": c["trait"], "level": c["level"], "means": MEANING[(c["trait"], c["level"])]}
            for c in claims
        ],
    }
    return Request(
        params.prompt.messages(data),
        ConsistencyAnswer,
        params.prompt.version,
        context={"traits": [c["trait"] for c in claims]},
    )


def consistency_parse(
    row: dict[str, Any], answer: ConsistencyAnswer, params: ConsistencyParams
) -> dict[str, Any]:
    """The verdicts -> the `consistency` group columns (one entry per claimed trait)."""
    verdicts = {v.trait: v for v in answer.verdicts}
    return {
        "consistency": [
            {
                **c,
                "verdict": verdicts[c["trait"]].verdict,
                "rationale": verdicts[c["trait"]].rationale,
            }
            for c in row["claims"]
        ],
        "consistency_model": params.model,
        "consistency_prompt_version": params.prompt.version,
    }


def consistency_stage(cfg: Config) -> LLMStage:
    prompt = consistency_prompt()
    params = ConsistencyParams(prompt, cfg.stage_llm(STAGE).model)
    return LLMStage(
        STAGE,
        CONSISTENCY_COLUMNS,
        params,
        consistency_request,
        consistency_parse,
        prompt.version,
    )


def flags_with_verdicts(old: list[str] | None, contradicted: list[str]) -> list[str]:
    """A persona's `score_flags` with its `inconsistent:<trait>` flags replaced by those of
    its latest verdicts."""
    kept = [f for f in old or [] if not f.startswith(INCONSISTENT)]
    return kept + [INCONSISTENT + t for t in contradicted]
