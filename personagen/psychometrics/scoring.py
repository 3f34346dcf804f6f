"""Item responses -> trait scores on the 1-5 scale of the IPIP Likert items."""

from __future__ import annotations

import numpy as np

from personagen import TRAITS
from personagen.psychometrics.instruments import Instrument


def keyed_responses(responses: np.ndarray, instrument: Instrument) -> np.ndarray:
    """Reverse-keyed items reflected on the scale (x -> min + max - x); NaN stays NaN."""
    responses = np.asarray(responses, dtype=np.float64)
    signs = np.array([item.keyed for item in instrument.items])
    reflected = instrument.scale.min + instrument.scale.max - responses
    return np.where(signs < 0, reflected, responses)


def to_five_point(values: np.ndarray, instrument: Instrument) -> np.ndarray:
    """Linear map of the instrument's scale onto 1-5, so trait columns are comparable."""
    lo, hi = instrument.scale.min, instrument.scale.max
    return 1.0 + (np.asarray(values, dtype=np.float64) - lo) * 4.0 / (hi - lo)


def trait_scores(responses: np.ndarray, instrument: Instrument, min_items: int = 1) -> np.ndarray:
    """(n, items) responses (NaN = missing) -> (n, 5) trait means in `TRAITS` order, on 1-5.

    A trait answered by fewer than `min_items` of its items is NaN rather than a guess.
    """
    keyed = to_five_point(keyed_responses(responses, instrument), instrument)
    traits = np.array([item.trait for item in instrument.items])
    out = np.full((keyed.shape[0], len(TRAITS)), np.nan)
    for j, trait in enumerate(TRAITS):
        cols = keyed[:, traits == trait]
        if cols.shape[1] == 0:
            continue
        answered = np.sum(~np.isnan(cols), axis=1)
        with np.errstate(invalid="ignore"):
            means = np.nanmean(np.where(answered[:, None] > 0, cols, 0.0), axis=1)
        out[:, j] = np.where(answered >= min_items, means, np.nan)
    return out
