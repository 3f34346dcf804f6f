"""Persona mining: one user history window -> a narrative persona + structured attributes.

`personagen mine HISTORIES --out BANK` streams the histories Parquet through Ray Data: rows not
yet in the bank (nor recorded as failed) go to an actor pool of LLM clients (the miner), then by
default to a second pool (the judge, see `personagen.judge`), and into the bank's `personas` and
`quality` groups; failed rows go to `failures` with the stage, the reason and the attempts.
A re-run skips finished rows, and answers obtained before an interruption come from the response
cache, so an interrupted run resumes without asking twice.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from personagen import judge as judging
from personagen.config import Config
from personagen.io.bank import ATTRIBUTES_TYPE, KEY, done_ids, read_manifest, update_manifest
from personagen.io.histories import histories_files, histories_schema
from personagen.llm.client import LLMClient
from personagen.llm.prompts import Prompt, load_prompt, posts_data
from personagen.llm.runs import RunSummary, cache_folder, finish_run, record_stage, stage_llm
from personagen.llm.usage import Usage
from personagen.redact import redact

log = logging.getLogger(__name__)

STAGE = "mine"
_NULLISH = {"", "null", "none", "unknown", "n/a", "na", "not specified", "unspecified"}
_NOT_META = {"history_id", "user_id", "window_id", "posts"}


# ------------------------------------------------------------------------------ the answer


def _clean_text(value: Any) -> Any:
    if isinstance(value, str):
        value = " ".join(value.split())
        return None if value.lower() in _NULLISH else value
    return value


class Attributes(BaseModel):
    """What the posts show; null (or an empty list) where they give no evidence."""

    age_range: str | None = None
    gender: str | None = None
    occupation: str | None = None
    location: str | None = None
    interests: list[str] = Field(default_factory=list)
    values: list[str] = Field(default_factory=list)

    @field_validator("age_range", "gender", "occupation", "location", mode="before")
    @classmethod
    def _nullish(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return _clean_text(value)

    @field_validator("interests", "values", mode="before")
    @classmethod
    def _phrases(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, list):
            return value
        seen: dict[str, None] = {}
        for item in value:
            text = _clean_text(item) if isinstance(item, str) else None
            if text:
                seen.setdefault(text, None)
        return list(seen)[:12]


NARRATIVE_MIN_CHARS = 200
"""In the answer schema too, so grammar-constrained decoders cannot return an empty narrative."""


class MinedPersona(BaseModel):
    """The miner's answer. The minimum narrative length in words comes from the validation
    context (`mine.min_words`)."""

    narrative: str = Field(min_length=NARRATIVE_MIN_CHARS)
    attributes: Attributes = Field(default_factory=Attributes)

    @field_validator("narrative")
    @classmethod
    def _long_enough(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        minimum = (info.context or {}).get("min_words", 1)
        words = len(value.split())
        if words < minimum:
            raise ValueError(f"the narrative has {words} words; write at least {minimum}")
        return value


def mine_prompt() -> Prompt:
    return load_prompt("mine", MinedPersona)


# ------------------------------------------------------------------------------ one row


@dataclass(frozen=True)
class MineParams:
    prompt: Prompt
    min_words: int
    redact_types: tuple[str, ...]
    meta_columns: tuple[str, ...] | None
    """History columns copied into `source_meta`; None = every column but the history's own."""


MINE_COLUMNS = pa.schema(
    [
        (KEY, pa.string()),
        ("narrative", pa.string()),
        ("attributes", ATTRIBUTES_TYPE),
        ("source_meta", pa.string()),
        ("model", pa.string()),
        ("prompt_version", pa.string()),
    ]
)


async def mine_row(
    client: LLMClient, row: dict[str, Any], usage: Usage, params: MineParams
) -> dict[str, Any]:
    """One history row -> the bank's `personas` columns (identifiers in the narrative are
    redacted like the posts were at ingest, should the model have invented any)."""
    messages = params.prompt.messages({"posts": posts_data(row["posts"])})
    persona = await client.structured(
        messages,
        MinedPersona,
        prompt_version=params.prompt.version,
        context={"min_words": params.min_words},
        usage=usage,
    )
    narrative = persona.narrative
    if params.redact_types:
        narrative, _ = redact(narrative, params.redact_types)
    names = params.meta_columns
    if names is None:
        names = tuple(name for name in row if name not in _NOT_META)
    meta = {name: row.get(name) for name in names}
    return {
        KEY: row["history_id"],
        "narrative": narrative,
        "attributes": persona.attributes.model_dump(),
        "source_meta": json.dumps(meta, ensure_ascii=False, default=str),
        "model": client.model,
        "prompt_version": params.prompt.version,
    }


# ------------------------------------------------------------------------------ the stage


