"""The run context: what one command's run shares, and the one way to run a stage over rows.

`RunContext` owns Ray start-up (once per process), the LLM endpoints (an embedded server is
started for the block that uses it and stopped after it), the response cache folder, the
provenance of every stage in the bank's manifest, progress, and the summary at the end.
`run_chain` streams a dataset through a chain of stages into a sink (`personagen mine`,
`personagen build`); `run_stage(ctx, stage, rows, group, endpoint)` runs one stage over rows the
driver holds into one bank group.

A run context is also the bank's one writer: it takes the bank's lock when it is made (see
`personagen.io.lock`; a second command on the same bank is refused) and holds it for its life,
i.e. until the command that made it returns (every write done), fails, or its process ends.
`finish` is where every command ends, so it is where a run in which every row of a stage failed
becomes an error (`RunFailed`, exit status 1) that names the dominant reason and the setting to
look at.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from personagen.config import LLM_STAGES, Config, EmbedConfig, LLMConfig
from personagen.errors import RunFailed
from personagen.io.bank import Bank
from personagen.io.lock import lock_bank, unlock_bank
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
from personagen.stages.base import DrivenStage, Stage

FIXES = {
    "connection error": "is the endpoint up? check llm.base_url",
    "timeout": "raise llm.timeout_s, or lower llm.concurrency",
    "HTTP 401": "put the API key in the variable that llm.api_key_env names",
    "HTTP 403": "put the API key in the variable that llm.api_key_env names",
    "HTTP 404": "check llm.base_url and llm.model",
    "HTTP 429": "lower llm.concurrency",
    "invalid answer": "raise llm.max_tokens, or choose a model that follows the schema (llm.model)",
    "vLLM engine error": "check llm.vllm.max_model_len and llm.model",
}
"""The settings to look at when every row of a stage failed, by the failures' dominant kind."""


def fix_for(kind: str) -> str:
    """The settings to look at for failures of `kind` (see `FIXES`)."""
    if kind in FIXES:
        return FIXES[kind]
    if kind.startswith("HTTP 4"):
        return "check llm.model, llm.max_tokens and llm.response_format"
    if kind.startswith("HTTP 5"):
        return "check the server's log, llm.base_url and llm.model"
    return "check llm.base_url and llm.model"


class RunContext:
    def __init__(self, cfg: Config, bank: Bank | str | Path, command: str) -> None:
        self.cfg = cfg
        self.bank = bank if isinstance(bank, Bank) else Bank(bank)
        self.command = command
        self.started = time.perf_counter()
        self.began = datetime.now(timezone.utc)
        lock_bank(self.bank.path, command)
        weakref.finalize(self, unlock_bank, self.bank.path)
        self._formats: dict[tuple[str, str], str] = {}

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

    def negotiated(self, executor: Executor, stage: Stage, endpoint: Endpoint) -> LLMConfig:
        """The LLM settings of `stage` as `endpoint` takes them (`Executor.negotiate`): found
        out once per endpoint and model in a run, whichever stages share them. A driven stage
        (per-item scoring) asks for no structured output: nothing to find out for it."""
        llm = self.llm(stage.name)
        if isinstance(stage, DrivenStage):
            return llm
        known = (endpoint.identity, llm.model)
        if known not in self._formats:
            negotiated = executor.negotiate(llm, endpoint, self.cache_dir)
            self._formats[known] = negotiated.response_format
        return llm.model_copy(update={"response_format": self._formats[known]})

    def record(self, stage: Stage, endpoint: Endpoint, llm: LLMConfig) -> None:
        """The stage's provenance in the bank's manifest."""
        record_stage(
            self.bank.path,
            stage.name,
            llm,
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
        executor = self.executor if stream else EndpointExecutor()
        llm = self.negotiated(executor, stage, endpoint)
        self.record(stage, endpoint, llm)
        pool = self.pool(stage, endpoint, rows, actors)
        step = Step(stage, endpoint, llm, pool, self.cache_dir, progress)
        return executor.map(ds, step)

    @property
    def elapsed_s(self) -> float:
        """Seconds since the run began (its summary's and its manifest's wall time)."""
        return time.perf_counter() - self.started

    def finish(self, summary: Summary, *, record: bool = True) -> Summary:
        """Check the summary's counts and time it; with `record`, add its usage to the bank's
        manifest and write BANK/summary-<command>.json. Raises `RunFailed` when every row of a
        stage failed (they are all in the bank's failures by then)."""
        summary.wall_s = self.elapsed_s
        if record:
            finish_run(self.bank.path, summary, self.cfg)
        else:
            summary.check()
        failed = summary.failed_stage()
        if failed is not None:
            raise RunFailed(self._failed(summary, *failed))
        return summary

    def _failed(self, summary: Summary, stage: str, kinds: Counter[str]) -> str:
        """One line: the stage, its rows, the dominant reason (as this run's failures of that
        kind most often give it) and, for an LLM stage, the setting to look at."""
        rows = summary.counts[f"{stage}:in"]
        kind, count = kinds.most_common(1)[0] if kinds else ("", rows)
        failures = self.bank.failures(stage)
        reasons = failures.filter(pc.greater_equal(failures["time"], pa.scalar(self.began)))
        texts = Counter(r for r in reasons["reason"].to_pylist() if r.startswith(kind))
        reason = texts.most_common(1)[0][0][:300] if texts else kind or "no reason recorded"
        fix = fix_for(kind) if stage in LLM_STAGES else "each row's reason is there"
        return (
            f"{stage}: all {rows} rows failed, {count} of them with {reason} (every row is in "
            f"{self.bank.path / 'failures'}); {fix}"
        )


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
