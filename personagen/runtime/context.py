"""The run context: what one command's run shares, and the one way to run a stage over rows.

`RunContext` owns Ray start-up (once per process), the LLM endpoints (an embedded server is
started for the block that uses it and stopped after it), the response cache folder, the
provenance of every stage in the bank's manifest, progress, and the summary at the end.
`run_chain` streams a dataset through a chain of stages into a sink (`personagen mine`,
`personagen build`); `run_stage(ctx, stage, rows, group, endpoint)` runs one stage over rows the
driver holds into one bank group.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from personagen.config import Config, EmbedConfig, LLMConfig
from personagen.io.bank import Bank
from personagen.llm.client import Endpoint
from personagen.runtime.cluster import init_ray
from personagen.runtime.embed import map_embed_stage
from personagen.runtime.executors import Executor, executor_for
from personagen.runtime.executors.base import PoolSettings, Step
from personagen.runtime.executors.endpoint import EndpointExecutor, pool_settings, rows_per_block
from personagen.runtime.progress import progress_counter
from personagen.runtime.provenance import cache_folder, finish_run, record_stage
from personagen.runtime.sinks import PartSink, stage_split
from personagen.runtime.summary import Summary
from personagen.stages.base import Stage


class RunContext:
    def __init__(self, cfg: Config, bank: Bank | str | Path, command: str) -> None:
        self.cfg = cfg
        self.bank = bank if isinstance(bank, Bank) else Bank(bank)
        self.command = command
        self.started = time.perf_counter()

    def start_ray(self) -> None:
        init_ray(self.cfg.ray)

    def llm(self, stage: str) -> LLMConfig:
        """The LLM settings of `stage` (see `Config.stage_llm`)."""
        return self.cfg.stage_llm(stage)

    @property
    def executor(self) -> Executor:
        """The executor of `llm.engine`, for stages inside a build's stream."""
        return executor_for(self.cfg.llm.engine)

    @contextlib.contextmanager
    def endpoints(self, stages: list[str], *, stream: bool = False) -> Iterator[list[Endpoint]]:
        """The endpoints of `stages`, which run side by side, for the block (an embedded
        server each, see `llm_endpoints`). Only a build's stream (`stream`) runs on
        `llm.engine`; every other step sends requests to an endpoint."""
        executor = self.executor if stream else EndpointExecutor()
        with executor.endpoints([self.llm(stage) for stage in stages]) as endpoints:
            yield endpoints

    @property
    def cache_dir(self) -> str | None:
        return cache_folder(self.cfg, self.bank.path)

    def record(self, stage: Stage, endpoint: Endpoint) -> None:
        """The stage's provenance in the bank's manifest."""
        record_stage(
            self.bank.path,
            stage.name,
            self.llm(stage.name),
            endpoint,
            stage.prompt_version,
            **stage.provenance,
        )

    def progress(
        self, stages: list[str], totals: dict[str, int] | None
    ) -> contextlib.AbstractContextManager[Any]:
        """A progress ledger for `stages` (see `progress_counter`)."""
        return progress_counter(stages, totals, self.cfg.progress_s)

    def pool(
        self, stage: Stage, endpoint: Endpoint, rows: int, actors: int | None = None
    ) -> PoolSettings:
        """The actor pool of `stage` sending `rows` rows' requests to `endpoint` (its own
        `pools.<stage>` settings, else `actors`, else the defaults of `pool_settings`, which
        may ask Ray for the cluster's CPUs)."""
        self.start_ray()
        return pool_settings(
            self.llm(stage.name),
            endpoint,
            rows,
            self.cfg.pools.of(stage.name),
            stage.requests_per_row,
            actors,
        )

    def map(
        self,
        ds: Any,
        stage: Stage,
        endpoint: Endpoint,
        *,
        rows: int,
        progress: Any = None,
        actors: int | None = None,
        stream: bool = False,
    ) -> Any:
        """Add `stage` to the dataset `ds`, its provenance recorded: on `llm.engine`'s executor
        in a build's stream (`stream`), else through the endpoint."""
        self.record(stage, endpoint)
        executor = self.executor if stream else EndpointExecutor()
        pool = self.pool(stage, endpoint, rows, actors)
        step = Step(stage, endpoint, self.llm(stage.name), pool, self.cache_dir, progress)
        return executor.map(ds, step)

    def finish(self, summary: Summary, *, record: bool = True) -> Summary:
        """Check the summary's counts and time it; with `record`, add its usage to the bank's
        manifest and write BANK/summary-<command>.json."""
        summary.wall_s = time.perf_counter() - self.started
        if record:
            finish_run(self.bank.path, summary, self.cfg)
        else:
            summary.check()
        return summary


def run_chain(
    ctx: RunContext,
    source: Callable[[Any], Any],
    chain: Iterable[tuple[Stage, Endpoint]],
    sink: PartSink,
    *,
    names: list[str],
    rows: int,
    block_rows: int,
    totals: dict[str, int] | None,
    actors: int | None = None,
    stream: bool = False,
    embed: EmbedConfig | None = None,
    embed_cpus: float | None = None,
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Stream `source(ledger)` (a dataset; `ledger` is the progress actor, for counts that come
    before the stages) in blocks of `block_rows` through the stages of `chain` (taken one by
    one, so a stage that cannot run stops the chain before it), and with `embed` the embed step
    after mining, into `sink`. `names` are the stages the progress lines show, `totals` their
    totals (None: the rows that entered the stream so far); `rows` sizes the pools. Returns the
    ledger's counters and records."""
    import ray

    ctx.start_ray()
    with ctx.progress(names, totals) as ledger:
        ds = source(ledger).repartition(target_num_rows_per_block=block_rows)
        for stage, endpoint in chain:
            ds = ctx.map(
                ds, stage, endpoint, rows=rows, progress=ledger, actors=actors, stream=stream
            )
        if embed is not None:
            ds = map_embed_stage(
                ds,
                embed,
                after="mine",
                progress=ledger,
                actor_cpus=embed_cpus,
                batch_size=block_rows,
            )
        ds.write_datasink(sink)
        return ray.get(ledger.records.remote())


def run_stage(
    ctx: RunContext, stage: Stage, rows: pa.Table, group: str, endpoint: Endpoint
) -> Counter[str]:
    """Run one stage over rows the driver holds (e.g. a bank's pending personas) into one bank
    group and `failures`, through an endpoint; returns the sink's counters."""
    import ray

    pool = ctx.pool(stage, endpoint, rows.num_rows)
    instrument = stage.provenance.get("instrument")
    split = stage_split(
        [(stage.name, group, stage.id_column)],
        instruments={stage.name: instrument} if instrument else None,
    )
    sink = PartSink(ctx.bank.path, split, group)
    run_chain(
        ctx,
        lambda _: ray.data.from_arrow(rows),
        [(stage, endpoint)],
        sink,
        names=[stage.name],
        rows=rows.num_rows,
        block_rows=rows_per_block(rows.num_rows, pool),
        totals={stage.name: rows.num_rows},
    )
    return sink.counts
