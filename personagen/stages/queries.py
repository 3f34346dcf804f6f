"""Training queries: an LLM writes short search queries each persona matches (a stage of
`personagen train-embedder`), stored in the bank's `queries` group.

The persona is shown as the embedder sees it (`persona_text` with `embed.text`), so queries and
training pairs describe the same text. Queries are cleaned (white space, duplicates, quotes),
must be 2 to 30 words; the request's JSON schema asks for `train_embedder.queries_per_persona`
of them, and an answer with at least one usable query is kept (small models often write a
too-long or empty one among them). Answers are cached like every LLM call, and
personas with queries (or a recorded failure) are not asked again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ValidationInfo, field_validator

from personagen.config import Config
from personagen.io.bank import GROUPS, KEY
from personagen.llm.prompts import Prompt, load_prompt
from personagen.stages.base import LLMStage, Request

STAGE = "queries"
GROUP = "queries"
QUERY_COLUMNS = pa.schema([field for field in GROUPS[GROUP] if field.name != KEY])
MIN_WORDS, MAX_WORDS = 2, 30


class PersonaQueries(BaseModel):
    """The answer: the queries (at most the validation context's `n` are kept)."""

    queries: list[str]

    @field_validator("queries", mode="before")
    @classmethod
    def _clean(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, list):
            return value
        cleaned = [" ".join(str(v).split()).strip("\"'") for v in value if v is not None]
        good = [q for q in dict.fromkeys(cleaned) if usable(q)]
        wanted = (info.context or {}).get("n", 1)
        if not good:
            raise ValueError(
                f"no usable query (distinct, {MIN_WORDS}-{MAX_WORDS} words); write {wanted}"
            )
        return good[:wanted]


def usable(query: str) -> bool:
    """A query of MIN_WORDS to MAX_WORDS words, counting only words with letters in them."""
    words = query.split()
    return len(words) <= MAX_WORDS and sum(any(c.isalpha() for c in w) for w in words) >= MIN_WORDS


def queries_prompt() -> Prompt:
    return load_prompt(STAGE, PersonaQueries)


def queries_schema(n: int) -> dict[str, Any]:
    """The answer's JSON schema with exactly `n` queries (grammar-constrained decoders obey)."""
    schema = copy.deepcopy(queries_prompt().schema)
    schema["properties"]["queries"] |= {"minItems": n, "maxItems": n}
    return schema


@dataclass(frozen=True)
class QueryParams:
    prompt: Prompt
    n: int
    model: str


def queries_request(row: dict[str, Any], params: QueryParams) -> Request:
    """One persona (`persona_id`, `text`) -> a request for `n` queries it matches."""
    return Request(
        params.prompt.messages({"persona": row["text"]}, {"N": str(params.n)}),
        PersonaQueries,
        params.prompt.version,
        schema=queries_schema(params.n),
        context={"n": params.n},
    )


def queries_parse(row: dict[str, Any], answer: PersonaQueries, params: QueryParams) -> dict:
    """The answer -> the `queries` columns."""
    return {
        "queries": answer.queries,
        "queries_model": params.model,
        "queries_prompt_version": params.prompt.version,
    }


def queries_stage(cfg: Config) -> LLMStage:
    prompt = queries_prompt()
    params = QueryParams(prompt, cfg.train_embedder.queries_per_persona, cfg.stage_llm(STAGE).model)
    return LLMStage(STAGE, QUERY_COLUMNS, params, queries_request, queries_parse, prompt.version)
