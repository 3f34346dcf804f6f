"""Quality assessment: a judge LLM scores each persona against the posts it was mined from.

Criteria (1-5, each with a one-sentence rationale): faithfulness (every claim supported by the
posts), specificity (not generic), consistency (no contradictions), plausibility; plus an overall
score. A persona is kept when `overall >= judge.threshold` (and any `judge.min_scores` hold) and
it is not a near-duplicate of a better persona (MinHash over the narratives, `judge.dedup`);
rejected personas stay in the bank with `kept = false` and a `reject_reason`.

Runs inside `personagen mine` by default (each new persona is judged as it is mined, with its
posts at hand) or alone as `personagen judge BANK`, which reads the posts from the histories the
bank was mined from (recorded in its manifest). The judge can be another model or endpoint than
the miner (`judge.model`, `judge.base_url`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field, field_validator

from personagen import dedup
from personagen.config import Config, DedupConfig, JudgeConfig, LLMConfig
from personagen.errors import PersonagenError
from personagen.io.bank import (
    KEY,
    QUALITY_TYPE,
    done_ids,
    failure_rows,
    read_group,
    read_manifest,
    write_failures,
    write_group,
)
from personagen.io.histories import histories_files, histories_schema
from personagen.llm.client import Endpoint, LLMClient
from personagen.llm.prompts import Prompt, load_prompt, posts_data
from personagen.llm.runs import RunSummary, cache_folder, finish_run, record_stage, stage_llm
from personagen.llm.usage import Usage

log = logging.getLogger(__name__)

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


JUDGE_COLUMNS = pa.schema(
    [
        ("quality", QUALITY_TYPE),
        ("kept", pa.bool_()),
        ("reject_reason", pa.string()),
        ("duplicate_of", pa.string()),
        ("judge_model", pa.string()),
        ("judge_prompt_version", pa.string()),
    ]
)


async def judge_row(
    client: LLMClient, row: dict[str, Any], usage: Usage, params: JudgeParams
) -> dict[str, Any]:
    """Judge one persona (row: `posts`, `narrative`, `attributes`) -> the `quality` columns."""
    data = {
        "posts": posts_data(row["posts"]),
        "persona": {"narrative": row["narrative"], "attributes": row["attributes"]},
    }
    verdict = await client.structured(
        params.prompt.messages(data),
        Judgement,
        prompt_version=params.prompt.version,
        usage=usage,
    )
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
        "judge_model": client.model,
        "judge_prompt_version": params.prompt.version,
    }


def judge_stage(cfg: Config, after: str | None = None) -> Any:
    from personagen.llm.stage import LLMStage

    params = JudgeParams(
        judge_prompt(), cfg.judge.threshold, tuple(sorted(cfg.judge.min_scores.items()))
    )
    return LLMStage(STAGE, judge_row, JUDGE_COLUMNS, params, KEY, after)


def record_judge(bank: str | Path, judge_llm: LLMConfig, endpoint: Endpoint) -> None:
    record_stage(bank, STAGE, judge_llm, endpoint, judge_prompt().version)


# ------------------------------------------------------------------------------ the stage


def judge(bank: str | Path, cfg: Config, histories: str | Path | None = None) -> RunSummary:
    """Judge every persona of `bank` that has no judgement yet (nor a failed one), then apply
    the threshold and duplicate detection to the whole bank."""
    from personagen.cluster import init_ray
    from personagen.llm.server import llm_endpoint

    start = time.perf_counter()
    bank = Path(bank).resolve()  # workers write there, and their working folder is not ours
    if not (bank / "personas").is_dir():
        raise PersonagenError(f"no personas in {bank} (run `personagen mine` first)")
    judge_llm = stage_llm(cfg, cfg.judge.endpoint(cfg.llm))
    counts: Counter[str] = Counter()
    if pending_personas(bank).num_rows:
        init_ray(cfg.ray)
        with llm_endpoint(judge_llm) as endpoint:
            record_judge(bank, judge_llm, endpoint)
            counts = judge_pending(bank, cfg, judge_llm, endpoint, histories)
    counts.update(apply_decisions(bank, cfg.judge))
    summary = RunSummary(counts, [STAGE], time.perf_counter() - start)
    finish_run(bank, summary, cfg, STAGE)
    return summary


def judge_pending(
    bank: Path,
    cfg: Config,
    judge_llm: LLMConfig,
    endpoint: Endpoint,
    histories: str | Path | None = None,
) -> Counter[str]:
    """Judge the personas without a judgement (or a recorded judge failure), reading their
    posts from the histories. Personas whose history cannot be found are recorded as failed."""
    import ray

    from personagen.llm.stage import BankStageSink, map_llm_stage, pool_settings, rows_per_block
    from personagen.progress import progress_counter

    counts: Counter[str] = Counter()
    pending = pending_personas(bank)
    if pending.num_rows == 0:
        return counts
    source = histories or read_manifest(bank).get("histories")
    if not source:
        raise PersonagenError(
            f"bank {bank} does not record its histories; pass --histories (ingest output)"
        )
    files = histories_files(source)
    schema = histories_schema(files)
    pool = pool_settings(judge_llm, endpoint, pending.num_rows, cfg.mine)
    ds = ray.data.read_parquet(files, schema=schema).select_columns(["history_id", "posts"])
    ds = ds.map_batches(_attach_personas, fn_kwargs={"personas": pending}, batch_format="pyarrow")
    ds = ds.repartition(target_num_rows_per_block=rows_per_block(pending.num_rows, pool))
    sink = BankStageSink(bank, [(STAGE, "quality", KEY)])
    with progress_counter([STAGE], {STAGE: pending.num_rows}, cfg.mine.progress_s) as bar:
        ds = map_llm_stage(
            ds, judge_stage(cfg), judge_llm, endpoint, pool, cache_folder(cfg, bank), bar
        )
        ds.write_datasink(sink)
    counts.update(sink.counts)
    counts.update(_record_missing_sources(bank, pending.column(KEY), str(source)))
    return counts


def pending_personas(bank: str | Path) -> pa.Table:
    """Personas (id, narrative, attributes) with neither a judgement nor a judge failure."""
    personas = read_group(bank, "personas", [KEY, "narrative", "attributes"])
    judged = pa.array(sorted(done_ids(bank, "quality", failed_stage=STAGE)), pa.string())
    return personas.filter(pc.invert(pc.is_in(personas.column(KEY), value_set=judged)))


def _attach_personas(batch: pa.Table, personas: pa.Table) -> pa.Table:
    """Keep the history rows of pending personas and add the persona's columns to them."""
    positions = pc.index_in(batch.column("history_id"), value_set=personas.column(KEY))
    hit = pc.is_valid(positions)
    batch, positions = batch.filter(hit), positions.filter(hit)
    return (
        batch.append_column(KEY, batch.column("history_id"))
        .append_column("narrative", personas.column("narrative").take(positions))
        .append_column("attributes", personas.column("attributes").take(positions))
    )


