"""Revision of a persona toward a target group (an LLM stage of `personagen adapt`).

The LLM makes targeted edits only: place, culture-specific details and language habits move to
the group, while the personality and every life fact that does not conflict stay. The answer is
the revised narrative and a list of the changes; the original narrative is never replaced (the
revision goes to its own `revisions` group, next to it). A revision shorter than
`adapt.min_words` words or than half the original is not a revision but a lost persona: it is
asked again once with the reason, then recorded as a failure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from personagen.config import Config
from personagen.errors import PersonagenError
from personagen.io import regions
from personagen.io.bank import GROUPS, KEY
from personagen.io.reference import Reference
from personagen.llm.prompts import Prompt, load_prompt
from personagen.stages.base import LLMStage, Request
from personagen.text.redact import redact

STAGE = "revise"
GROUP = "revisions"
REVISE_COLUMNS = pa.schema([field for field in GROUPS[GROUP] if field.name != KEY])
MAX_CHANGES = 20
COUNTRIES_SHOWN = 12


class Revision(BaseModel):
    """The reviser's answer; the minimum length in words comes from the validation context."""

    revised_narrative: str
    changes: list[str] = Field(default_factory=list)

    @field_validator("revised_narrative")
    @classmethod
    def _long_enough(cls, value: str, info: ValidationInfo) -> str:
        value = " ".join(value.split())
        minimum = (info.context or {}).get("min_words", 1)
        words = len(value.split())
        if words < minimum:
            raise ValueError(
                f"the revised narrative has {words} words; keep the whole persona "
                f"(at least {minimum} words)"
            )
        return value

    @field_validator("changes", mode="before")
    @classmethod
    def _phrases(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            return value
        phrases = [" ".join(str(v).split()) for v in value if v is not None]
        # "..." and the like (a small model copying the answer shape) say nothing
        return [p for p in dict.fromkeys(phrases) if any(c.isalnum() for c in p)][:MAX_CHANGES]


def revise_prompt() -> Prompt:
    return load_prompt(STAGE, Revision)


def unchanged(narrative: str | None, revised: str | None) -> bool:
    """Whether a revision is the original again (up to white space): the LLM made no edit."""
    return revised is not None and " ".join((narrative or "").split()) == revised


def min_words(narrative: str, floor: int) -> int:
    """The shortest acceptable revision: `floor` words, or half the original if that is less."""
    return max(1, min(floor, math.ceil(len(narrative.split()) / 2)))


# ------------------------------------------------------------------------------ the target


def target_group(
    reference: Reference, group: str | None, countries: list[str] | None, explicit: str | None
) -> str:
    """Who the revision writes toward: `explicit` text, else the region or the countries the
    reference was narrowed to (a `builtin:<group>` reference names its group itself)."""
    if explicit:
        return explicit
    if countries:
        return "people living in " + ", ".join(regions.parse_countries(countries))
    name = group or reference.group
    if name and regions.canonical(name) != regions.GLOBAL:
        region = regions.resolve_group(name)
        codes = sorted(region.countries)
        shown = ", ".join(codes[:COUNTRIES_SHOWN]) + (
            ", ..." if len(codes) > COUNTRIES_SHOWN else ""
        )
        return f"people living in {region.name} (countries {shown})"
    raise PersonagenError(
        "revision needs a target group: give --group or --countries, a builtin:<group> "
        "reference, --target TEXT (config adapt.target), or --no-revise"
    )


# ------------------------------------------------------------------------------ one row


@dataclass(frozen=True)
class ReviseParams:
    prompt: Prompt
    target: str
    study: str
    min_words: int
    redact_types: tuple[str, ...]
    model: str


def revise_request(row: dict[str, Any], params: ReviseParams) -> Request:
    """One persona (`persona_id`, `narrative`) -> the revision request toward the target."""
    narrative = row["narrative"] or ""
    data = {"persona": narrative, "target_group": params.target, "study": params.study}
    return Request(
        params.prompt.messages(data, {"TARGET": params.target}),
        Revision,
        params.prompt.version,
        context={"min_words": min_words(narrative, params.min_words)},
    )


def revise_parse(row: dict[str, Any], answer: Revision, params: ReviseParams) -> dict[str, Any]:
    """The revision -> the `revisions` columns (invented names or contacts redacted, as the
    posts were)."""
    revised = answer.revised_narrative
    if params.redact_types:
        revised, _ = redact(revised, params.redact_types)
    return {
        "revised_narrative": revised,
        "revision_changes": answer.changes,
        "revise_target": params.target,
        "revise_model": params.model,
        "revise_prompt_version": params.prompt.version,
    }


def revise_stage(cfg: Config, target: str, study: str) -> LLMStage:
    """The revision stage toward `target`; `study` (the retrieval query) says what the personas
    are for, so that edits keep what made them match."""
    prompt = revise_prompt()
    params = ReviseParams(
        prompt=prompt,
        target=target,
        study=study,
        min_words=cfg.adapt.min_words,
        redact_types=tuple(cfg.ingest.redact.types) if cfg.ingest.redact.enabled else (),
        model=cfg.stage_llm(STAGE).model,
    )
    return LLMStage(STAGE, REVISE_COLUMNS, params, revise_request, revise_parse, prompt.version)
