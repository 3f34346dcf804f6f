"""What every executor takes: a `Step` (one stage's place in a dataset), and the `Executor`
interface itself."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

from personagen.config import LLMConfig
from personagen.llm.client import Endpoint
from personagen.stages.base import Stage


@dataclass(frozen=True)
class PoolSettings:
    """How a stage's actor pool is sized: actors x concurrency requests in flight."""

    actors: int
    concurrency: int
    batch_size: int
    actor_cpus: float


@dataclass(frozen=True)
class Step:
    """One stage in a dataset: where its requests go and with which settings, its actor pool
    (for executors that run one), the response cache folder, the progress ledger."""

    stage: Stage
    endpoint: Endpoint
    llm: LLMConfig
    pool: PoolSettings
    cache_dir: str | None = None
    progress: Any = None


class Executor(Protocol):
    def endpoints(self, llms: list[LLMConfig]) -> contextlib.AbstractContextManager: ...

    def negotiate(self, llm: LLMConfig, endpoint: Endpoint, cache_dir: str | None) -> LLMConfig:
        """`llm` as `endpoint` takes it (the structured-output mode it accepts)."""
        ...

    def map(self, ds: Any, step: Step) -> Any:
        """`ds` with the stage's columns (and bookkeeping columns) added to every row."""
        ...
