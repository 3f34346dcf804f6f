"""Ray Data wiring shared by the LLM stages (mine, judge, and later score and revise).

A stage is an `LLMStage`: a name, the columns it adds, and an async function that turns one row
into those columns with an `LLMClient`. `LLMStageActor` runs it in a Ray Data actor pool
(`map_batches` with an async `__call__`, so each actor keeps `llm.concurrency` requests in
flight). Each output row carries, besides the stage's columns:

    <stage>__error     null, or why the row failed (it is then recorded in `failures`)
    <stage>__attempts  requests made for the row (retries and repairs included) + cache hits
    <stage>__<usage>   the row's token accounting (see `personagen.llm.usage.Usage`)

Stages chain (mine -> judge -> score): a row that failed an earlier stage, or that a stage's
`wants` predicate declines (e.g. scoring only the personas the judge kept), passes through a
later one untouched (its `<stage>__attempts` stays null). `BankStageSink` then writes each
stage's successful rows to its bank group and its failed rows to `failures`, and returns the
counters that make up the run summary (`<stage>:in = <stage>:out + <stage>:failed`, declined
rows as `<stage>:skipped`, plus usage).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import SecretStr
from ray.data import Datasink
from ray.data.block import BlockAccessor

from personagen.config import LLMConfig, MineConfig
from personagen.io.bank import GROUPS, KEY, conform_group, failure_rows, write_part
from personagen.io.histories import HISTORY_COLUMNS
from personagen.llm.cache import ResponseCache, host_cache_path
from personagen.llm.client import Endpoint, LLMClient, LLMRequestError
from personagen.llm.structured import OutputError
from personagen.llm.usage import USAGE_FIELDS, Usage
from personagen.logs import mask_secrets

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 2.0
"""Longest wait between two progress reports of an LLM actor while it works on a batch."""

RowFn = Callable[[LLMClient, dict[str, Any], Usage, Any], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class LLMStage:
    """One LLM stage: `process(client, row, usage, params)` returns the row's new columns."""

    name: str
    process: RowFn
    columns: pa.Schema
    params: Any
    id_column: str = KEY
    after: str | None = None
    """The stage whose failed (or skipped) rows this one skips."""
    wants: Callable[[dict[str, Any], Any], bool] | None = None
    """`wants(row, params)`: whether this stage takes the row at all (None: every row)."""

    def error_column(self) -> str:
        return f"{self.name}__error"

    def extra_schema(self) -> pa.Schema:
        fields = [
            *self.columns,
            pa.field(self.error_column(), pa.string()),
            pa.field(f"{self.name}__attempts", pa.int32()),
            *[pa.field(f"{self.name}__{name}", pa.int64()) for name in USAGE_FIELDS],
        ]
        return pa.schema(fields)


def row_failure(exc: BaseException) -> str:
    """A failed row's reason, one line, secrets masked."""
    if isinstance(exc, OutputError):
        text = str(exc)
    elif isinstance(exc, LLMRequestError):
        text = exc.reason
    else:
        text = f"{type(exc).__name__}: {exc}"
    return mask_secrets(" ".join(text.split()))[:1000]


