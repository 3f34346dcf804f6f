"""Density ratios p_reference(x) / p_personas(x) at the personas, for importance weights.

Two estimators:

- `kde_log_ratio`: Gaussian kernel density estimates of both sets. Each set is whitened with
  its own covariance and smoothed with Scott's factor n^(-1/(d+4)) — exactly scipy's
  `gaussian_kde` kernel, evaluated with scikit-learn's KD-tree (`rtol`) so it scales. Why Scott:
  Big Five scores are unimodal and close to Gaussian, for which Scott's rule is the AMISE-optimal
  bandwidth; it needs no fitting (cross-validating a bandwidth per run costs O(n^2 * grid) for
  little gain on such densities). The personas' own density is leave-one-out: a persona's own
  kernel would otherwise dominate exactly where the pool is sparse, the places IS must up-weight.
- `classifier_log_ratio`: a probabilistic classifier (gradient-boosted trees, scikit-learn's
  `HistGradientBoostingClassifier`, log-loss so its probabilities are calibrated) tells reference
  rows from personas with balanced class weights; ratio = p / (1 - p). Probabilities for the
  personas are cross-fitted (each fold predicted by a model that did not see it).
"""

from __future__ import annotations

import math

import numpy as np

_LOG_2PI = math.log(2 * math.pi)


def scott_factor(n: float, d: int) -> float:
    """Scott's bandwidth factor, in units of the data's standard deviations."""
    return float(n ** (-1.0 / (d + 4)))


def _whitener(x: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean, inverse Cholesky factor and log|det L| of the (weighted) covariance of x."""
    mean = np.average(x, axis=0, weights=weights)
    cov = np.atleast_2d(np.cov(x, rowvar=False, aweights=weights))
    cov += np.eye(cov.shape[0]) * 1e-9 * max(np.trace(cov), 1e-12)
    chol = np.linalg.cholesky(cov)
    return mean, np.linalg.inv(chol), float(np.log(np.diag(chol)).sum())


def kde_log_density(
    data: np.ndarray,
    points: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    leave_one_out: bool = False,
    rtol: float = 1e-4,
) -> np.ndarray:
    """log p(points) under a Gaussian KDE of `data` (Scott's rule on the data's covariance).

    With `leave_one_out`, `points` must be `data` itself and each row's own kernel is removed.
    """
    from sklearn.neighbors import KernelDensity

    data = np.asarray(data, dtype=np.float64)
    n, d = data.shape
    n_eff = n if weights is None else float(weights.sum() ** 2 / np.dot(weights, weights))
    h = scott_factor(n_eff, d)
    mean, inv_chol, log_det = _whitener(data, weights)
    z_data = (data - mean) @ inv_chol.T
    z_points = (np.asarray(points, dtype=np.float64) - mean) @ inv_chol.T
    kde = KernelDensity(kernel="gaussian", bandwidth=h, rtol=rtol, algorithm="kd_tree")
    kde.fit(z_data, sample_weight=weights)
    log_p = kde.score_samples(z_points)
    if leave_one_out:
        if weights is not None:
            raise ValueError("leave_one_out needs unweighted data")
        log_self = -0.5 * d * _LOG_2PI - d * math.log(h)
        own = math.exp(log_self) / n
        p = np.maximum(np.exp(log_p) - own, np.exp(log_self) * 1e-12 / n) * (n / (n - 1))
        log_p = np.log(p)
    return log_p - log_det


def kde_log_ratio(
    personas: np.ndarray,
    reference: np.ndarray,
    *,
    reference_weights: np.ndarray | None = None,
    max_rows: int = 50_000,
    seed: int = 0,
) -> np.ndarray:
    """log p_ref(x_j) - log p_personas(x_j) for every persona row x_j.

    Each KDE is fitted on at most `max_rows` rows (a seeded uniform subsample beyond that, with
    Scott's factor for the subsample's size): a KDE's accuracy barely improves past tens of
    thousands of rows in 5 dimensions, while its cost grows with them.
    """
    rng = np.random.default_rng(seed)
    ref, ref_w = reference, reference_weights
    if ref.shape[0] > max_rows:
        keep = rng.choice(ref.shape[0], size=max_rows, replace=False)
        ref, ref_w = ref[keep], None if ref_w is None else ref_w[keep]
    log_ref = kde_log_density(ref, personas, weights=ref_w)
    if personas.shape[0] > max_rows:
        pool = personas[rng.choice(personas.shape[0], size=max_rows, replace=False)]
        return log_ref - kde_log_density(pool, personas)
    log_pool = kde_log_density(personas, personas, leave_one_out=personas.shape[0] > 1)
    return log_ref - log_pool


def classifier_log_ratio(
    personas: np.ndarray,
    reference: np.ndarray,
    *,
    reference_weights: np.ndarray | None = None,
    seed: int = 0,
    folds: int = 3,
) -> np.ndarray:
    """log p/(1-p) of a balanced reference-vs-personas classifier, cross-fitted on personas."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold

    p_rows, r_rows = personas.shape[0], reference.shape[0]
    x = np.vstack([personas, reference])
    y = np.concatenate([np.zeros(p_rows, dtype=np.int8), np.ones(r_rows, dtype=np.int8)])
    ref_w = np.ones(r_rows) if reference_weights is None else np.asarray(reference_weights)
    sample_w = np.concatenate([np.full(p_rows, 1.0 / p_rows), ref_w / ref_w.sum()]) * x.shape[0]
    logit = np.zeros(p_rows)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(x, y):
        model = HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.1, early_stopping=True, random_state=seed
        )
        model.fit(x[train], y[train], sample_weight=sample_w[train])
        held = test[test < p_rows]
        prob = np.clip(model.predict_proba(x[held])[:, 1], 1e-4, 1 - 1e-4)
        logit[held] = np.log(prob) - np.log1p(-prob)
    return logit
