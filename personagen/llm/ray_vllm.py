"""In-cluster vLLM for the LLM stages (`llm.engine: ray-vllm`), through Ray Data's `ray.data.llm`.

Each LLM stage of a build (mine, judge, score) becomes one `ray.data.llm` processor: vLLM engine
replicas on GPU workers (`llm.vllm`), fed by the stage's own code. The stage's
`process(client, row, usage, params)` runs twice, each time with a stand-in for `LLMClient`:

- preprocess: `RequestRecorder` keeps the one structured request the row would send (messages
  from the same templates, the answer model's JSON schema, max_tokens, temperature, seed) and it
  becomes the processor's `messages` and vLLM `sampling_params` (the schema as structured output);
- postprocess: `AnswerReplay` gives the engine's text to the same parsing and validation, and
  `process` builds the same columns; an invalid answer becomes the row's failure reason.

So rows leave with exactly the columns of the OpenAI-client stages (failed rows with a reason),
and `BankStageSink` writes them alike. Rows cross the processor packed as one-row Arrow IPC
buffers, so their columns keep their Arrow types through its row-wise Python stages. A row the
stage does not take (rejected or failed before) still passes the engine, as every processor row
must, with a one-token request; it comes out untouched.

Unlike the OpenAI path: no repair request after an invalid answer (decoding follows the schema,
so what fails is what a schema cannot say, e.g. too few words); no response cache (a resumed
build regenerates the rows it had not written); scoring in batch mode only, all items in one
request (logprob and text modes send one request per item, which a one-row-in, one-row-out
processor cannot gather back into one persona within the stream).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from functools import partial
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from personagen.config import LLMConfig, ScoreConfig
from personagen.errors import PersonagenError
from personagen.llm.client import Endpoint, sampling
from personagen.llm.prompts import Messages
from personagen.llm.stage import LLMStage, append_results, progress_counts, run_row, takes_row
from personagen.llm.structured import OutputError, json_schema, parse_answer
from personagen.llm.usage import USAGE_FIELDS, Usage
from personagen.psychometrics.instruments import Instrument

ROW = "__row"
"""The packed input row (one-row Arrow IPC stream) carried through the processor."""
OUT = "__out"
"""The stage's columns of a row as JSON, from postprocess."""
ENGINE_ERROR = "__inference_error__"
"""Set by `ray.data.llm` on rows the engine failed (`should_continue_on_error`)."""
NOOP_MESSAGES: Messages = [{"role": "user", "content": "."}]
STRUCTURED = {"auto": "json", "json_schema": "json", "json_object": "json_object", "none": None}
"""`llm.response_format` -> the vLLM structured-output constraint."""


# ---------------------------------------------------------------------------- configuration


def processor_config(llm: LLMConfig) -> Any:
    """The `vLLMEngineProcessorConfig` of a stage whose settings are `llm` (`llm.model` is what
    the engines load: a Hugging Face id, a path every GPU node sees, or an s3:// / gs:// URI)."""
    from ray.data.llm import vLLMEngineProcessorConfig

    settings = llm.vllm
    engine_kwargs = dict(settings.engine_kwargs)
    engine_kwargs["tensor_parallel_size"] = settings.tensor_parallel_size
    if settings.max_model_len is not None:
        engine_kwargs["max_model_len"] = settings.max_model_len
    return vLLMEngineProcessorConfig(
        model_source=llm.model,
        engine_kwargs=engine_kwargs,
        concurrency=settings.concurrency,
        batch_size=settings.batch_size,
        accelerator_type=settings.accelerator_type,
        # An engine error (e.g. a prompt longer than max_model_len) fails its row, not the job.
        should_continue_on_error=True,
    )


def vllm_endpoint(llm: LLMConfig) -> Endpoint:
    """What the manifest records as the stage's endpoint."""
    return Endpoint(base_url=f"ray-vllm://{llm.model}", identity=f"ray-vllm:{llm.model}")


def score_mode(settings: ScoreConfig, instrument: Instrument) -> str:
    """The scoring mode with in-cluster vLLM: batch, every item in one request per persona."""
    if settings.mode not in ("auto", "batch"):
        raise PersonagenError(
            f"score.mode={settings.mode} sends one request per item, which llm.engine=ray-vllm "
            "does not do; use score.mode=batch (or auto)"
        )
    per_request = settings.items_per_request
    if per_request is not None and per_request < len(instrument.items):
        raise PersonagenError(
            f"llm.engine=ray-vllm asks all {len(instrument.items)} items of {instrument.id} in "
            f"one request; unset score.items_per_request (it is {per_request})"
        )
    return "batch"