class LLMStageActor:
    """Ray Data actor: one `LLMClient` (and cache connection) per actor, rows processed
    concurrently within and across batches, bounded by the client's concurrency."""

    def __init__(
        self,
        stage: LLMStage,
        llm: LLMConfig,
        endpoint: Endpoint,
        api_key: SecretStr | None,
        cache_dir: str | None,
        concurrency: int,
        progress: Any = None,
    ) -> None:
        self.stage = stage
        self.llm = llm
        self.endpoint = endpoint
        self.api_key = api_key
        self.cache = ResponseCache(host_cache_path(cache_dir)) if cache_dir else None
        self.concurrency = concurrency
        self.progress = progress
        self._client: LLMClient | None = None
        self._unreported: Counter[str] = Counter()
        self._reported_at = time.monotonic()

    def client(self) -> LLMClient:
        if self._client is None:  # created on the event loop that will use it
            self._client = LLMClient(
                self.llm,
                self.endpoint,
                api_key=self.api_key,
                cache=self.cache,
                concurrency=self.concurrency,
            )
        return self._client

    async def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        results = await asyncio.gather(*(self._one(row) for row in rows))
        self._report(flush=True)
        return append_results(batch, self.stage.extra_schema(), results)

    async def _one(self, row: dict[str, Any]) -> dict[str, Any]:
        taken = takes_row(self.stage, row)
        result = await run_row(self.stage, self.client(), row) if taken else {}
        self._unreported.update(progress_counts(self.stage.name, [result]))
        self._report(flush=False)
        return result

    def _report(self, flush: bool) -> None:
        """Row counts to the progress ledger: at the end of a batch, and at most every
        PROGRESS_EVERY_S seconds in between (a batch of slow requests may take minutes)."""
        if self.progress is None or not self._unreported:
            return
        now = time.monotonic()
        if flush or now - self._reported_at >= PROGRESS_EVERY_S:
            self.progress.add.remote(dict(self._unreported))
            self._unreported.clear()
            self._reported_at = now


def takes_row(stage: LLMStage, row: dict[str, Any]) -> bool:
    """Whether `stage` processes `row`: it passed the stage before, and the stage wants it."""
    if stage.after is not None and (
        row.get(f"{stage.after}__error") is not None or row.get(f"{stage.after}__attempts") is None
    ):
        return False
    return stage.wants is None or stage.wants(row, stage.params)


async def run_row(stage: LLMStage, client: Any, row: dict[str, Any]) -> dict[str, Any]:
    """The stage's columns for one row it takes: its output, or its failure reason; with the
    attempts and the token usage. `client` is an `LLMClient` or anything with its methods."""
    usage = Usage()
    out: dict[str, Any]
    try:
        out = await stage.process(client, row, usage, stage.params)
        out[stage.error_column()] = None
    except (OutputError, LLMRequestError) as exc:
        out = {stage.error_column(): row_failure(exc)}
    except Exception as exc:  # a bug or bad row must cost one row, not the run
        log.exception("%s failed on %s", stage.name, row.get(stage.id_column))
        out = {stage.error_column(): row_failure(exc)}
    out[f"{stage.name}__attempts"] = usage.requests + usage.cache_hits
    for name in USAGE_FIELDS:
        out[f"{stage.name}__{name}"] = getattr(usage, name)
    return out


def append_results(batch: pa.Table, schema: pa.Schema, results: list[dict[str, Any]]) -> pa.Table:
    for field in schema:
        values = [result.get(field.name) for result in results]
        batch = batch.append_column(field, pa.array(values, type=field.type))
    return batch


