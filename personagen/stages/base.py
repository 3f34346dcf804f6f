"""The shape of an LLM stage: data plus two pure functions, no client inside.

A stage declares the columns it adds and its parameters, and provides

    request(row, params) -> Request | None     the one structured request for a row
                                               (None: the row is not for this stage)
    parse(row, answer, params) -> columns      the validated answer -> the stage's columns

the shape of distilabel's tasks (`format_input` / `format_output`) and of Ray's `ray.data.llm`
processors (`preprocess` / `postprocess`). Executors send the requests
(`personagen.runtime.executors`): the OpenAI-endpoint actor pool and the in-cluster vLLM
processor run the same stage objects. Scoring one item per request (logprob and text modes) asks
many requests per row; it is a `DrivenStage`, whose async driver is built from the same parts
and runs on the endpoint executor only.

Each row a stage takes leaves it with, besides the stage's columns:

    <stage>__error     null, or why the row failed (it is then recorded in `failures`)
    <stage>__attempts  requests made for the row (retries and repairs included) + cache hits
    <stage>__<usage>   the row's token accounting (see `personagen.llm.usage.Usage`)

A row that failed or skipped the stage before (`after`), or that the stage does not take, passes
through untouched (its `<stage>__attempts` stays null).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from personagen.io.bank import KEY
from personagen.llm.client import LLMClient, LLMRequestError
from personagen.llm.prompts import Messages
from personagen.llm.structured import OutputError, json_schema
from personagen.llm.usage import USAGE_FIELDS, Usage
from personagen.logs import mask_secrets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """One structured request, as any engine can send it."""

    messages: Messages
    answer: type[BaseModel]
    """The pydantic model the answer must validate as."""
    prompt_version: str
    schema: dict[str, Any] | None = None
    """The JSON schema to ask for, where it is narrower than the answer model's own."""
    context: dict[str, Any] | None = None
    """Validation context of the answer (e.g. the minimum number of words)."""
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    """The request's own sampling seed (else the run's): samples of one prompt that must differ."""

    def json_schema(self) -> dict[str, Any]:
        return self.schema if self.schema is not None else json_schema(self.answer)


@dataclass(frozen=True)
class LLMStage:
    """A stage that sends one structured request per row."""

    name: str
    columns: pa.Schema
    params: Any
    request: Callable[[dict[str, Any], Any], Request | None]
    parse: Callable[[dict[str, Any], Any, Any], dict[str, Any]]
    prompt_version: str
    id_column: str = KEY
    after: str | None = None
    """The stage whose failed (or skipped) rows this one skips."""
    explain: Callable[[dict[str, Any], str, Any], str] | None = None
    """How a failed request reads as the row's failure reason (default: the reason itself)."""
    requests_per_row: int = 1
    provenance: dict[str, Any] = field(default_factory=dict)
    """What the manifest records about the stage's answers beyond model and prompt."""


@dataclass(frozen=True)
class DrivenStage:
    """A stage that needs several requests per row: `drive(client, row, usage, params)` asks
    them (through the client's concurrency limit) and returns the row's columns."""

    name: str
    columns: pa.Schema
    params: Any
    drive: Callable[[LLMClient, dict[str, Any], Usage, Any], Awaitable[dict[str, Any]]]
    takes: Callable[[dict[str, Any], Any], bool]
    prompt_version: str
    id_column: str = KEY
    after: str | None = None
    requests_per_row: int = 1
    """Requests one row needs (retries and repairs aside): what sizes the actor calls."""
    provenance: dict[str, Any] = field(default_factory=dict)


Stage = LLMStage | DrivenStage


def error_column(stage: Stage) -> str:
    return f"{stage.name}__error"


def attempts_column(stage: Stage) -> str:
    return f"{stage.name}__attempts"


def output_schema(stage: Stage) -> pa.Schema:
    """The stage's columns and its bookkeeping columns, as every executor appends them."""
    return pa.schema(
        [
            *stage.columns,
            pa.field(error_column(stage), pa.string()),
            pa.field(attempts_column(stage), pa.int32()),
            *[pa.field(f"{stage.name}__{name}", pa.int64()) for name in USAGE_FIELDS],
        ]
    )


