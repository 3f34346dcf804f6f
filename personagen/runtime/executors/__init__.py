"""Executors: how a stage's requests reach a model, behind one interface.

An executor opens the endpoints of a set of stages (`endpoints(llms)`, a context manager) and
adds a stage to a Ray dataset (`map(ctx, ds, stage, endpoint, rows=..., progress=...)`). Both
run the same stage objects (`personagen.stages.base`):

- `openai`   (`endpoint.EndpointExecutor`): an actor pool of OpenAI-compatible clients, against
             `llm.base_url` or the embedded llama.cpp server;
- `ray-vllm` (`vllm.VLLMExecutor`): `ray.data.llm` processors, vLLM engines on GPU workers.

A new engine is one more module with one more class, registered here under its `llm.engine`
name (as Ray's `ProcessorBuilder.register` maps each engine's config to its builder).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Protocol

from personagen.errors import PersonagenError
from personagen.runtime.executors.endpoint import EndpointExecutor
from personagen.runtime.executors.vllm import VLLMExecutor

if TYPE_CHECKING:
    from personagen.config import LLMConfig
    from personagen.llm.client import Endpoint
    from personagen.runtime.context import RunContext
    from personagen.stages.base import Stage


class Executor(Protocol):
    def endpoints(self, llms: list[LLMConfig]) -> contextlib.AbstractContextManager: ...

    def map(
        self,
        ctx: RunContext,
        ds: Any,
        stage: Stage,
        endpoint: Endpoint,
        *,
        rows: int,
        progress: Any = None,
        actors: int | None = None,
    ) -> Any: ...


EXECUTORS: dict[str, type[Executor]] = {
    "openai": EndpointExecutor,
    "ray-vllm": VLLMExecutor,
}


def executor_for(engine: str) -> Executor:
    """The executor of `llm.engine`."""
    if engine not in EXECUTORS:
        raise PersonagenError(f"unknown llm.engine {engine!r}; engines: {', '.join(EXECUTORS)}")
    return EXECUTORS[engine]()