def progress_counts(stage: str, results: list[dict[str, Any]]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for result in results:
        if not result:  # a row the stage passed over
            counts[f"{stage}:skipped"] += 1
            continue
        counts[f"{stage}:rows"] += 1
        counts[f"{stage}:failed"] += result.get(f"{stage}__error") is not None
        for name in USAGE_FIELDS:
            counts[f"{stage}:{name}"] += result.get(f"{stage}__{name}") or 0
    return dict(counts)


# ---------------------------------------------------------------------------------- the sink


Plan = list[tuple[str, ...]]
"""(stage, bank group, id column[, after]) in stage order: where each stage's rows go, which
column names a failed row in `failures`, and which earlier stage a row must have passed to reach
this one (default: the stage before it; `None` as the fourth element: every row)."""


def split_stage_rows(
    table: pa.Table, plan: Plan
) -> tuple[dict[str, pa.Table], pa.Table | None, Counter[str]]:
    """Route one block: for each stage in order, rows that reached the stage go to its group
    (success) or to failures (with the stage's reason and attempts)."""
    counts: Counter[str] = Counter()
    everyone = pa.array([True] * table.num_rows)
    passed: dict[str | None, pa.Array] = {None: everyone}
    groups: dict[str, pa.Table] = {}
    failures = []
    previous: str | None = None
    for stage, group, id_column, *gate in plan:
        alive = passed[gate[0] if gate else previous]
        errors = table.column(f"{stage}__error")
        taken = pc.and_(alive, pc.is_valid(table.column(f"{stage}__attempts")))
        ok = pc.and_(taken, pc.is_null(errors))
        failed = pc.and_(taken, pc.is_valid(errors))
        counts[f"{stage}:in"] += pc.sum(taken).as_py() or 0
        counts[f"{stage}:out"] += pc.sum(ok).as_py() or 0
        counts[f"{stage}:failed"] += pc.sum(failed).as_py() or 0
        skipped = pc.sum(pc.and_(alive, pc.invert(taken))).as_py() or 0
        if skipped:
            counts[f"{stage}:skipped"] += skipped
        reached = table.filter(taken)
        for name in USAGE_FIELDS:
            counts[f"{stage}:{name}"] += pc.sum(reached.column(f"{stage}__{name}")).as_py() or 0
        bad = table.filter(failed)
        for reason in bad.column(f"{stage}__error").to_pylist():
            counts[f"{stage}:failed:{_reason_kind(reason)}"] += 1
        if bad.num_rows:
            failures.append(
                failure_rows(
                    bad.column(id_column).to_pylist(),
                    stage,
                    bad.column(f"{stage}__error").to_pylist(),
                    bad.column(f"{stage}__attempts").to_pylist(),
                )
            )
        groups[group] = conform_group(table.filter(ok), group)
        passed[stage] = ok
        previous = stage
    failed_table = pa.concat_tables(failures) if failures else None
    return groups, failed_table, counts


def history_part(table: pa.Table, plan: Plan) -> pa.Table:
    """The columns of `table` that came in with the history rows (no stage's output)."""
    added = {name for _, group, *_ in plan for name in GROUPS[group].names}
    added -= set(HISTORY_COLUMNS.names)
    prefixes = tuple(f"{step[0]}__" for step in plan)
    return table.select(
        [n for n in table.column_names if n not in added and not n.startswith(prefixes)]
    )


def _reason_kind(reason: str) -> str:
    """A short class of a failure reason, for the summary (e.g. 'HTTP 400', 'timeout')."""
    for kind in ("invalid answer", "timeout", "connection error"):
        if reason.startswith(kind):
            return kind
    if reason.startswith("HTTP "):
        return reason.split(":", 1)[0]
    return reason.split(":", 1)[0][:40]


class BankStageSink(Datasink[dict[str, Any]]):
    """Writes stage rows into the bank: one part per group and per write task, failed rows into
    `failures`; the counters of all tasks add up in `counts` on the driver. With
    `history_columns`, every row's history columns (those no stage added) also go to
    BANK/histories, so the bank keeps the posts its personas were mined from."""

    def __init__(self, bank: str | Path, plan: Plan, history_columns: bool = False) -> None:
        self.bank = str(bank)
        self.plan = plan
        self.history_columns = history_columns
        self.counts: Counter[str] = Counter()

    def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, int]:
        counts: Counter[str] = Counter()
        parts: dict[str, list[pa.Table]] = {}
        failures: list[pa.Table] = []
        for block in blocks:
            table = BlockAccessor.for_block(block).to_arrow()
            if table.num_rows == 0:
                continue
            groups, failed, block_counts = split_stage_rows(table, self.plan)
            counts.update(block_counts)
            if self.history_columns:
                parts.setdefault("histories", []).append(history_part(table, self.plan))
            for group, rows in groups.items():
                parts.setdefault(group, []).append(rows)
            if failed is not None:
                failures.append(failed)
        for group, tables in parts.items():
            write_part(Path(self.bank) / group, pa.concat_tables(tables))
        if failures:
            write_part(Path(self.bank) / "failures", pa.concat_tables(failures))
        return dict(counts)

    def on_write_complete(self, write_result: Any) -> None:
        for result in write_result.write_returns:
            self.counts.update(result)

    def get_name(self) -> str:
        return f"WriteBank({'+'.join(step[1] for step in self.plan)})"