# ---------------------------------------------------------------------------- the stand-ins


@dataclass(frozen=True)
class Request:
    """One structured request as a stage makes it (`LLMClient.structured`'s arguments)."""

    messages: Messages
    answer: type[BaseModel]
    schema: dict[str, Any]
    context: dict[str, Any] | None
    max_tokens: int | None
    temperature: float | None


class _Recorded(Exception):
    """Stops `process` at its request: preprocess needs the request, not an answer."""


class RequestRecorder:
    """`LLMClient` stand-in for preprocess: keeps the requests of one row."""

    def __init__(self, llm: LLMConfig) -> None:
        self.llm = llm
        self.requests: list[Request] = []

    @property
    def model(self) -> str:
        return self.llm.model

    async def structured(
        self,
        messages: Messages,
        answer: type[BaseModel],
        *,
        prompt_version: str,
        context: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        usage: Usage | None = None,
        schema: dict[str, Any] | None = None,
    ) -> BaseModel:
        schema = schema if schema is not None else json_schema(answer)
        self.requests.append(Request(messages, answer, schema, context, max_tokens, temperature))
        raise _Recorded


class AnswerReplay:
    """`LLMClient` stand-in for postprocess: answers the row's one request with the engine's
    output, through the same parsing and validation as `LLMClient.structured`."""

    def __init__(self, llm: LLMConfig, text: str, prompt_tokens: int, completion_tokens: int):
        self.llm = llm
        self.text = text
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.answered = False

    @property
    def model(self) -> str:
        return self.llm.model

    async def structured(
        self,
        messages: Messages,
        answer: type[BaseModel],
        *,
        prompt_version: str,
        context: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        usage: Usage | None = None,
        schema: dict[str, Any] | None = None,
    ) -> BaseModel:
        if self.answered:
            raise OutputError("llm.engine=ray-vllm answers one request per row; this row made more")
        self.answered = True
        if usage is not None:
            usage.add(
                Usage(
                    requests=1,
                    prompt_tokens=self.prompt_tokens,
                    completion_tokens=self.completion_tokens,
                )
            )
        try:
            return parse_answer(self.text, answer, context)
        except OutputError as exc:
            limit = sampling(self.llm, max_tokens, temperature)["max_tokens"]
            cut = " (the answer was cut off at the token limit)"
            raise OutputError(
                f"invalid answer: {exc}{cut if self.completion_tokens >= limit else ''}"
            ) from None


def record_request(stage: LLMStage, llm: LLMConfig, row: dict[str, Any]) -> Request | None:
    """The one request `stage` sends for `row`; None when it sends none or fails before (the
    same error then recurs in postprocess, where it fails the row with its reason)."""
    recorder = RequestRecorder(llm)
    try:
        asyncio.run(stage.process(recorder, row, Usage(), stage.params))
    except _Recorded:
        pass
    except Exception:
        return None
    return recorder.requests[0] if len(recorder.requests) == 1 else None


def sampling_params(llm: LLMConfig, request: Request) -> dict[str, Any]:
    """vLLM `SamplingParams` fields of a request: those the OpenAI path sends, and the schema
    as structured output. The schema goes as JSON text: as a nested dict it would become an
    Arrow struct in the dataset, whose merged fields come back as spurious null keywords."""
    params = sampling(llm, request.max_tokens, request.temperature)
    kind = STRUCTURED[llm.response_format]
    params["structured_outputs"] = None
    if kind == "json":
        params["structured_outputs"] = {"json": json.dumps(request.schema)}
    elif kind == "json_object":
        params["structured_outputs"] = {"json_object": True}
    return params


def noop_params(llm: LLMConfig) -> dict[str, Any]:
    """One token, unconstrained; the same fields as a real request's, so that the dataset's
    `sampling_params` keep one type across blocks."""
    return {**sampling(llm, 1, 0.0), "structured_outputs": None}


# ---------------------------------------------------------------------------- the row functions


