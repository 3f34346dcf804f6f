"""Diversity of a persona set: does it cover the population, or collapse onto a few archetypes?

A set can match a reference's marginals while its personas crowd into a few regions of trait
space (the "persona collapse" of LLM-written sets). Three views:

- `coverage`: the share of reference people with a persona nearby: reference point r is covered
  when a persona lies within the distance of r's k-th nearest reference neighbour (Naeem et al.
  2020, "Reliable Fidelity and Diversity Metrics for Generative Models").
- `cell_uniformity`: how evenly the set spreads over the cells of a grid cut at the reference's
  quantiles of each trait: the entropy of the set's cell shares over the largest entropy n
  personas could have (1 = spread as evenly as possible, 0 = all in one cell).
- `vendi_score` and `mean_cosine_distance` of narrative embeddings (Friedman & Dieng 2023, "The
  Vendi Score"): the effective number of distinct narratives, and how far apart they lie.

Coverage and uniformity depend on the set's size, so `trait_diversity` also reports what a
uniform sample of the same number of real people gets, with the same settings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial import cKDTree

COVERAGE_K = 5
COVERAGE_MAX_REFERENCE = 2000
"""Reference rows coverage is measured on (a seeded uniform subsample)."""
CELL_BINS = 3
"""Quantile cells per trait: 3**5 = 243 cells for the Big Five."""


def coverage(x: np.ndarray, reference: np.ndarray, *, k: int = COVERAGE_K) -> float:
    """Share of `reference` points within their k-NN radius (among the reference) of a persona
    in `x` (Naeem et al. 2020)."""
    if reference.shape[0] <= k:
        raise ValueError(f"coverage needs more than k={k} reference rows, got {reference.shape[0]}")
    tree = cKDTree(reference)
    radius = tree.query(reference, k=k + 1)[0][:, k]  # the 0-th neighbour is the point itself
    nearest = cKDTree(x).query(reference, k=1)[0]
    return float(np.mean(nearest <= radius))


def cell_edges(reference: np.ndarray, bins: int = CELL_BINS) -> np.ndarray:
    """(traits, bins - 1) inner cut points: the reference's quantiles of each trait."""
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    return np.quantile(reference, qs, axis=0).T


def cell_uniformity(x: np.ndarray, edges: np.ndarray) -> float:
    """Entropy of the set's shares of the quantile cells over the most n personas can have,
    log(min(n, cells)); 1.0 for a single persona."""
    bins = edges.shape[1] + 1
    index = np.zeros(x.shape[0], dtype=np.int64)
    for j in range(x.shape[1]):
        index = index * bins + np.searchsorted(edges[j], x[:, j], side="right")
    shares = np.unique(index, return_counts=True)[1] / x.shape[0]
    most = np.log(min(x.shape[0], bins ** x.shape[1]))
    return float(-(shares * np.log(shares)).sum() / most) if most > 0 else 1.0


def trait_diversity(
    x: np.ndarray, reference: np.ndarray, *, seed: int = 0, repeats: int = 5
) -> dict[str, Any]:
    """Coverage and cell uniformity of `x`, and the mean of each over `repeats` uniform samples
    of as many real people (what they get). Coverage is measured on at most
    `COVERAGE_MAX_REFERENCE` reference rows, and the real samples are drawn from the other rows:
    a sample that included the rows it is measured on would cover itself."""
    n, m = x.shape[0], reference.shape[0]
    rng = np.random.default_rng(seed)
    order = rng.permutation(m)
    held = min(COVERAGE_MAX_REFERENCE, m - n)
    if held <= COVERAGE_K:
        raise ValueError(
            f"coverage of {n} personas needs more than {n + COVERAGE_K} reference rows, got {m}"
        )
    measured, others = reference[order[:held]], reference[order[held:]]
    edges = cell_edges(reference)
    real_cov, real_uni = [], []
    for _ in range(repeats):
        sample = others[rng.choice(others.shape[0], n, replace=False)]
        real_cov.append(coverage(sample, measured))
        real_uni.append(cell_uniformity(sample, edges))
    return {
        "coverage": coverage(x, measured),
        "coverage_real": float(np.mean(real_cov)),
        "uniformity": cell_uniformity(x, edges),
        "uniformity_real": float(np.mean(real_uni)),
        "method": {
            "coverage": f"Naeem et al. 2020, k={COVERAGE_K}, on {held:,} reference rows "
            f"(seed {seed})",
            "uniformity": f"normalised entropy over {CELL_BINS}^5 reference-quantile cells",
            "real": f"mean over {repeats} uniform samples of {n} of the other reference rows",
        },
    }


def vendi_score(embeddings: np.ndarray) -> float:
    """exp of the Shannon entropy of the eigenvalues of K/n, K the cosine similarity matrix:
    1 for identical narratives, n for mutually orthogonal ones."""
    unit = _unit_rows(embeddings)
    n = unit.shape[0]
    if n <= unit.shape[1]:
        eigen = np.linalg.eigvalsh(unit @ unit.T / n)
    else:  # K/n and X^T X / n share their non-zero eigenvalues; the latter is smaller
        eigen = np.linalg.eigvalsh(unit.T @ unit / n)
    eigen = eigen[eigen > 1e-12]
    return float(np.exp(-(eigen * np.log(eigen)).sum()))


def mean_cosine_distance(embeddings: np.ndarray) -> float:
    """Mean of 1 - cos over the distinct pairs of rows (0 when all point the same way)."""
    unit = _unit_rows(embeddings)
    n = unit.shape[0]
    if n < 2:
        return 0.0
    total = unit.sum(axis=0)
    similarity_sum = float(total @ total) - n  # all pairs, minus the n self-pairs
    return 1.0 - similarity_sum / (n * (n - 1))


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    e = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    if e.ndim != 2 or e.shape[0] == 0 or not (norms > 0).all():
        raise ValueError("embeddings must be a non-empty 2-D array of non-zero rows")
    return e / norms
