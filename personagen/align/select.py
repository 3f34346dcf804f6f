"""From per-candidate masses to the chosen personas: distinct (capacity one) or with replacement.

Without replacement we use probability-proportional-to-size (pi-ps) sampling: each candidate gets
an inclusion probability `pi_j = min(1, c * w_j)` with `sum(pi) = n`, and systematic sampling
draws exactly `n` distinct candidates with exactly those inclusion probabilities. This keeps the
weights' meaning (unlike successive draws without replacement, which flatten large weights) and
has lower variance than independent draws. With replacement, systematic resampling gives each
candidate floor(n w_j) or ceil(n w_j) copies.

The candidates are laid out along a Z-order (Morton) curve through feature space before the
systematic pass, so the sample is spread evenly over space (implicit stratification: neighbours
on the curve are neighbours in trait space). The inclusion probabilities stay exactly pi; only
the joint selection is more balanced. In benchmarks/align_quality.py this lowers the energy
distance by 5-10% over a random order.
"""

from __future__ import annotations

import numpy as np


def inclusion_probabilities(weights: np.ndarray, n: int) -> np.ndarray:
    """pi_j = min(1, c w_j) with sum(pi) = n (iterative capping of the largest weights)."""
    w = np.asarray(weights, dtype=np.float64)
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite and non-negative")
    w = w / w.max(initial=1.0) if w.size and w.max() > 0 else w
    positive = int(np.count_nonzero(w))
    if n > positive:
        raise ValueError(f"cannot choose {n} distinct candidates: only {positive} have weight > 0")
    pi = np.zeros_like(w)
    capped = np.zeros(w.shape, dtype=bool)
    while True:
        free = ~capped
        budget = n - np.count_nonzero(capped)
        if budget == 0:
            break
        scale = budget / w[free].sum()
        pi[free] = w[free] * scale
        over = free & (pi >= 1.0)
        if not over.any():
            break
        capped |= over
        pi[capped] = 1.0
    return pi


def morton_order(points: np.ndarray, bits: int = 10) -> np.ndarray:
    """Row order along a Z-order curve (each column scaled to its range, `bits` bits each)."""
    x = np.asarray(points, dtype=np.float64)
    lo, hi = x.min(axis=0), x.max(axis=0)
    q = ((x - lo) / np.where(hi > lo, hi - lo, 1.0) * (2**bits - 1)).round().astype(np.uint64)
    dims = x.shape[1]
    bits = min(bits, 64 // dims)
    key = np.zeros(x.shape[0], dtype=np.uint64)
    for b in range(bits):
        for d in range(dims):
            key |= ((q[:, d] >> np.uint64(b)) & np.uint64(1)) << np.uint64(b * dims + d)
    return np.argsort(key, kind="stable")


def systematic_sample(
    pi: np.ndarray, rng: np.random.Generator, order: np.ndarray | None = None
) -> np.ndarray:
    """Indices drawn by systematic sampling along `order` (default random); distinct if pi <= 1.

    Draws round(sum(pi)) units; candidate j is drawn floor or ceil of pi_j times, and with
    probability frac(pi_j) the extra one, so E[count_j] = pi_j. Returned sorted.
    """
    pi = np.asarray(pi, dtype=np.float64)
    order = rng.permutation(pi.size) if order is None else order
    edges = np.concatenate(([0.0], np.cumsum(pi[order])))
    total = round(float(edges[-1]))
    edges[-1] = total
    points = rng.random() + np.arange(total)
    hits = np.searchsorted(edges, points, side="right") - 1
    return np.sort(order[hits])


def choose(
    weights: np.ndarray,
    n: int,
    *,
    replace: bool,
    seed: int,
    points: np.ndarray | None = None,
) -> np.ndarray:
    """`n` candidate indices from non-negative weights (distinct unless `replace`), sorted.

    With `points` (the candidates' features) the systematic pass follows their Morton order.
    """
    rng = np.random.default_rng(seed)
    w = np.asarray(weights, dtype=np.float64)
    if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.max(initial=0.0) > 0):
        raise ValueError("weights must be finite, non-negative and not all zero")
    w = w / w.max()
    order = None if points is None else morton_order(points)
    if replace:
        return systematic_sample(w * (n / w.sum()), rng, order)
    return systematic_sample(inclusion_probabilities(w, n), rng, order)
