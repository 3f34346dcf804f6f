"""Where a pool does not cover the reference: the mass an unbalanced transport left unplaced.

With a KL-relaxed reference marginal (`sinkhorn` with a finite `reg_m`) an atom the pool cannot
serve at a reasonable cost keeps only part of its mass, and the rest goes to atoms the pool
serves. An atom's deficit (its mass minus its row sum, where positive) is reference mass the
chosen set does not represent; weighted by the deficits, the atoms' coordinates say which trait
region that is, so a report can name the people a pool is missing instead of only a number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

QUANTILES = (0.1, 0.5, 0.9)


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: Sequence[float]) -> list:
    """Quantiles of `values` under non-negative `weights` (the inverse of the weighted CDF)."""
    order = np.argsort(values, kind="stable")
    cdf = np.cumsum(weights[order])
    picks = np.searchsorted(cdf, np.asarray(qs) * cdf[-1], side="left")
    return [float(v) for v in values[order][np.minimum(picks, values.size - 1)]]


def uncovered(
    points: np.ndarray,
    mass: np.ndarray,
    rows: np.ndarray,
    names: Sequence[str],
    *,
    top: int = 5,
) -> dict[str, Any]:
    """Share of the reference mass left unplaced, and where: deficit-weighted trait means and
    quantiles (`QUANTILES`) against the reference's means, and the `top` atoms with the
    largest deficits. `names` label the first len(names) columns of `points` (the traits)."""
    mass = np.asarray(mass, dtype=np.float64)
    deficit = np.maximum(mass - np.asarray(rows, dtype=np.float64), 0.0)
    total, missing = float(mass.sum()), float(deficit.sum())
    dims = len(names)
    reference_mean = (mass / total) @ points[:, :dims]
    summary: dict[str, Any] = {
        "mass": missing / total,
        "atoms": int(mass.size),
        "atoms_below_half": int(np.count_nonzero(rows < 0.5 * mass)),
        "reference_mean": dict(zip(names, reference_mean.tolist(), strict=True)),
        "region": None,
    }
    if missing <= 0:
        return summary
    share = deficit / missing
    worst = np.argsort(-deficit, kind="stable")[:top]
    summary["region"] = {
        "mean": dict(zip(names, (share @ points[:, :dims]).tolist(), strict=True)),
        "quantiles": {
            name: weighted_quantiles(points[:, j], share, QUANTILES) for j, name in enumerate(names)
        },
        "top_atoms": [
            {
                "traits": dict(zip(names, points[i, :dims].tolist(), strict=True)),
                "uncovered_share": float(deficit[i] / total),
                "kept": float(rows[i] / mass[i]),
            }
            for i in worst
            if deficit[i] > 0
        ],
    }
    return summary