def preprocess(row: dict[str, Any], stage: LLMStage, llm: LLMConfig) -> dict[str, Any]:
    """A packed row -> its chat `messages` and `sampling_params` (a one-token request for a row
    the stage does not take)."""
    data = unpack_row(row[ROW])
    request = record_request(stage, llm, data) if takes_row(stage, data) else None
    if request is None:
        return {"messages": NOOP_MESSAGES, "sampling_params": noop_params(llm)}
    return {"messages": request.messages, "sampling_params": sampling_params(llm, request)}


def postprocess(row: dict[str, Any], stage: LLMStage, llm: LLMConfig) -> dict[str, Any]:
    """The engine's answer for a packed row -> the row and the stage's columns (as JSON)."""
    data = unpack_row(row[ROW])
    out: dict[str, Any] = {}
    if takes_row(stage, data):
        replay = AnswerReplay(
            llm,
            str(row.get("generated_text") or ""),
            int(row.get("num_input_tokens") or 0),
            int(row.get("num_generated_tokens") or 0),
        )
        out = asyncio.run(run_row(stage, replay, data))
    return {ROW: row[ROW], OUT: json.dumps(out, ensure_ascii=False)}


def conform(batch: pa.Table, stage: LLMStage, progress: Any = None) -> pa.Table:
    """Processor output -> the input rows with the stage's columns, typed as the OpenAI path
    types them. Rows the engine failed bypass postprocess; they fail with the engine's error."""
    rows = unpack_rows(batch.column(ROW).to_pylist())
    outs = _column(batch, OUT)
    errors = _column(batch, ENGINE_ERROR)
    results: list[dict[str, Any]] = []
    for i, (out, error) in enumerate(zip(outs, errors, strict=True)):
        if out is not None and not error:
            results.append(json.loads(out))
        elif takes_row(stage, rows.slice(i, 1).to_pylist()[0]):
            results.append(_engine_failure(stage, str(error or "no answer")))
        else:
            results.append({})
    if progress is not None:
        progress.add.remote(progress_counts(stage.name, results))
    return append_results(rows, stage.extra_schema(), results)


def _column(batch: pa.Table, name: str) -> list[Any]:
    if name in batch.column_names:
        return batch.column(name).to_pylist()
    return [None] * batch.num_rows


def _engine_failure(stage: LLMStage, error: str) -> dict[str, Any]:
    out: dict[str, Any] = {f"{stage.name}__{name}": 0 for name in USAGE_FIELDS}
    out[f"{stage.name}__requests"] = 1
    out[f"{stage.name}__attempts"] = 1
    out[stage.error_column()] = f"vLLM engine error: {' '.join(error.split())}"[:1000]
    return out


# ---------------------------------------------------------------------------- packing


def pack_rows(batch: pa.Table) -> pa.Table:
    """Each row as a one-row Arrow IPC stream (column `__row`)."""
    packed = []
    for i in range(batch.num_rows):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_table(batch.slice(i, 1))
        packed.append(sink.getvalue().to_pybytes())
    return pa.table({ROW: pa.array(packed, pa.binary())})


def unpack_rows(packed: list[bytes]) -> pa.Table:
    tables = [pa.ipc.open_stream(pa.py_buffer(b)).read_all() for b in packed]
    return pa.concat_tables(tables, promote_options="default")


def unpack_row(packed: bytes) -> dict[str, Any]:
    return unpack_rows([packed]).to_pylist()[0]


# ---------------------------------------------------------------------------- wiring


def row_functions(stage: LLMStage, llm: LLMConfig) -> dict[str, Any]:
    """The processor's `preprocess` and `postprocess` for `stage`."""
    return {
        "preprocess": partial(preprocess, stage=stage, llm=llm),
        "postprocess": partial(postprocess, stage=stage, llm=llm),
    }


def vllm_processor(stage: LLMStage, llm: LLMConfig) -> Any:
    """The `ray.data.llm` processor of `stage` (needs `ray[llm]`, i.e. vLLM, on the GPU nodes)."""
    from ray.data.llm import build_processor

    return build_processor(processor_config(llm), **row_functions(stage, llm))


def map_vllm_stage(ds: Any, stage: LLMStage, processor: Any, progress: Any = None) -> Any:
    """Add `stage` to the Ray dataset `ds` through `processor` (see `vllm_processor`)."""
    ds = ds.map_batches(pack_rows, batch_format="pyarrow", batch_size=None)
    ds = processor(ds)
    return ds.map_batches(
        conform,
        fn_kwargs={"stage": stage, "progress": progress},
        batch_format="pyarrow",
        batch_size=None,
    )
