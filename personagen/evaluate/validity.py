"""Does a scorer measure anything: scored traits against known ones (designed or self-reported).

Plain functions over numpy arrays, rows = personas (or people), columns = traits in `TRAITS`
order, NaN = no value. Correlations are Spearman's (rank) correlations: the known levels are
ordinal (designed levels 1-5, self-reports on any scale), and a scorer that orders people
correctly is useful whatever its scale.

A constant side has no ranks to correlate, so Spearman's rho is undefined there (scipy returns
NaN). A scorer whose answers do not vary measures nothing, and that is what a validity check
must say in a number that can be compared and thresholded: such a correlation is reported as 0,
with `constant` set so that reports can say why.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

from personagen import TRAITS
from personagen.psychometrics.flags import acquiescence_index
from personagen.psychometrics.instruments import Instrument

BOOTSTRAP_RESAMPLES = 1000
LEVEL = 0.95
MIDPOINT = 3.0
"""The midpoint of the 1-5 scale the flags' acquiescence index is on."""
RATINGS = ((0.6, "usable"), (0.3, "weak"))
"""(lowest r, word): what a trait's correlation is good for; below the last, "no signal"."""


def is_constant(values: np.ndarray) -> bool:
    """Whether `values` (finite ones) take fewer than two distinct values."""
    values = np.asarray(values, dtype=np.float64)
    return np.unique(values[np.isfinite(values)]).size < 2


def _rank_corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of (b, n) arrays: Pearson's r of the (average) ranks;
    0 for a row where either side is constant."""
    rx = rankdata(x, axis=-1)
    ry = rankdata(y, axis=-1)
    rx -= rx.mean(axis=-1, keepdims=True)
    ry -= ry.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((rx * rx).sum(axis=-1) * (ry * ry).sum(axis=-1))
    numerator = (rx * ry).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(denominator > 0, numerator / denominator, 0.0)
    return np.clip(r, -1.0, 1.0)


def _complete(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho over the pairs where both are finite; 0 when either side is constant
    (see the module docstring) or fewer than two pairs are left."""
    x, y = _complete(x, y)
    if x.size < 2:
        return 0.0
    return float(_rank_corr(x, y))


def bootstrap_interval(
    x: np.ndarray,
    y: np.ndarray,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `spearman(x, y)`: pairs resampled with replacement
    (`numpy.random.default_rng(seed).integers(0, n, (resamples, n))`), a constant resample
    counted as 0 like the estimate."""
    x, y = _complete(x, y)
    if x.size < 2:
        return 0.0, 0.0
    draws = np.random.default_rng(seed).integers(0, x.size, size=(resamples, x.size))
    rhos = _rank_corr(x[draws], y[draws])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(rhos, [tail, 100 - tail])
    return float(low), float(high)


def cross_correlations(known: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """(k, k) matrix of `spearman(known[:, j], scored[:, k])`: the diagonal is each trait's
    validity, the rest how much of trait j leaks into the score of trait k."""
    known, scored = np.asarray(known, dtype=np.float64), np.asarray(scored, dtype=np.float64)
    return np.array(
        [
            [spearman(known[:, j], scored[:, k]) for k in range(scored.shape[1])]
            for j in range(known.shape[1])
        ]
    )


def max_off_diagonal(matrix: np.ndarray) -> tuple[float, tuple[int, int]]:
    """The largest |r| off the diagonal of a square matrix and its (row, column)."""
    off = np.abs(np.asarray(matrix, dtype=np.float64))
    np.fill_diagonal(off, -1.0)
    row, col = np.unravel_index(int(np.argmax(off)), off.shape)
    return float(off[row, col]), (int(row), int(col))


def acquiescence(responses: np.ndarray, instrument: Instrument) -> float | None:
    """Mean agreement regardless of content, in 1-5 units off the midpoint (+ agrees with
    everything, - disagrees): the mean over personas of the flags' balanced index (the raw
    answers before reverse keying, forward and reverse items weighted alike, so that trait
    levels cancel). None when no persona has items of both keyings."""
    index = acquiescence_index(np.asarray(responses, dtype=np.float64), instrument)
    index = index[np.isfinite(index)]
    return float(index.mean() - MIDPOINT) if index.size else None


def mean_entropy(entropies: list[list[float | None] | None]) -> float | None:
    """Mean entropy (nats) of the answer distributions over every item answered with one;
    None when no answer has one (text and batch modes)."""
    values = np.array(
        [v for row in entropies for v in (row or []) if v is not None], dtype=np.float64
    )
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def rating(r: float) -> str:
    """What a correlation of known and scored levels is good for (see `RATINGS`)."""
    return next((word for low, word in RATINGS if r >= low), "no signal")


def validity(
    known: np.ndarray,
    scored: np.ndarray,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Any]:
    """Per trait: rho of known and scored levels with its bootstrap interval (each trait
    resampled with its own seed, `seed + trait index`), the pairs used and whether either side
    was constant; the cross-correlation matrix and its largest |r| off the diagonal
    (discriminant validity)."""
    known, scored = np.asarray(known, dtype=np.float64), np.asarray(scored, dtype=np.float64)
    traits: dict[str, Any] = {}
    for k, trait in enumerate(TRAITS):
        x, y = _complete(known[:, k], scored[:, k])
        low, high = bootstrap_interval(x, y, resamples=resamples, seed=seed + k, level=level)
        traits[trait] = {
            "r": spearman(x, y),
            "ci": [low, high],
            "n": int(x.size),
            "constant": bool(is_constant(x) or is_constant(y)),
            "scored_mean": float(y.mean()) if y.size else None,
            "scored_sd": float(y.std()) if y.size else None,
        }
    cross = cross_correlations(known, scored)
    worst, (row, col) = max_off_diagonal(cross)
    return {
        "traits": traits,
        "cross": cross,
        "discriminant_max_abs": worst,
        "discriminant_pair": [TRAITS[row], TRAITS[col]],
        "bootstrap": {"resamples": resamples, "seed": seed, "level": level},
    }
