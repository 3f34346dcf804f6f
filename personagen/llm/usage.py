"""Token accounting: what each stage asked of the LLM, and what it cost.

Counts travel as plain integer counters (`<stage>:<field>`) so that Ray tasks can return them,
the driver can add them up, and the manifest can store them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from pydantic import Field

from personagen.options import Options


class Price(Options):
    """Price of one model in US dollars per million tokens."""

    prompt: float = Field(0.0, ge=0, description="USD per 1M prompt tokens")
    completion: float = Field(0.0, ge=0, description="USD per 1M completion tokens")


@dataclass
class Usage:
    requests: int = 0
    """HTTP requests sent, retries and repair requests included."""
    retries: int = 0
    repairs: int = 0
    cache_hits: int = 0
    """Answers served from the response cache (no request, no tokens billed)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: Usage) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def counts(self, stage: str) -> dict[str, int]:
        return {f"{stage}:{name}": value for name, value in asdict(self).items()}

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], stage: str) -> Usage:
        return cls(**{f.name: int(counts.get(f"{stage}:{f.name}", 0)) for f in fields(cls)})

    def cost_usd(self, price: Price | None) -> float | None:
        """Cost of the billed tokens, or None without a price for the model."""
        if price is None:
            return None
        return (self.prompt_tokens * price.prompt + self.completion_tokens * price.completion) / 1e6


USAGE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Usage))
