"""`personagen judge BANK`: judge the personas without a judgement, then decide over the bank.

The judge reads each persona with the posts it was mined from (from the histories the bank
records in its manifest, or `--histories`); personas whose history cannot be found are recorded
as failed. Then the decisions over the whole bank (threshold, per-criterion minimums,
near-duplicates; `personagen.stages.judge.decisions`) are brought up to date: rows whose
decision changed get a new `quality` row (the bank keeps the latest).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from personagen.commands.render import llm_rows
from personagen.config import Config, JudgeConfig
from personagen.errors import PersonagenError
from personagen.io.bank import KEY, Bank, failure_rows
from personagen.io.histories import histories_files, histories_schema
from personagen.llm.client import Endpoint
from personagen.runtime.context import RunContext, run_chain
from personagen.runtime.executors.endpoint import rows_per_block
from personagen.runtime.ingest import parquet_rows
from personagen.runtime.sinks import PartSink, stage_split
from personagen.runtime.summary import Summary
from personagen.stages.judge import STAGE, decisions, judge_stage


def judge(cfg: Config, bank: str | Path, histories: str | Path | None = None) -> Summary:
    """Judge every persona of `bank` that has no judgement yet (nor a failed one), then apply
    the threshold and duplicate detection to the whole bank."""
    ctx = RunContext(cfg, bank, STAGE)
    if not ctx.bank.has("personas"):
        raise PersonagenError(f"no personas in {ctx.bank.path} (run `personagen mine` first)")
    counts: Counter[str] = Counter()
    if pending_personas(ctx.bank).num_rows:
        with ctx.endpoints([STAGE]) as (endpoint,):
            counts = judge_pending(ctx, endpoint, histories)
    counts.update(apply_decisions(ctx.bank, cfg.judge))
    summary = Summary(STAGE, counts, [STAGE], rows=llm_rows([STAGE], counts))
    return ctx.finish(summary)


def judge_pending(
    ctx: RunContext, endpoint: Endpoint, histories: str | Path | None = None
) -> Counter[str]:
    """Judge the personas without a judgement (or a recorded judge failure), reading their
    posts from the histories. Personas whose history cannot be found are recorded as failed."""
    counts: Counter[str] = Counter()
    pending = pending_personas(ctx.bank)
    if pending.num_rows == 0:
        return counts
    source = histories or ctx.bank.manifest().get("histories")
    if not source:
        raise PersonagenError(
            f"bank {ctx.bank.path} does not record its histories; pass --histories (ingest output)"
        )
    files = histories_files(source)
    schema = histories_schema(files)
    stage = judge_stage(ctx.cfg)
    sink = PartSink(ctx.bank.path, stage_split([(STAGE, "quality", KEY)]), "quality")
    run_chain(
        ctx,
        lambda _: parquet_rows(files, schema, ["history_id", "posts"]).map_batches(
            attach_personas, fn_kwargs={"personas": pending}, batch_format="pyarrow"
        ),
        [(stage, endpoint)],
        sink,
        names=[STAGE],
        rows=pending.num_rows,
        block_rows=rows_per_block(pending.num_rows, ctx.pool(stage, endpoint, pending.num_rows)),
        totals={STAGE: pending.num_rows},
    )
    counts.update(sink.counts)
    counts.update(_record_missing_sources(ctx.bank, pending.column(KEY), str(source)))
    return counts


def pending_personas(bank: Bank) -> pa.Table:
    """Personas (id, narrative, attributes) with neither a judgement nor a judge failure."""
    personas = bank.read("personas", [KEY, "narrative", "attributes"])
    judged = bank.done("quality", failed_stage=STAGE)
    return personas.filter(pc.invert(pc.is_in(personas.column(KEY), value_set=judged)))


def attach_personas(batch: pa.Table, personas: pa.Table) -> pa.Table:
    """Keep the history rows of pending personas and add the persona's columns to them."""
    positions = pc.index_in(batch.column("history_id"), value_set=personas.column(KEY))
    hit = pc.is_valid(positions)
    batch, positions = batch.filter(hit), positions.filter(hit)
    return (
        batch.append_column(KEY, batch.column("history_id"))
        .append_column("narrative", personas.column("narrative").take(positions))
        .append_column("attributes", personas.column("attributes").take(positions))
    )


def _record_missing_sources(bank: Bank, pending: pa.ChunkedArray, source: str) -> Counter[str]:
    finished = bank.done("quality", failed_stage=STAGE)
    missing = pending.filter(pc.invert(pc.is_in(pending, value_set=finished))).to_pylist()
    if not missing:
        return Counter()
    reason = f"source history not found in {source}"
    bank.write_failures(failure_rows(missing, STAGE, [reason] * len(missing), [0] * len(missing)))
    return Counter({f"{STAGE}:in": len(missing), f"{STAGE}:failed": len(missing)})


def apply_decisions(bank: Bank, cfg: JudgeConfig) -> Counter[str]:
    """Threshold and duplicate flags over the whole bank; rows whose decision changed get a
    new `quality` row (the bank keeps the latest). Returns bank-wide counts."""
    quality = bank.read("quality")
    counts: Counter[str] = Counter({"bank:judged": quality.num_rows})
    if quality.num_rows == 0:
        return counts
    ids = quality.column(KEY).to_pylist()
    personas = bank.read("personas", [KEY, "narrative"])
    at = pc.index_in(quality.column(KEY), value_set=personas.column(KEY))
    decided = decisions(
        ids,
        quality.column("quality").to_pylist(),
        personas.column("narrative").take(at).to_pylist(),
        threshold=cfg.threshold,
        min_scores=cfg.min_scores,
        dedup_options=cfg.dedup,
    )
    new = list(zip(decided.kept, decided.reasons, decided.duplicate_of, strict=True))
    old = zip(
        quality.column("kept").to_pylist(),
        quality.column("reject_reason").to_pylist(),
        quality.column("duplicate_of").to_pylist(),
        strict=True,
    )
    changed = [i for i, row in enumerate(old) if row != new[i]]
    if changed:
        update = quality.take(pa.array(changed))
        for k, name in enumerate(("kept", "reject_reason", "duplicate_of")):
            column = pa.array([new[i][k] for i in changed], quality.schema.field(name).type)
            update = update.set_column(update.schema.get_field_index(name), name, column)
        bank.write("quality", update)
    counts["bank:kept"] = sum(decided.kept)
    counts["bank:below_threshold"] = decided.below_threshold
    counts["bank:duplicates"] = sum(d is not None for d in decided.duplicate_of)
    return counts
