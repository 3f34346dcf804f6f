"""The OpenAI-endpoint executor: stages run in a Ray Data actor pool of `LLMClient`s.

`StageActor` runs any stage (`personagen.stages.base`) with one `LLMClient` (and response-cache
connection) per actor, `map_batches` with an async `__call__`, so each actor keeps its pool's
concurrency of requests in flight. The endpoint is `llm.base_url` (OpenAI, vLLM's server, any
OpenAI-compatible server), or an embedded llama.cpp server started here and stopped at the end.
Actors that talk to an embedded server are pinned to its node: it listens on loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from pydantic import SecretStr

from personagen.config import LLMConfig, PoolConfig
from personagen.errors import PersonagenError
from personagen.llm.cache import ResponseCache, host_cache_path
from personagen.llm.client import Endpoint, LLMClient, negotiate_format
from personagen.llm.server import EmbeddedServer, install_handlers
from personagen.runtime.cluster import available_cpus
from personagen.runtime.executors.base import PoolSettings, Step
from personagen.stages.base import Stage, answer_row, append_results, output_schema, progress_counts

PROGRESS_EVERY_S = 2.0
"""Longest wait between two progress reports of an actor while it works on a batch."""


# ---------------------------------------------------------------------------- endpoints


@contextlib.contextmanager
def llm_endpoint(cfg: LLMConfig) -> Iterator[Endpoint]:
    """The endpoint to send requests to: `llm.base_url` if set, else a freshly started embedded
    server that is stopped when the block exits (normally, on error, or on Ctrl-C)."""
    if cfg.engine == "ray-vllm":
        raise PersonagenError(
            "llm.engine=ray-vllm runs the stream of `personagen build` (and jobs/build_bank.py) "
            "only; this step sends requests to an endpoint: use llm.engine=openai"
        )
    if cfg.base_url:
        yield Endpoint.remote(cfg.base_url)
        return
    install_handlers()
    with EmbeddedServer(cfg.embedded, cfg.model) as server:
        yield server.endpoint


@contextlib.contextmanager
def llm_endpoints(cfgs: list[LLMConfig]) -> Iterator[list[Endpoint]]:
    """Endpoints for stages that run side by side (e.g. miner and judge): each stage that
    leaves `base_url` unset gets its own embedded server.

    llama-cpp-python's server answers one request at a time and keeps one prompt prefix: shared,
    the stages would queue behind each other and evict each other's cached prefix (a scoring
    request then re-reads the whole persona after every mining request). Separate servers use
    the cores side by side, their threads split so that together they take half of them.
    """
    embedded = [cfg for cfg in cfgs if not cfg.base_url]
    threads = max(1, (os.cpu_count() or 2) // (2 * max(1, len(embedded))))
    with contextlib.ExitStack() as stack:
        endpoints = []
        for cfg in cfgs:
            if cfg.base_url is None and cfg.embedded.n_threads is None:
                cfg = cfg.model_copy(
                    update={"embedded": cfg.embedded.model_copy(update={"n_threads": threads})}
                )
            endpoints.append(stack.enter_context(llm_endpoint(cfg)))
        yield endpoints


# ---------------------------------------------------------------------------- pools


def pool_settings(
    llm: LLMConfig,
    endpoint: Endpoint,
    rows: int,
    pool: PoolConfig,
    requests_per_row: int = 1,
    actors: int | None = None,
) -> PoolSettings:
    """A stage's pool from its own `pools.<stage>` settings, else the defaults: `actors` (the
    caller's default), else one actor for the embedded server (it answers one request at a
    time), otherwise one per CPU (no more than there are batches). Batches: half the
    concurrency, so that the batches an actor runs at once keep its request slots busy; for a
    stage of many requests per row, enough rows to fill the slots twice (measured in
    benchmarks/bench_score.py: 1 persona per call reached ~10% less than 2 or 4)."""
    default = llm.embedded.concurrency if endpoint.embedded else llm.concurrency
    concurrency = pool.concurrency or default
    if pool.batch_size:
        size = pool.batch_size
    elif requests_per_row > 1:
        size = 2 * math.ceil(concurrency / requests_per_row)
    else:
        size = max(4, concurrency // 2)
    count = pool.actors or actors
    if count is None:
        count = 1 if endpoint.embedded else min(available_cpus(), math.ceil(max(rows, 1) / size))
    return PoolSettings(max(1, count), concurrency, size, pool.actor_cpus)


def rows_per_block(rows: int, pool: PoolSettings, max_blocks: int = 1000) -> int:
    """Rows per input block: a few batches each, at least two blocks per actor (so every actor
    has work and the next block is ready), at most `max_blocks` blocks (each block ends as one
    Parquet part per bank group)."""
    blocks = max(2 * pool.actors, math.ceil(rows / (8 * pool.batch_size)))
    blocks = max(1, min(blocks, max_blocks, rows))
    return max(1, math.ceil(rows / blocks))


# ---------------------------------------------------------------------------- the actor


class StageActor:
    """Ray Data actor: one `LLMClient` (and cache connection) per actor, rows processed
    concurrently within and across batches, bounded by the client's concurrency."""

    def __init__(
        self,
        stage: Stage,
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
        self._worker = f"{os.getpid()}:{id(self)}"
        self._calls = 0
        self._ticker: asyncio.Future[None] | None = None

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
        self._calls += 1
        if self.progress is not None and (self._ticker is None or self._ticker.done()):
            self._ticker = asyncio.ensure_future(self._tick())
        try:
            results = await asyncio.gather(*(self._one(row) for row in rows))
        finally:
            self._calls -= 1
        self._report(flush=True)
        return append_results(batch, output_schema(self.stage), results)

    async def _tick(self) -> None:
        """Report every PROGRESS_EVERY_S while batches run, whether or not rows finish: a run
        whose requests all wait must show it."""
        while self._calls:
            await asyncio.sleep(PROGRESS_EVERY_S)
            self._report(flush=False)

    async def _one(self, row: dict[str, Any]) -> dict[str, Any]:
        result = await answer_row(self.stage, self.client(), row)
        self._unreported.update(progress_counts(self.stage.name, [result]))
        self._report(flush=False)
        return result

    def _report(self, flush: bool) -> None:
        """Row counts and the client's requests in flight (`AdaptiveLimit.snapshot`) to the
        progress ledger: at the end of a batch, and at most every PROGRESS_EVERY_S seconds in
        between (a batch of slow requests may take minutes)."""
        now = time.monotonic()
        if self.progress is None or (not flush and now - self._reported_at < PROGRESS_EVERY_S):
            return
        if self._unreported:
            self.progress.add.remote(dict(self._unreported))
            self._unreported.clear()
        if self._client is not None:
            self.progress.level.remote(self.stage.name, self._worker, self._client.limit.snapshot())
        self._reported_at = now


def map_actor_pool(ds: Any, step: Step) -> Any:
    """Add the step's stage to the Ray dataset `ds` as an actor pool of `StageActor`s.

    The API key is read here, on the driver, and handed to the actors as a `SecretStr` (masked in
    any repr), so workers on other nodes need no copy of the environment variable.
    """
    import ray

    key = step.llm.api_key()
    here = {"ray.io/node-id": ray.get_runtime_context().get_node_id()}
    return ds.map_batches(
        StageActor,
        fn_constructor_kwargs={
            "stage": step.stage,
            "llm": step.llm,
            "endpoint": step.endpoint,
            "api_key": SecretStr(key) if key else None,
            "cache_dir": step.cache_dir,
            "concurrency": step.pool.concurrency,
            "progress": step.progress,
        },
        batch_size=step.pool.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=step.pool.actors, max_concurrent_calls_per_actor=2),
        num_cpus=step.pool.actor_cpus,
        label_selector=here if step.endpoint.embedded else None,
    )


class EndpointExecutor:
    """`llm.engine: openai`: requests to an OpenAI-compatible endpoint from an actor pool."""

    def endpoints(self, llms: list[LLMConfig]) -> contextlib.AbstractContextManager:
        return llm_endpoints(llms)

    def negotiate(self, llm: LLMConfig, endpoint: Endpoint, cache_dir: str | None) -> LLMConfig:
        """`llm` with the structured-output mode the endpoint takes, where `auto` leaves it to
        the endpoint: probed (`negotiate_format`) for a served endpoint; the embedded server's
        is known (JSON mode with the schema, which llama-cpp-python enforces)."""
        if llm.response_format != "auto" or endpoint.embedded:
            return llm
        cache = ResponseCache(host_cache_path(cache_dir)) if cache_dir else None
        try:
            mode = asyncio.run(negotiate_format(llm, endpoint, api_key=llm.api_key(), cache=cache))
        finally:
            if cache is not None:
                cache.close()
        return llm.model_copy(update={"response_format": mode})

    def map(self, ds: Any, step: Step) -> Any:
        return map_actor_pool(ds, step)
