"""The in-cluster vLLM executor (`llm.engine: ray-vllm`), through Ray Data's `ray.data.llm`.

Each LLM stage of a build (mine, judge, score) becomes one `ray.data.llm` processor: vLLM engine
replicas on GPU workers (`llm.vllm`), fed by the stage's own two functions:

- preprocess: `stage.request(row)` is the processor's `messages` and vLLM `sampling_params`
  (max_tokens, temperature and seed as the endpoint path sends them, the answer schema as
  structured output);
- postprocess: the engine's text goes through the same validation (`parse_answer`) and
  `stage.parse(row, answer)` builds the same columns; an invalid answer is the row's failure.

So rows leave with exactly the columns of the endpoint executor (failed rows with a reason),
and the bank sink writes them alike. Rows cross the processor packed as one-row Arrow IPC
buffers, so their columns keep their Arrow types through its row-wise Python stages. A row the
stage does not take (rejected or failed before) still passes the engine, as every processor row
must, with a one-token request; it comes out untouched. That request has the shape of a real
one, structured-output constraint included: Ray Data merges the blocks of a processor's batches,
and a block of skipped rows only must give `sampling_params` the Arrow type the other blocks
give it (with no constraint, its field would be of type null, which does not merge).

Unlike the endpoint path: no repair request after an invalid answer (decoding follows the schema,
so what fails is what a schema cannot say, e.g. too few words); no response cache (a resumed
build regenerates the rows it had not written); scoring in batch mode only, all items in one
request (logprob and text modes send one request per item, a `DrivenStage`, which a
one-row-in, one-row-out processor cannot gather back into one persona within the stream).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from functools import partial
from typing import Any

import pyarrow as pa

from personagen.config import LLMConfig, ScoreConfig
from personagen.errors import PersonagenError
from personagen.llm.client import Endpoint, sampling
from personagen.llm.prompts import Messages
from personagen.llm.structured import OutputError, parse_answer
from personagen.llm.usage import Usage
from personagen.psychometrics.instruments import Instrument
from personagen.runtime.executors.base import Step
from personagen.stages.base import (
    LLMStage,
    Request,
    Stage,
    append_results,
    bookkeeping,
    output_schema,
    passed,
    progress_counts,
    row_failure,
)

ROW = "__row"
"""The packed input row (one-row Arrow IPC stream) carried through the processor."""
OUT = "__out"
"""The stage's columns of a row as JSON, from postprocess."""
ENGINE_ERROR = "__inference_error__"
"""Set by `ray.data.llm` on rows the engine failed (`should_continue_on_error`)."""
NOOP_MESSAGES: Messages = [{"role": "user", "content": "."}]
NOOP_SCHEMA: dict[str, Any] = {"type": "object"}
"""The constraint of a skipped row's one-token request (any JSON object)."""
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


# ---------------------------------------------------------------------------- requests


def sampling_params(llm: LLMConfig, request: Request) -> dict[str, Any]:
    """vLLM `SamplingParams` fields of a request: those the OpenAI path sends, and the schema
    as structured output. The schema goes as JSON text: as a nested dict it would become an
    Arrow struct in the dataset, whose merged fields come back as spurious null keywords."""
    params = sampling(llm, request.max_tokens, request.temperature, request.seed)
    params["structured_outputs"] = _constraint(llm, request.json_schema())
    return params


def noop_params(llm: LLMConfig) -> dict[str, Any]:
    """One token, with the fields and the constraint kind of a real request, so that the
    dataset's `sampling_params` keep one Arrow type across blocks (see the module docstring)."""
    return {**sampling(llm, 1, 0.0), "structured_outputs": _constraint(llm, NOOP_SCHEMA)}


def _constraint(llm: LLMConfig, schema: dict[str, Any]) -> dict[str, Any] | None:
    kind = STRUCTURED[llm.response_format]
    if kind == "json":
        return {"json": json.dumps(schema)}
    if kind == "json_object":
        return {"json_object": True}
    return None


def _request(stage: LLMStage, row: dict[str, Any]) -> Request | None:
    """The stage's request for a row it takes; None when it does not take the row, or when
    building the request fails (the error recurs in postprocess, which records it)."""
    if not passed(stage, row):
        return None
    try:
        return stage.request(row, stage.params)
    except Exception:
        return None


def _takes(stage: LLMStage, row: dict[str, Any]) -> bool:
    """Whether the row is the stage's (a row whose request cannot be built is: it fails)."""
    if not passed(stage, row):
        return False
    try:
        return stage.request(row, stage.params) is not None
    except Exception:
        return True


