"""Executors: how a stage's requests reach a model, behind one interface.

An executor opens the endpoints of a set of stages (`endpoints(llms)`, a context manager) and
adds a stage to a Ray dataset (`map(ds, step)`, see `base.Step`). Both run the same stage
objects (`personagen.stages.base`):

- `openai`   (`endpoint.EndpointExecutor`): an actor pool of OpenAI-compatible clients, against
             `llm.base_url` or the embedded llama.cpp server;
- `ray-vllm` (`vllm.VLLMExecutor`): `ray.data.llm` processors, vLLM engines on GPU workers.

A new engine is one more module with one more class, registered here under its `llm.engine`
name (as Ray's `ProcessorBuilder.register` maps each engine's config to its builder).
"""

from __future__ import annotations

from personagen.errors import PersonagenError
from personagen.runtime.executors.base import Executor
from personagen.runtime.executors.endpoint import EndpointExecutor
from personagen.runtime.executors.vllm import VLLMExecutor

EXECUTORS: dict[str, type[Executor]] = {
    "openai": EndpointExecutor,
    "ray-vllm": VLLMExecutor,
}


def executor_for(engine: str) -> Executor:
    """The executor of `llm.engine`."""
    if engine not in EXECUTORS:
        raise PersonagenError(f"unknown llm.engine {engine!r}; engines: {', '.join(EXECUTORS)}")
    return EXECUTORS[engine]()
