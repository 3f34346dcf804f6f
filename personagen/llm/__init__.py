"""The LLM layer: one OpenAI-compatible async client for every stage, the embedded llama.cpp
endpoint, prompt templates, structured answers, the response cache and token accounting.

Ray wiring for LLM stages (actor pools, the bank sink) is in `personagen.llm.stage`.
"""

from personagen.llm.cache import ResponseCache, host_cache_path
from personagen.llm.client import (
    Completion,
    Endpoint,
    LLMClient,
    LLMRequestError,
    TokenLogprob,
)
from personagen.llm.prompts import Prompt, load_prompt, posts_data
from personagen.llm.server import EmbeddedServer, llm_endpoint, llm_endpoints
from personagen.llm.structured import OutputError, json_schema, parse_answer
from personagen.llm.usage import Usage

__all__ = [
    "Completion",
    "EmbeddedServer",
    "Endpoint",
    "LLMClient",
    "LLMRequestError",
    "OutputError",
    "Prompt",
    "ResponseCache",
    "TokenLogprob",
    "Usage",
    "host_cache_path",
    "json_schema",
    "llm_endpoint",
    "llm_endpoints",
    "load_prompt",
    "parse_answer",
    "posts_data",
]