# ---------------------------------------------------------------------------------- wiring


@dataclass(frozen=True)
class PoolSettings:
    """How an LLM stage's actor pool is sized: actors x concurrency requests in flight."""

    actors: int
    concurrency: int
    batch_size: int
    actor_cpus: float


def pool_settings(
    llm: LLMConfig,
    endpoint: Endpoint,
    rows: int,
    pools: MineConfig,
    *,
    actors: int | None = None,
    batch_size: int | None = None,
) -> PoolSettings:
    """An LLM stage's pool: `actors` and `batch_size` where the stage sets its own, else those of
    the `mine` section (`pools`, whose settings every LLM stage shares), else the defaults: one
    actor for the embedded server (it answers one request at a time), otherwise one per CPU (no
    more than there are batches); batches of half the concurrency, so that the batches an actor
    runs at once keep its request slots busy."""
    from personagen.cluster import available_cpus

    concurrency = llm.embedded.concurrency if endpoint.embedded else llm.concurrency
    size = batch_size or pools.batch_size or max(4, concurrency // 2)
    actors = actors or pools.actors
    if actors is None:
        actors = 1 if endpoint.embedded else min(available_cpus(), math.ceil(max(rows, 1) / size))
    return PoolSettings(max(1, actors), concurrency, size, pools.actor_cpus)


def rows_per_block(rows: int, pool: PoolSettings, max_blocks: int = 1000) -> int:
    """Rows per input block: a few batches each, at least two blocks per actor (so every actor
    has work and the next block is ready), at most `max_blocks` blocks (each block ends as one
    Parquet part per bank group)."""
    blocks = max(2 * pool.actors, math.ceil(rows / (8 * pool.batch_size)))
    blocks = max(1, min(blocks, max_blocks, rows))
    return max(1, math.ceil(rows / blocks))


def map_llm_stage(
    ds: Any,
    stage: LLMStage,
    llm: LLMConfig,
    endpoint: Endpoint,
    pool: PoolSettings,
    cache_dir: str | None,
    progress: Any = None,
) -> Any:
    """Add `stage` to the Ray dataset `ds` as an actor pool of `LLMStageActor`s.

    The API key is read here, on the driver, and handed to the actors as a `SecretStr` (masked in
    any repr), so workers on other nodes need no copy of the environment variable. Actors that
    talk to the embedded server are pinned to this node: it listens on loopback only.
    """
    import ray

    key = llm.api_key()
    here = {"ray.io/node-id": ray.get_runtime_context().get_node_id()}
    return ds.map_batches(
        LLMStageActor,
        fn_constructor_kwargs={
            "stage": stage,
            "llm": llm,
            "endpoint": endpoint,
            "api_key": SecretStr(key) if key else None,
            "cache_dir": cache_dir,
            "concurrency": pool.concurrency,
            "progress": progress,
        },
        batch_size=pool.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=pool.actors, max_concurrent_calls_per_actor=2),
        num_cpus=pool.actor_cpus,
        label_selector=here if endpoint.embedded else None,
    )


def run_table_stage(
    table: pa.Table,
    stage: LLMStage,
    group: str,
    llm: LLMConfig,
    endpoint: Endpoint,
    pool: PoolSettings,
    bank: str | Path,
    cache_dir: str | None,
    progress_s: float,
) -> Counter[str]:
    """Run one LLM stage over rows the driver holds (e.g. a bank's pending personas) into one
    bank group; returns the sink's counters."""
    import ray

    from personagen.progress import progress_counter

    ds = ray.data.from_arrow(table)
    ds = ds.repartition(target_num_rows_per_block=rows_per_block(table.num_rows, pool))
    sink = BankStageSink(bank, [(stage.name, group, stage.id_column)])
    with progress_counter([stage.name], {stage.name: table.num_rows}, progress_s) as progress:
        ds = map_llm_stage(ds, stage, llm, endpoint, pool, cache_dir, progress)
        ds.write_datasink(sink)
    return sink.counts
