"""Trait-narrative consistency: do the narratives support the personas' extreme trait scores?

A small model answering an inventory can give a persona who lives as a recluse a top-decile
extraversion score. After scoring, a judge LLM reads the narrative of every persona with an
extreme trait (in the bank's top or bottom `score.consistency_quantile` of that trait) and says
per extreme trait whether the narrative is consistent with it, says nothing about it, or
contradicts it. The verdicts go to the bank's `consistency` group; each contradicted trait adds
`inconsistent:<trait>` to the persona's `score_flags`, so alignment can leave such personas out.

`personagen consistency BANK`, or `personagen score --check-consistency` (`score.consistency`).
It uses the judge's endpoint and model (`judge.*`). A persona is checked once, for the traits
that were extreme then; a re-run checks personas that have become extreme or are newly scored.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ValidationInfo, field_validator, model_validator

from personagen import TRAITS
from personagen.config import Config
from personagen.errors import PersonagenError
from personagen.io.bank import GROUPS, KEY, done_ids, read_group, write_group
from personagen.llm.client import LLMClient
from personagen.llm.prompts import Prompt, load_prompt
from personagen.llm.runs import RunSummary, cache_folder, finish_run, record_stage, stage_llm
from personagen.llm.usage import Usage
from personagen.psychometrics.flags import INCONSISTENT

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


CONSISTENCY_COLUMNS = pa.schema([f for f in GROUPS["consistency"] if f.name != KEY])


async def consistency_row(
    client: LLMClient, row: dict[str, Any], usage: Usage, params: ConsistencyParams
) -> dict[str, Any]:
    """One persona (`narrative`, `claims`) -> its verdicts (the `consistency` group columns)."""
    claims = row["claims"]
    data = {
        "persona": row["narrative"],
        "claims": [
            {"trait": c["trait"], "level": c["level"], "means": MEANING[(c["trait"], c["level"])]}
            for c in claims
        ],
    }
    answer = await client.structured(
        params.prompt.messages(data),
        ConsistencyAnswer,
        prompt_version=params.prompt.version,
        context={"traits": [c["trait"] for c in claims]},
        usage=usage,
    )
    verdicts = {v.trait: v for v in answer.verdicts}
    return {
        "consistency": [
            {
                **c,
                "verdict": verdicts[c["trait"]].verdict,
                "rationale": verdicts[c["trait"]].rationale,
            }
            for c in claims
        ],
        "consistency_model": client.model,
        "consistency_prompt_version": params.prompt.version,
    }


def consistency_stage() -> Any:
    from personagen.llm.stage import LLMStage

    return LLMStage(
        STAGE, consistency_row, CONSISTENCY_COLUMNS, ConsistencyParams(consistency_prompt())
    )


# ------------------------------------------------------------------------------ the pass


def check_consistency(bank: str | Path, cfg: Config) -> RunSummary:
    """`personagen consistency BANK`: check the extreme personas not checked yet, then flag."""
    start = time.perf_counter()
    bank = Path(bank).resolve()
    if read_group(bank, "scores", [KEY]).num_rows == 0:
        raise PersonagenError(f"bank {bank} has no scores yet (run `personagen score` first)")
    counts = check_pending(bank, cfg)
    summary = RunSummary(counts, [STAGE], time.perf_counter() - start)
    finish_run(bank, summary, cfg, STAGE)
    return summary


def check_pending(bank: str | Path, cfg: Config) -> Counter[str]:
    """Check every persona with an extreme trait and no verdict yet (nor a failed check), then
    bring the `inconsistent:<trait>` flags of the whole bank up to date."""
    from personagen.cluster import init_ray
    from personagen.llm.server import llm_endpoint
    from personagen.llm.stage import pool_settings, run_table_stage

    bank = Path(bank).resolve()
    scores = read_group(bank, "scores", [KEY, *TRAITS])
    claims = extreme_claims(scores, cfg.score.consistency_quantile)
    checked = pa.array(sorted(done_ids(bank, STAGE, failed_stage=STAGE)), pa.string())
    todo = claims.filter(pc.invert(pc.is_in(claims.column(KEY), value_set=checked)))
    counts: Counter[str] = Counter(
        {
            "bank:extreme": claims.num_rows,
            "consistency:skipped_done": claims.num_rows - todo.num_rows,
            "consistency:todo": todo.num_rows,
        }
    )
    if todo.num_rows:
        personas = read_group(bank, "personas", [KEY, "narrative"])
        at = pc.index_in(todo.column(KEY), value_set=personas.column(KEY))
        todo = todo.append_column("narrative", personas.column("narrative").take(at))
        llm = stage_llm(cfg, cfg.judge.endpoint(cfg.llm))
        init_ray(cfg.ray)
        with llm_endpoint(llm) as endpoint:
            stage = consistency_stage()
            record_stage(bank, STAGE, llm, endpoint, stage.params.prompt.version)
            pool = pool_settings(llm, endpoint, todo.num_rows, cfg.mine, actors=cfg.score.actors)
            cache = cache_folder(cfg, bank)
            counts.update(
                run_table_stage(
                    todo, stage, STAGE, llm, endpoint, pool, bank, cache, cfg.mine.progress_s
                )
            )
    counts.update(apply_flags(bank))
    return counts


def apply_flags(bank: str | Path) -> Counter[str]:
    """Set each scored persona's `inconsistent:<trait>` flags from its latest verdicts; rows
    whose flags change get a new `scores` row (the bank keeps the latest)."""
    verdicts = read_group(bank, STAGE, [KEY, "consistency"])
    contradicted: dict[str, list[str]] = {}
    for pid, row in zip(
        verdicts.column(KEY).to_pylist(), verdicts.column("consistency").to_pylist(), strict=True
    ):
        traits = [v["trait"] for v in row or [] if v["verdict"] == CONTRADICTED]
        if traits:
            contradicted[pid] = traits
    scores = read_group(bank, "scores")
    flags = scores.column("score_flags").to_pylist()
    changed, new_flags = [], []
    for i, pid in enumerate(scores.column(KEY).to_pylist()):
        old = flags[i] or []
        kept = [f for f in old if not f.startswith(INCONSISTENT)]
        new = kept + [INCONSISTENT + t for t in contradicted.get(pid, [])]
        if new != old:
            changed.append(i)
            new_flags.append(new)
    if changed:
        update = scores.take(pa.array(changed))
        position = update.schema.get_field_index("score_flags")
        column = pa.array(new_flags, update.schema.field("score_flags").type)
        write_group(bank, "scores", update.set_column(position, "score_flags", column))
    return Counter(
        {
            "bank:consistency_checked": verdicts.num_rows,
            "bank:inconsistent": len(contradicted),
            "bank:inconsistent_traits": sum(len(t) for t in contradicted.values()),
        }
    )
