"""`personagen mine HISTORIES --out BANK`: mine (and by default judge) personas from histories.

The histories Parquet streams through Ray Data: rows not yet in the bank (nor recorded as
failed) go to the miner's actor pool, then by default to the judge's, and into the bank's
`personas` and `quality` groups; failed rows go to `failures` with the stage, the reason and the
attempts. A re-run skips finished rows, and answers obtained before an interruption come from
the response cache, so an interrupted run resumes without asking twice. A bank holds the
personas of one histories dataset: mining other histories into it is refused (`--replace`
starts it over).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds

from personagen.commands.judge import apply_decisions, judge_pending, pending_personas
from personagen.commands.render import llm_rows
from personagen.config import Config
from personagen.io.bank import KEY
from personagen.io.histories import histories_files, histories_schema
from personagen.llm.client import Endpoint
from personagen.runtime.context import RunContext, run_chain
from personagen.runtime.executors.endpoint import rows_per_block
from personagen.runtime.ingest import parquet_rows
from personagen.runtime.sinks import PartSink, stage_split
from personagen.runtime.summary import Summary
from personagen.stages import judge as judging
from personagen.stages.base import Stage
from personagen.stages.mine import NOT_META, STAGE, mine_stage

GROUPS = {STAGE: ("personas", "history_id"), judging.STAGE: ("quality", KEY)}


def mine(cfg: Config, histories: str | Path, bank: str | Path, *, replace: bool = False) -> Summary:
    """Mine personas for every history row not yet in `bank` (nor failed); judge them and flag
    near-duplicates unless `mine.judge` is off. `replace` starts the bank over."""
    ctx = RunContext(cfg, bank, STAGE)
    files = histories_files(histories)
    schema = histories_schema(files)
    source = str(Path(files[0]).parent)
    if replace:
        ctx.bank.clear()
    ctx.bank.claim_origin("mined")
    ctx.bank.claim(
        STAGE,
        {"histories": source},
        lambda recorded: (
            f"bank {ctx.bank.path} holds personas mined from {recorded['histories']}, "
            f"not {source}: pass --replace to start it over from these histories, or choose "
            "another --out"
        ),
        held=ctx.bank.has("personas"),
    )
    all_ids = pds.dataset(files, schema=schema).to_table(columns=["history_id"]).column(0)
    done = ctx.bank.done("personas", failed_stage=STAGE)
    todo = int(pc.sum(pc.invert(pc.is_in(all_ids, value_set=done))).as_py() or 0)
    counts: Counter[str] = Counter(
        {"histories": len(all_ids), "mine:skipped_done": len(all_ids) - todo, "mine:todo": todo}
    )
    judge = cfg.mine.judge
    stages = [STAGE, judging.STAGE] if judge else [STAGE]
    ctx.bank.update_manifest(histories=source, config=cfg.masked())
    if todo or (judge and pending_personas(ctx.bank).num_rows):
        with ctx.endpoints([STAGE, judging.STAGE]) as (mine_ep, judge_ep):
            meta = tuple(n for n in schema.names if n not in NOT_META)
            chain = [(mine_stage(cfg, meta), mine_ep)]
            if judge:
                chain.append((judging.judge_stage(cfg, after=STAGE), judge_ep))
            if todo:
                counts.update(_stream(ctx, files, schema, done, todo, chain))
            if judge:  # personas mined by an earlier run that stopped before judging them
                counts.update(judge_pending(ctx, judge_ep))
    if judge:
        counts.update(apply_decisions(ctx.bank, cfg.judge))
    return ctx.finish(Summary(STAGE, counts, stages, rows=llm_rows(stages, counts)))


def _stream(
    ctx: RunContext,
    files: list[str],
    schema: pa.Schema,
    done: pa.Array,
    todo: int,
    chain: list[tuple[Stage, Endpoint]],
) -> Counter[str]:
    """histories -> (rows not done) -> the stages' actor pools, in order -> the bank."""
    names = [stage.name for stage, _ in chain]
    sink = PartSink(ctx.bank.path, stage_split([(n, *GROUPS[n]) for n in names]), "+".join(names))
    first, endpoint = chain[0]
    run_chain(
        ctx,
        lambda _: parquet_rows(files, schema).map_batches(
            drop_done, fn_kwargs={"done": done}, batch_format="pyarrow"
        ),
        chain,
        sink,
        names=names,
        rows=todo,
        block_rows=rows_per_block(todo, ctx.pool(first, endpoint, todo)),
        totals=dict.fromkeys(names, todo),
    )
    return sink.counts


def drop_done(batch: pa.Table, done: pa.Array) -> pa.Table:
    """The history rows of `batch` whose id is not in `done`."""
    return batch.filter(pc.invert(pc.is_in(batch.column("history_id"), value_set=done)))
