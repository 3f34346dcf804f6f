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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ValidationInfo, field_validator

from personagen.config import Config
from personagen.io.bank import GROUPS, KEY, done_ids
from personagen.llm.client import LLMClient
from personagen.llm.prompts import Prompt, load_prompt
from personagen.llm.runs import cache_folder, record_stage, stage_llm
from personagen.llm.usage import Usage

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


async def queries_row(
    client: LLMClient, row: dict[str, Any], usage: Usage, params: QueryParams
) -> dict[str, Any]:
    """One persona (`persona_id`, `text`) -> the `queries` columns."""
    answer = await client.structured(
        params.prompt.messages({"persona": row["text"]}, {"N": str(params.n)}),
        PersonaQueries,
        prompt_version=params.prompt.version,
        context={"n": params.n},
        usage=usage,
        schema=queries_schema(params.n),
    )
    return {
        "queries": answer.queries,
        "queries_model": client.model,
        "queries_prompt_version": params.prompt.version,
    }


def queries_stage(cfg: Config) -> Any:
    from personagen.llm.stage import LLMStage

    params = QueryParams(queries_prompt(), cfg.train_embedder.queries_per_persona)
    return LLMStage(STAGE, queries_row, QUERY_COLUMNS, params, KEY)


def write_queries(bank: Path, personas: pa.Table, cfg: Config) -> Counter[str]:
    """Ask for the queries of the personas (`persona_id`, `text`) that have none yet (nor a
    recorded failure), into BANK/queries; returns the stage's counts."""
    from personagen.cluster import init_ray
    from personagen.llm.server import llm_endpoint
    from personagen.llm.stage import pool_settings, run_table_stage

    done = pa.array(sorted(done_ids(bank, GROUP, failed_stage=STAGE)), pa.string())
    todo = personas.filter(pc.invert(pc.is_in(personas.column(KEY), value_set=done)))
    counts: Counter[str] = Counter({f"{STAGE}:skipped_done": personas.num_rows - todo.num_rows})
    if todo.num_rows == 0:
        return counts
    llm = stage_llm(cfg, cfg.train_embedder.endpoint(cfg.llm))
    init_ray(cfg.ray)
    with llm_endpoint(llm) as endpoint:
        stage = queries_stage(cfg)
        record_stage(bank, STAGE, llm, endpoint, stage.params.prompt.version)
        pool = pool_settings(llm, endpoint, todo.num_rows, cfg.mine)
        counts.update(
            run_table_stage(
                todo,
                stage,
                GROUP,
                llm,
                endpoint,
                pool,
                bank,
                cache_folder(cfg, bank),
                cfg.mine.progress_s,
            )
        )
    return counts