def mine(
    histories: str | Path, bank: str | Path, cfg: Config, judge: bool | None = None
) -> RunSummary:
    """Mine personas for every history row not yet in `bank` (nor failed); judge them and flag
    near-duplicates unless `judge` (default `mine.judge`) is off."""
    from personagen.cluster import init_ray
    from personagen.llm.server import llm_endpoints

    start = time.perf_counter()
    bank = Path(bank).resolve()  # workers write there, and their working folder is not ours
    judge = cfg.mine.judge if judge is None else judge
    files = histories_files(histories)
    schema = histories_schema(files)
    source = str(Path(files[0]).parent)
    recorded = read_manifest(bank).get("histories")
    if recorded and recorded != source:
        log.warning("bank %s was mined from %s; now mining %s into it", bank, recorded, source)

    all_ids = pds.dataset(files, schema=schema).to_table(columns=["history_id"]).column(0)
    done = pa.array(sorted(done_ids(bank, "personas", failed_stage=STAGE)), pa.string())
    todo = int(pc.sum(pc.invert(pc.is_in(all_ids, value_set=done))).as_py() or 0)
    counts: Counter[str] = Counter(
        {"histories": len(all_ids), "mine:skipped_done": len(all_ids) - todo, "mine:todo": todo}
    )
    stages = ["mine", "judge"] if judge else ["mine"]
    update_manifest(bank, histories=source, config=cfg.masked())
    mine_llm = stage_llm(cfg, cfg.llm, cfg.mine.max_tokens)
    judge_llm = stage_llm(cfg, cfg.judge.endpoint(cfg.llm))
    if todo or (judge and judging.pending_personas(bank).num_rows):
        init_ray(cfg.ray)
        with llm_endpoints([mine_llm, judge_llm]) as (mine_ep, judge_ep):
            record_stage(bank, STAGE, mine_llm, mine_ep, mine_prompt().version)
            meta = tuple(n for n in schema.names if n not in _NOT_META)
            chain = [(mine_stage(cfg, meta), mine_llm, mine_ep)]
            if judge:
                judging.record_judge(bank, judge_llm, judge_ep)
                chain.append((judging.judge_stage(cfg, after=STAGE), judge_llm, judge_ep))
            if todo:
                counts.update(_stream(files, schema, done, todo, bank, cfg, chain))
            if judge:  # personas mined by an earlier run that stopped before judging them
                counts.update(judging.judge_pending(bank, cfg, judge_llm, judge_ep))
    if judge:
        counts.update(judging.apply_decisions(bank, cfg.judge))
    return _finish(bank, counts, stages, start, cfg)


def mine_stage(cfg: Config, meta_columns: tuple[str, ...] | None = None) -> Any:
    """The mining `LLMStage` (first in a chain: it reads history rows)."""
    from personagen.llm.stage import LLMStage

    params = MineParams(
        prompt=mine_prompt(),
        min_words=cfg.mine.min_words,
        redact_types=tuple(cfg.ingest.redact.types) if cfg.ingest.redact.enabled else (),
        meta_columns=meta_columns,
    )
    return LLMStage(STAGE, mine_row, MINE_COLUMNS, params, "history_id")


_GROUPS = {STAGE: ("personas", "history_id"), judging.STAGE: ("quality", KEY)}


def _stream(
    files: list[str],
    schema: pa.Schema,
    done: pa.Array,
    todo: int,
    bank: Path,
    cfg: Config,
    chain: list[tuple[Any, Any, Any]],
) -> Counter[str]:
    """histories -> (rows not done) -> LLM stage actor pools, in order -> the bank."""
    import ray

    from personagen.llm.stage import BankStageSink, map_llm_stage, pool_settings, rows_per_block
    from personagen.progress import progress_counter

    pools = [pool_settings(llm, endpoint, todo, cfg.mine) for _, llm, endpoint in chain]
    names = [stage.name for stage, _, _ in chain]
    sink = BankStageSink(bank, [(name, *_GROUPS[name]) for name in names])
    ds = ray.data.read_parquet(files, schema=schema)
    ds = ds.map_batches(_drop_done, fn_kwargs={"done": done}, batch_format="pyarrow")
    ds = ds.repartition(target_num_rows_per_block=rows_per_block(todo, pools[0]))
    with progress_counter(names, dict.fromkeys(names, todo), cfg.mine.progress_s) as progress:
        for (stage, llm, endpoint), pool in zip(chain, pools, strict=True):
            ds = map_llm_stage(ds, stage, llm, endpoint, pool, cache_folder(cfg, bank), progress)
        ds.write_datasink(sink)
    return sink.counts


def _finish(
    bank: Path, counts: Counter[str], stages: list[str], start: float, cfg: Config
) -> RunSummary:
    summary = RunSummary(counts, stages, time.perf_counter() - start)
    finish_run(bank, summary, cfg, STAGE)
    return summary


def _drop_done(batch: pa.Table, done: pa.Array) -> pa.Table:
    return batch.filter(pc.invert(pc.is_in(batch.column("history_id"), value_set=done)))
