"""personagen: population-aligned persona banks for LLM-based social simulation."""

__version__ = "0.1.0"

TRAITS: tuple[str, ...] = (
    "openness",
    "conscientiousness",
    "extraversion",
    "agreeableness",
    "neuroticism",
)
"""The five trait columns, in this order everywhere (bank, reference, aligned sets)."""
