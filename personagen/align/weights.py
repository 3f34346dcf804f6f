"""Importance weights that can be trusted: Pareto smoothing (PSIS) or truncation, and Kish ESS.

Raw density-ratio weights are heavy-tailed when the persona pool under-covers part of the
reference: a handful of personas would take most of the mass. PSIS (Vehtari, Simpson, Gelman,
Yao & Gabry 2024, "Pareto smoothed importance sampling") replaces the largest weights by the
expected order statistics of a generalized Pareto fit to the tail, and its shape estimate k-hat
says how reliable the weights are (k-hat > 0.7: the estimate is unreliable whatever we do).
Truncation (Ionides 2008) caps each weight at mean(w) * sqrt(S) instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp


def kish_ess(weights: np.ndarray) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2: the row count when weights are equal."""
    w = np.asarray(weights, dtype=np.float64)
    return float(w.sum() ** 2 / np.sum(w**2))


@dataclass(frozen=True)
class SmoothedWeights:
    weights: np.ndarray
    """Normalised weights (sum 1)."""
    khat: float
    """Pareto shape of the raw weights' tail (nan for truncation)."""
    ess: float
    """Kish effective sample size of the smoothed weights."""


def psis(log_weights: np.ndarray) -> SmoothedWeights:
    """Pareto-smoothed weights from raw log weights (natural log, any shift)."""
    lw = np.asarray(log_weights, dtype=np.float64).copy()
    lw -= lw.max()
    size = lw.size
    tail_len = math.ceil(min(0.2 * size, 3.0 * math.sqrt(size)))
    khat = math.inf
    if tail_len >= 5 and size > tail_len + 1:
        order = np.argsort(lw, kind="stable")
        tail = order[-tail_len:]
        cutoff = max(lw[order[-tail_len - 1]], math.log(np.finfo(float).tiny))
        exceed = np.exp(lw[tail]) - math.exp(cutoff)
        khat, sigma = _gpd_fit(exceed)
        if math.isfinite(khat) and sigma > 0:
            probs = (np.arange(tail_len) + 0.5) / tail_len
            smoothed = np.log(_gpd_quantile(probs, khat, sigma) + math.exp(cutoff))
            lw[tail] = np.minimum(smoothed, 0.0)
    weights = np.exp(lw - logsumexp(lw))
    return SmoothedWeights(weights=weights, khat=float(khat), ess=kish_ess(weights))


def truncate(log_weights: np.ndarray) -> SmoothedWeights:
    """Weights capped at mean * sqrt(S) (truncated importance sampling), normalised."""
    lw = np.asarray(log_weights, dtype=np.float64)
    w = np.exp(lw - lw.max())
    w = np.minimum(w, w.mean() * math.sqrt(w.size))
    w /= w.sum()
    return SmoothedWeights(weights=w, khat=math.nan, ess=kish_ess(w))


def _gpd_fit(x: np.ndarray) -> tuple[float, float]:
    """Generalized Pareto (shape k, scale sigma) of exceedances: Zhang & Stephens (2009).

    The empirical-Bayes estimate PSIS uses, with its weakly informative prior on k.
    """
    x = np.sort(np.asarray(x, dtype=np.float64))
    n = x.size
    if x[-1] <= 0:
        return math.inf, 0.0
    m = 30 + int(math.sqrt(n))
    b = 1.0 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))
    b /= 3.0 * x[max(int(n / 4 + 0.5) - 1, 0)]
    b += 1.0 / x[-1]
    k = np.log1p(-b[:, None] * x).mean(axis=1)
    profile = n * (np.log(-b / k) - k - 1.0)
    post = 1.0 / np.exp(profile - profile[:, None]).sum(axis=1)
    keep = post >= 10 * np.finfo(float).eps
    post = post[keep] / post[keep].sum()
    b_post = float(np.dot(b[keep], post))
    k_post = float(np.log1p(-b_post * x).mean())
    sigma = -k_post / b_post
    k_post = (n * k_post + 10 * 0.5) / (n + 10)
    return k_post, sigma


def _gpd_quantile(p: np.ndarray, k: float, sigma: float) -> np.ndarray:
    if abs(k) < 1e-12:
        return -sigma * np.log1p(-p)
    return sigma * np.expm1(-k * np.log1p(-p)) / k