def _record_missing_sources(bank: Path, pending: pa.ChunkedArray, source: str) -> Counter[str]:
    finished = pa.array(sorted(done_ids(bank, "quality", failed_stage=STAGE)), pa.string())
    missing = pending.filter(pc.invert(pc.is_in(pending, value_set=finished))).to_pylist()
    if not missing:
        return Counter()
    reason = f"source history not found in {source}"
    write_failures(bank, failure_rows(missing, STAGE, [reason] * len(missing), [0] * len(missing)))
    return Counter({f"{STAGE}:in": len(missing), f"{STAGE}:failed": len(missing)})


# ------------------------------------------------------------------------------ decisions


def apply_decisions(bank: str | Path, cfg: JudgeConfig) -> Counter[str]:
    """Threshold and duplicate flags over the whole bank; rows whose decision changed get a
    new `quality` row (the bank keeps the latest). Returns bank-wide counts."""
    quality = read_group(bank, "quality")
    counts: Counter[str] = Counter({"bank:judged": quality.num_rows})
    if quality.num_rows == 0:
        return counts
    ids = quality.column(KEY).to_pylist()
    scores = quality.column("quality").to_pylist()
    base = [decide(q, cfg.threshold, cfg.min_scores) for q in scores]
    duplicate_of = _duplicates(bank, ids, scores, cfg.dedup) if cfg.dedup.enabled else {}
    kept, reasons, dups = [], [], []
    for pid, (ok, reason) in zip(ids, base, strict=True):
        target = duplicate_of.get(pid)
        if target is not None:
            reason = "; ".join(r for r in (reason, f"near-duplicate of {target}") if r)
        kept.append(ok and target is None)
        reasons.append(reason)
        dups.append(target)
    changed = [
        i
        for i, old in enumerate(
            zip(
                quality.column("kept").to_pylist(),
                quality.column("reject_reason").to_pylist(),
                quality.column("duplicate_of").to_pylist(),
                strict=True,
            )
        )
        if old != (kept[i], reasons[i], dups[i])
    ]
    if changed:
        index = pa.array(changed)
        update = quality.take(index)
        for name, values in (("kept", kept), ("reject_reason", reasons), ("duplicate_of", dups)):
            column = pa.array([values[i] for i in changed], quality.schema.field(name).type)
            update = update.set_column(update.schema.get_field_index(name), name, column)
        write_group(bank, "quality", update)
    counts["bank:kept"] = sum(kept)
    counts["bank:below_threshold"] = sum(not ok for ok, _ in base)
    counts["bank:duplicates"] = len(duplicate_of)
    return counts


def _duplicates(
    bank: str | Path, ids: list[str], scores: list[dict[str, Any]], cfg: DedupConfig
) -> dict[str, str]:
    personas = read_group(bank, "personas", [KEY, "narrative"])
    positions = pc.index_in(pa.array(ids, pa.string()), value_set=personas.column(KEY))
    texts = personas.column("narrative").take(positions).to_pylist()
    sigs = dedup.signatures([t or "" for t in texts], cfg.num_perm, cfg.shingle)
    priority = [q["overall"] + float(np.mean([q[c] for c in CRITERIA])) / 10 for q in scores]
    return dedup.near_duplicates(ids, sigs, cfg.threshold, priority)
