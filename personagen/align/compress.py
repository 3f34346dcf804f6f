"""Reference compression: exact de-duplication, then weighted k-means atoms if still too many.

Questionnaire scores are discrete (IPIP-50 trait means move in steps of 0.1), so large reference
files repeat rows: those merge exactly (an atom per distinct row, mass = rows or weights).
If more distinct rows remain than `max_atoms`, FAISS k-means (weighted, seeded) fits
`max_atoms` centroids and each atom gets the mass of the rows nearest to it. That is an
approximation: the atom stands for its cell, and `cell_variance` (the mean squared distance of
a row to its atom, per dimension) says how much spread the compression removed. The solver then
uses eps >= cell_variance (an entropic kernel of variance eps/2 per dimension): half the lost
spread comes back as blur; blurring by all of it over-smoothed when atoms were few
(benchmarks/align_scale.py, approximation section).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Atoms:
    points: np.ndarray
    """(K, d) atom coordinates."""
    mass: np.ndarray
    """(K,) masses, summing to 1."""
    rows: int
    """Reference rows they stand for."""
    distinct: int
    """Distinct reference rows (after exact de-duplication)."""
    method: str
    """'exact' (de-duplication only) or 'kmeans'."""
    cell_variance: float
    """Mean squared distance of a row to its atom, per dimension (0 for 'exact')."""


def compress_reference(
    x: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    max_atoms: int,
    seed: int = 0,
    kmeans_iter: int = 10,
) -> Atoms:
    """Atoms for the reference rows `x` (optionally weighted)."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    w = np.ones(x.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    unique, inverse = np.unique(x, axis=0, return_inverse=True)
    mass = np.bincount(inverse.ravel(), weights=w, minlength=unique.shape[0])
    keep = mass > 0
    unique, mass = unique[keep], mass[keep]
    if unique.shape[0] <= max_atoms:
        return Atoms(unique, mass / mass.sum(), x.shape[0], unique.shape[0], "exact", 0.0)
    centroids = _kmeans(unique, mass, max_atoms, seed, kmeans_iter)
    from scipy.spatial import cKDTree

    _, label = cKDTree(centroids).query(unique, k=1, workers=-1)
    atom_mass = np.bincount(label, weights=mass, minlength=centroids.shape[0])
    used = atom_mass > 0
    sums = np.stack(
        [np.bincount(label, weights=mass * col, minlength=len(centroids)) for col in unique.T],
        axis=1,
    )
    points = sums / np.maximum(atom_mass, 1e-300)[:, None]
    sq = ((unique - points[label]) ** 2).sum(axis=1)
    cell_variance = float(np.dot(sq, mass) / mass.sum() / unique.shape[1])
    return Atoms(
        points[used],
        atom_mass[used] / atom_mass.sum(),
        x.shape[0],
        unique.shape[0],
        "kmeans",
        cell_variance,
    )


def _kmeans(x: np.ndarray, mass: np.ndarray, k: int, seed: int, niter: int) -> np.ndarray:
    import faiss

    # FAISS trains on a seeded subsample of about 2^18 rows (at least 4 per centroid): the
    # centroids of a 5-dimensional density settle long before every row has been seen.
    per_centroid = max(4, (1 << 18) // k)
    km = faiss.Kmeans(
        x.shape[1], k, niter=niter, seed=seed, max_points_per_centroid=per_centroid, verbose=False
    )
    km.train(np.ascontiguousarray(x, dtype=np.float32), weights=mass.astype(np.float32))
    return np.asarray(km.centroids, dtype=np.float64)
