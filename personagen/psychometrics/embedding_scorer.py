"""Zero-shot trait scores from sentence embeddings, no LLM: keyed similarity of narrative and items.

A persona's narrative is compared (cosine) with every item statement of the instrument. Raw
similarities mostly say how much a narrative and a statement share topic and wording, which
differs by item far more than by persona; so each item's similarities are standardised over the
personas scored together (every item then weighs the same, as every Likert item does), reversed
for reverse-keyed items, and averaged per trait (`keyed_similarity`). Those trait means are
standardised over the personas too (`standardise`).

What that measures is order, not level: a similarity has no zero point and no unit that would
say how extraverted a persona is, only who is more so than whom in the set. `zero_shot_scores`
therefore *sets* level and spread: the scale midpoint (3) plus `SPREAD` times the standard
score, clipped to 1-5. Use these scores to rank and select personas within one bank (or as an
offline fallback), not to compare a bank's trait levels with people's; scores of personas
standardised in different runs are on slightly different scales.

Arrays only: vectors come from the caller (`personagen.index.embedder` at the command level).
"""

from __future__ import annotations

import numpy as np

from personagen import TRAITS
from personagen.psychometrics.instruments import Instrument

SPREAD = 0.75
"""Standard deviation of zero-shot trait scores on 1-5: about that of human IPIP-50 trait scores
(0.63-0.92 in the builtin global reference), so a zero-shot bank is neither squeezed to the
midpoint nor spread beyond what people show."""
MIDPOINT = 3.0
TINY = 1e-9
"""A spread below this is rounding, not a difference between personas (cosines are within ±1)."""


def cosine(narratives: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(n, d) and (k, d) vectors -> (n, k) cosine similarities."""
    a = narratives / np.linalg.norm(narratives, axis=1, keepdims=True)
    b = items / np.linalg.norm(items, axis=1, keepdims=True)
    return a @ b.T


def standardise(values: np.ndarray) -> np.ndarray:
    """Each column as standard scores over the rows (population SD); 0 where a column has no
    spread (none beyond rounding: `TINY`), NaN stays NaN."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full_like(values, np.nan)
    for j in range(values.shape[1]):
        rows = ~np.isnan(values[:, j])
        column = values[rows, j]
        if column.size:
            sd = column.std()
            out[rows, j] = (column - column.mean()) / sd if sd > TINY else 0.0
    return out


def keyed_similarity(similarity: np.ndarray, instrument: Instrument) -> np.ndarray:
    """(n, items) similarities in the instrument's item order -> (n, 5) standardised trait
    similarities in `TRAITS` order: per item standardised over the rows, reverse-keyed items
    negated, averaged per trait, the averages standardised over the rows (NaN for a trait the
    instrument does not measure)."""
    z = standardise(similarity) * np.array([item.keyed for item in instrument.items])
    traits = np.array([item.trait for item in instrument.items])
    out = np.full((z.shape[0], len(TRAITS)), np.nan)
    for j, trait in enumerate(TRAITS):
        if np.any(traits == trait):
            out[:, j] = z[:, traits == trait].mean(axis=1)
    return standardise(out)


def zero_shot_scores(keyed: np.ndarray, spread: float = SPREAD) -> np.ndarray:
    """Standardised trait similarities (`keyed_similarity`) -> trait scores on 1-5: the midpoint
    plus `spread` standard deviations, clipped to the scale (see the module docstring)."""
    return np.clip(MIDPOINT + spread * np.asarray(keyed, dtype=np.float64), 1.0, 5.0)
