"""The answer every persona-writing stage validates: a narrative and the attributes it shows.

Mining (from a history) and the LLM-personas baseline (from nothing) ask for the same shape, so
their banks are alike.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator

_NULLISH = {"", "null", "none", "unknown", "n/a", "na", "not specified", "unspecified"}


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


class PersonaAnswer(BaseModel):
    """A persona as an LLM writes it (the miner, or the LLM-personas baseline). The minimum
    narrative length in words comes from the validation context (`mine.min_words`)."""

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
