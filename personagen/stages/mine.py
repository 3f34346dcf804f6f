"""Persona mining: one user history window -> a narrative persona + structured attributes.

The request shows the history's posts (as data); the answer is validated as `MinedPersona` (a
narrative of at least `mine.min_words` words, and attributes where the posts give evidence).
Identifiers the model may have invented in the narrative are redacted like the posts were at
ingest. `personagen mine` and `personagen build` run it (see `personagen.commands`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from personagen.config import Config
from personagen.io.bank import ATTRIBUTES_TYPE, KEY
from personagen.llm.prompts import Prompt, load_prompt, posts_data
from personagen.stages.base import LLMStage, Request
from personagen.text.redact import redact

STAGE = "mine"
_NULLISH = {"", "null", "none", "unknown", "n/a", "na", "not specified", "unspecified"}
NOT_META = {"history_id", "user_id", "window_id", "posts"}
"""History columns that are not free metadata (never copied into `source_meta`)."""


# ------------------------------------------------------------------------------ the answer


def _clean_text(value: Any) -> Any:
    if isinstance(value, str):
        value = " ".join(value.split())
        return None if value.lower() in _NULLISH else value
    return value


class Attributes(BaseModel):
    """What the posts show; null (or an empty list) where they give no evidence."""

    age_range: str | None = None
    gender: str | None = None
    occupation: str | None = None
    location: str | None = None
    interests: list[str] = Field(default_factory=list)
    values: list[str] = Field(default_factory=list)

    @field_validator("age_range", "gender", "occupation", "location", mode="before")
    @classmethod
    def _nullish(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return _clean_text(value)

    @field_validator("interests", "values", mode="before")
    @classmethod
    def _phrases(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, list):
            return value
        seen: dict[str, None] = {}
        for item in value:
            text = _clean_text(item) if isinstance(item, str) else None
            if text:
                seen.setdefault(text, None)
        return list(seen)[:12]


NARRATIVE_MIN_CHARS = 200
"""In the answer schema too, so grammar-constrained decoders cannot return an empty narrative."""


class MinedPersona(BaseModel):
    """The miner's answer. The minimum narrative length in words comes from the validation
    context (`mine.min_words`)."""

    narrative: str = Field(min_length=NARRATIVE_MIN_CHARS)
    attributes: Attributes = Field(default_factory=Attributes)

    @field_validator("narrative")
    @classmethod
    def _long_enough(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        minimum = (info.context or {}).get("min_words", 1)
        words = len(value.split())
        if words < minimum:
            raise ValueError(f"the narrative has {words} words; write at least {minimum}")
        return value


def mine_prompt() -> Prompt:
    return load_prompt("mine", MinedPersona)


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
        MinedPersona,
        params.prompt.version,
        context={"min_words": params.min_words},
    )


def mine_parse(row: dict[str, Any], persona: MinedPersona, params: MineParams) -> dict[str, Any]:
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
