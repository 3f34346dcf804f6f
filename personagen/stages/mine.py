"""Persona mining: one user history window -> a narrative persona + structured attributes.

The request shows the history's posts (as data); the answer is validated as `PersonaAnswer` (a
narrative of at least `mine.min_words` words, and attributes where the posts give evidence).
Identifiers the model may have invented in the narrative are redacted like the posts were at
ingest. `personagen mine` and `personagen build` run it (see `personagen.commands`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from personagen.config import Config
from personagen.io.bank import ATTRIBUTES_TYPE, KEY
from personagen.llm.prompts import Prompt, load_prompt, posts_data
from personagen.stages.base import LLMStage, Request
from personagen.stages.persona import PersonaAnswer
from personagen.text.redact import redact

STAGE = "mine"
NOT_META = {"history_id", "user_id", "window_id", "posts"}
"""History columns that are not free metadata (never copied into `source_meta`)."""


def mine_prompt() -> Prompt:
    return load_prompt("mine", PersonaAnswer)


# ------------------------------------------------------------------------------ one row


@dataclass(frozen=True)
class MineParams:
    prompt: Prompt
    min_words: int
    redact_types: tuple[str, ...]
    meta_columns: tuple[str, ...] | None
    """History columns copied into `source_meta`; None = every column but the history's own."""
    model: str


MINE_COLUMNS = pa.schema(
    [
        (KEY, pa.string()),
        ("narrative", pa.string()),
        ("attributes", ATTRIBUTES_TYPE),
        ("source_meta", pa.string()),
        ("model", pa.string()),
        ("prompt_version", pa.string()),
    ]
)


def mine_request(row: dict[str, Any], params: MineParams) -> Request:
    """A history row's posts -> the mining request."""
    return Request(
        params.prompt.messages({"posts": posts_data(row["posts"])}),
        PersonaAnswer,
        params.prompt.version,
        context={"min_words": params.min_words},
    )


def mine_parse(row: dict[str, Any], persona: PersonaAnswer, params: MineParams) -> dict[str, Any]:
    """The miner's answer -> the bank's `personas` columns (identifiers in the narrative are
    redacted like the posts were at ingest, should the model have invented any)."""
    narrative = persona.narrative
    if params.redact_types:
        narrative, _ = redact(narrative, params.redact_types)
    names = params.meta_columns
    if names is None:
        names = tuple(name for name in row if name not in NOT_META)
    meta = {name: row.get(name) for name in names}
    return {
        KEY: row["history_id"],
        "narrative": narrative,
        "attributes": persona.attributes.model_dump(),
        "source_meta": json.dumps(meta, ensure_ascii=False, default=str),
        "model": params.model,
        "prompt_version": params.prompt.version,
    }


def mine_stage(cfg: Config, meta_columns: tuple[str, ...] | None = None) -> LLMStage:
    """The mining stage (first in a chain: it reads history rows)."""
    prompt = mine_prompt()
    params = MineParams(
        prompt=prompt,
        min_words=cfg.mine.min_words,
        redact_types=tuple(cfg.ingest.redact.types) if cfg.ingest.redact.enabled else (),
        meta_columns=meta_columns,
        model=cfg.stage_llm(STAGE).model,
    )
    return LLMStage(
        STAGE, MINE_COLUMNS, params, mine_request, mine_parse, prompt.version, "history_id"
    )