def passed(stage: Stage, row: dict[str, Any]) -> bool:
    """Whether `row` got through the stage before this one (`after`) without failing."""
    if stage.after is None:
        return True
    return (
        row.get(f"{stage.after}__error") is None and row.get(f"{stage.after}__attempts") is not None
    )


def row_failure(exc: BaseException) -> str:
    """A failed row's reason, one line, secrets masked."""
    if isinstance(exc, OutputError):
        text = str(exc)
    elif isinstance(exc, LLMRequestError):
        text = exc.reason
    else:
        text = f"{type(exc).__name__}: {exc}"
    return mask_secrets(" ".join(text.split()))[:1000]


def bookkeeping(stage: Stage, error: str | None, usage: Usage) -> dict[str, Any]:
    """The bookkeeping columns of a row the stage took."""
    out: dict[str, Any] = {
        error_column(stage): error,
        attempts_column(stage): usage.requests + usage.cache_hits,
    }
    for name in USAGE_FIELDS:
        out[f"{stage.name}__{name}"] = getattr(usage, name)
    return out


async def send(client: LLMClient, request: Request, usage: Usage) -> Any:
    """The validated answer to `request` through `client` (one repair request after an invalid
    answer); raises `OutputError` or `LLMRequestError`."""
    return await client.structured(
        request.messages,
        request.answer,
        prompt_version=request.prompt_version,
        context=request.context,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        seed=request.seed,
        usage=usage,
        schema=request.schema,
    )


async def ask(
    stage: Stage, client: LLMClient, row: dict[str, Any], usage: Usage
) -> dict[str, Any] | None:
    """The stage's columns for `row` through `client` (None: the stage does not take the row).
    Raises `OutputError` or `LLMRequestError` when the row fails."""
    if isinstance(stage, DrivenStage):
        if not stage.takes(row, stage.params):
            return None
        return await stage.drive(client, row, usage, stage.params)
    request = stage.request(row, stage.params)
    if request is None:
        return None
    try:
        answer = await send(client, request, usage)
    except (OutputError, LLMRequestError) as exc:
        if stage.explain is None:
            raise
        raise OutputError(stage.explain(row, row_failure(exc), stage.params)) from None
    return stage.parse(row, answer, stage.params)


async def answer_row(stage: Stage, client: LLMClient, row: dict[str, Any]) -> dict[str, Any]:
    """The stage's columns for one row through `client`: its output or its failure reason,
    with attempts and token usage; {} for a row the stage does not take."""
    if not passed(stage, row):
        return {}
    usage = Usage()
    try:
        out = await ask(stage, client, row, usage)
        if out is None:
            return {}
        error = None
    except (OutputError, LLMRequestError) as exc:
        out, error = {}, row_failure(exc)
    except Exception as exc:  # a bug or bad row must cost one row, not the run
        log.exception("%s failed on %s", stage.name, row.get(stage.id_column))
        out, error = {}, row_failure(exc)
    return out | bookkeeping(stage, error, usage)


def append_results(batch: pa.Table, schema: pa.Schema, results: list[dict[str, Any]]) -> pa.Table:
    """`batch` with one column per field of `schema`, from each row's result (null if absent)."""
    for column in schema:
        values = [result.get(column.name) for result in results]
        batch = batch.append_column(column, pa.array(values, type=column.type))
    return batch


def progress_counts(stage: str, results: list[dict[str, Any]]) -> dict[str, int]:
    """What a batch of results adds to the live progress counters of `stage`."""
    counts: Counter[str] = Counter()
    for result in results:
        if not result:  # a row the stage passed over
            counts[f"{stage}:skipped"] += 1
            continue
        counts[f"{stage}:rows"] += 1
        counts[f"{stage}:failed"] += result.get(f"{stage}__error") is not None
        for name in USAGE_FIELDS:
            counts[f"{stage}:{name}"] += result.get(f"{stage}__{name}") or 0
    return dict(counts)