def answer_columns(
    stage: LLMStage,
    llm: LLMConfig,
    row: dict[str, Any],
    text: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    """The engine's answer for a row the stage takes -> the stage's columns, through the same
    validation and parsing as the endpoint path (without its repair request: decoding follows
    the schema, so what fails is what a schema cannot say, e.g. too few words)."""
    usage = Usage(requests=1, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    try:
        request = stage.request(row, stage.params)
        if request is None:
            return {}
        try:
            answer = parse_answer(text, request.answer, request.context)
        except OutputError as exc:
            limit = sampling(llm, request.max_tokens, request.temperature)["max_tokens"]
            cut = " (the answer was cut off at the token limit)"
            reason = f"invalid answer: {exc}{cut if completion_tokens >= limit else ''}"
            if stage.explain is not None:
                reason = stage.explain(row, reason, stage.params)
            raise OutputError(reason) from None
        out, error = stage.parse(row, answer, stage.params), None
    except Exception as exc:
        out, error = {}, row_failure(exc)
    return out | bookkeeping(stage, error, usage)


# ---------------------------------------------------------------------------- the row functions


def preprocess(row: dict[str, Any], stage: LLMStage, llm: LLMConfig) -> dict[str, Any]:
    """A packed row -> its chat `messages` and `sampling_params` (a one-token request for a row
    the stage does not take)."""
    request = _request(stage, unpack_row(row[ROW]))
    if request is None:
        return {"messages": NOOP_MESSAGES, "sampling_params": noop_params(llm)}
    return {"messages": request.messages, "sampling_params": sampling_params(llm, request)}


def postprocess(row: dict[str, Any], stage: LLMStage, llm: LLMConfig) -> dict[str, Any]:
    """The engine's answer for a packed row -> the row and the stage's columns (as JSON)."""
    data = unpack_row(row[ROW])
    out: dict[str, Any] = {}
    if _takes(stage, data):
        out = answer_columns(
            stage,
            llm,
            data,
            str(row.get("generated_text") or ""),
            int(row.get("num_input_tokens") or 0),
            int(row.get("num_generated_tokens") or 0),
        )
    return {ROW: row[ROW], OUT: json.dumps(out, ensure_ascii=False)}


def conform(batch: pa.Table, stage: LLMStage, progress: Any = None) -> pa.Table:
    """Processor output -> the input rows with the stage's columns, typed as the endpoint path
    types them. Rows the engine failed bypass postprocess; they fail with the engine's error."""
    rows = unpack_rows(batch.column(ROW).to_pylist())
    outs = _column(batch, OUT)
    errors = _column(batch, ENGINE_ERROR)
    results: list[dict[str, Any]] = []
    for i, (out, error) in enumerate(zip(outs, errors, strict=True)):
        if out is not None and not error:
            results.append(json.loads(out))
        elif _takes(stage, rows.slice(i, 1).to_pylist()[0]):
            results.append(_engine_failure(stage, str(error or "no answer")))
        else:
            results.append({})
    if progress is not None:
        progress.add.remote(progress_counts(stage.name, results))
    return append_results(rows, output_schema(stage), results)


def _column(batch: pa.Table, name: str) -> list[Any]:
    if name in batch.column_names:
        return batch.column(name).to_pylist()
    return [None] * batch.num_rows


def _engine_failure(stage: LLMStage, error: str) -> dict[str, Any]:
    reason = f"vLLM engine error: {' '.join(error.split())}"[:1000]
    return bookkeeping(stage, reason, Usage(requests=1))


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


def vllm_processor(stage: Stage, llm: LLMConfig) -> Any:
    """The `ray.data.llm` processor of `stage` (needs `ray[llm]`, i.e. vLLM, on the GPU nodes)."""
    from ray.data.llm import build_processor

    if not isinstance(stage, LLMStage):
        raise PersonagenError(
            f"stage {stage.name} sends several requests per row, which llm.engine=ray-vllm "
            "does not do"
        )
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


class VLLMExecutor:
    """`llm.engine: ray-vllm`: vLLM engines on the cluster's GPU workers, inside the stream."""

    @contextlib.contextmanager
    def endpoints(self, llms: list[LLMConfig]) -> Iterator[list[Endpoint]]:
        yield [vllm_endpoint(llm) for llm in llms]

    def negotiate(self, llm: LLMConfig, endpoint: Endpoint, cache_dir: str | None) -> LLMConfig:
        """vLLM takes every structured-output mode: nothing to find out."""
        return llm

    def map(self, ds: Any, step: Step) -> Any:
        processor = vllm_processor(step.stage, step.llm)
        return map_vllm_stage(ds, step.stage, processor, step.progress)
