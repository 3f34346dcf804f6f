"""Trait scores predicted from narrative embeddings, learnt from LLM-scored personas.

Why: the inventory is most of a build's LLM cost (one request per item and persona). A surrogate
LLM-scores a random subsample, fits one ridge regression per trait from the narrative embedding to
those scores, and predicts the other personas' traits with an interval.

- **Features**: the narrative embedding, plus (optionally) the trait's zero-shot keyed similarity
  (`personagen.psychometrics.embedding_scorer`) as one more column with weight `w`. That column
  points the regression at the items' meaning, which a few dozen LLM-scored personas cannot
  find among hundreds of embedding dimensions on their own.
- **Fit**: ridge regression with an unpenalised intercept. The penalty `alpha` (and `w`, over
  `PRIOR_WEIGHTS`, 0 = embedding only) is chosen per trait by exact leave-one-out error, in
  closed form from one SVD of the centred features per `w` (the "efficient LOO" of
  scikit-learn's `RidgeCV`, whose choice of alpha and coefficients it reproduces).
- **Intervals**: jackknife+ (Barber, Candès, Ramdas & Tibshirani 2021, "Predictive inference
  with the jackknife+"), from the leave-one-out models, also in closed form for ridge. Coverage
  is guaranteed at least 1 - 2(1 - level), and close to `level` in practice; `held_out` measures
  it on personas whose LLM scores the fit did not see. Predictions and intervals are clipped to
  the 1-5 trait scale.

Arrays only: the caller brings the vectors and the LLM scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALPHAS = tuple(float(a) for a in np.logspace(-3, 4, 29))
"""Ridge penalties tried (unit-length sentence embeddings: 1e-3 is nearly least squares, 1e4
nearly the mean)."""
PRIOR_WEIGHTS = (0.0, 0.1, 0.3, 1.0, 3.0)
"""Weights of the zero-shot column tried; relative to the penalty they set how much the fit
leans on it."""
LEVEL = 0.9
"""Nominal coverage of the prediction intervals."""
MIN_ROWS = 3
"""Fewest LLM-scored personas a trait's model is fitted on (leave-one-out needs a few)."""
SCALE = (1.0, 5.0)


@dataclass(frozen=True)
class Ridge:
    """A ridge regression fitted to (n, d) features, with what its leave-one-out models need."""

    alpha: float
    coef: np.ndarray
    intercept: float
    loo_residuals: np.ndarray
    """y_i minus the prediction of the model fitted without row i (signed)."""
    loo_mse: float
    x_mean: np.ndarray
    u: np.ndarray
    s: np.ndarray
    vt: np.ndarray
    """SVD of the centred training features."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.coef + self.intercept

    def interval(self, x: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
        """Jackknife+ interval of each row of `x` (±inf where too few training rows for the
        level). The leave-one-out prediction at x is ŷ(x) - k(x, i) R_i, with R_i the signed
        leave-one-out residual and k(x, i) = 1/n + (x - x̄) V diag(s/(s²+α)) U_iᵀ."""
        n = self.u.shape[0]
        shrink = self.s / (self.s**2 + self.alpha)
        centred = np.asarray(x, dtype=np.float64) - self.x_mean
        k = 1.0 / n + ((centred @ self.vt.T) * shrink) @ self.u.T  # (m, n)
        loo = self.predict(x)[:, None] - k * self.loo_residuals[None, :]
        spread = np.abs(self.loo_residuals)[None, :]
        upper_rank = math.ceil(level * (n + 1))
        lower_rank = math.floor((1 - level) * (n + 1))
        high = (
            np.sort(loo + spread, axis=1)[:, upper_rank - 1]
            if upper_rank <= n
            else np.full(len(loo), np.inf)
        )
        low = (
            np.sort(loo - spread, axis=1)[:, lower_rank - 1]
            if lower_rank >= 1
            else np.full(len(loo), -np.inf)
        )
        return low, high


def fit_ridge(x: np.ndarray, y: np.ndarray, alphas: Sequence[float] = ALPHAS) -> Ridge:
    """Ridge regression of y on x with an unpenalised intercept, alpha chosen from `alphas` by
    exact leave-one-out mean squared error (the first of equals)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    if n < MIN_ROWS:
        raise ValueError(f"a ridge fit needs at least {MIN_ROWS} rows, got {n}")
    x_mean, y_mean = x.mean(axis=0), y.mean()
    u, s, vt = np.linalg.svd(x - x_mean, full_matrices=False)
    grid = np.asarray(alphas, dtype=np.float64)[:, None]
    fraction = s**2 / (s**2 + grid)  # (alphas, rank)
    projected = u.T @ (y - y_mean)
    fitted = y_mean + (fraction * projected) @ u.T  # (alphas, n)
    leverage = 1.0 / n + fraction @ (u**2).T
    residuals = (y - fitted) / (1.0 - leverage)
    mse = np.mean(residuals**2, axis=1)
    best = int(np.argmin(mse))
    alpha = float(grid[best, 0])
    coef = vt.T @ (s / (s**2 + alpha) * projected)
    return Ridge(
        alpha=alpha,
        coef=coef,
        intercept=float(y_mean - x_mean @ coef),
        loo_residuals=residuals[best],
        loo_mse=float(mse[best]),
        x_mean=x_mean,
        u=u,
        s=s,
        vt=vt,
    )


def _features(x: np.ndarray, prior: np.ndarray | None, weight: float) -> np.ndarray:
    """The embedding, with the zero-shot column `prior` times `weight` appended (if any)."""
    return x if prior is None else np.column_stack([x, weight * prior])


@dataclass(frozen=True)
class TraitModel:
    """One trait's ridge fit and the weight of its zero-shot column (0: embedding only)."""

    ridge: Ridge
    weight: float

    def features(self, x: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
        return _features(x, prior, self.weight)


def fit_trait(
    x: np.ndarray,
    y: np.ndarray,
    prior: np.ndarray | None = None,
    alphas: Sequence[float] = ALPHAS,
    weights: Sequence[float] = PRIOR_WEIGHTS,
) -> TraitModel:
    """The best leave-one-out fit over `weights` of the zero-shot column `prior` (None: the
    embedding alone); the first of equals."""
    models = [
        TraitModel(fit_ridge(_features(x, prior, weight), y, alphas), weight)
        for weight in (weights if prior is not None else (0.0,))
    ]
    return min(models, key=lambda model: model.ridge.loo_mse)


Surrogate = list[TraitModel | None]
"""One model per trait column (None: too few LLM-scored personas with that trait)."""


def fit_surrogate(
    x: np.ndarray,
    targets: np.ndarray,
    prior: np.ndarray | None = None,
    alphas: Sequence[float] = ALPHAS,
    weights: Sequence[float] = PRIOR_WEIGHTS,
) -> Surrogate:
    """One `fit_trait` per column of `targets` (n, traits), on the rows where it is finite;
    `prior` (n, traits): the zero-shot columns, or None."""
    models: Surrogate = []
    for j in range(targets.shape[1]):
        rows = np.isfinite(targets[:, j])
        if rows.sum() < MIN_ROWS:
            models.append(None)
            continue
        column = None if prior is None else prior[rows, j]
        models.append(fit_trait(x[rows], targets[rows, j], column, alphas, weights))
    return models


def predict(
    models: Surrogate, x: np.ndarray, prior: np.ndarray | None = None, level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predictions, lows, highs), each (m, traits), clipped to the 1-5 scale; NaN for a trait
    without a model."""
    shape = (len(x), len(models))
    pred, low, high = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    for j, model in enumerate(models):
        if model is None:
            continue
        features = model.features(x, None if prior is None else prior[:, j])
        pred[:, j] = model.ridge.predict(features)
        low[:, j], high[:, j] = model.ridge.interval(features, level)
    lo, hi = SCALE
    return np.clip(pred, lo, hi), np.clip(low, lo, hi), np.clip(high, lo, hi)


def held_out(
    x: np.ndarray,
    targets: np.ndarray,
    prior: np.ndarray | None = None,
    folds: int = 5,
    level: float = LEVEL,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold (predictions, lows, highs) of every row: `folds`-fold cross-validation, each
    fold predicted by a surrogate fitted (alpha and weight chosen) without it."""
    n = len(x)
    fold = np.random.default_rng(seed).permutation(n) % min(folds, n)
    shape = targets.shape
    pred, low, high = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    for k in np.unique(fold):
        test = fold == k
        train_prior = None if prior is None else prior[~test]
        models = fit_surrogate(x[~test], targets[~test], train_prior)
        test_prior = None if prior is None else prior[test]
        pred[test], low[test], high[test] = predict(models, x[test], test_prior, level)
    return pred, low, high


def agreement(
    targets: np.ndarray, pred: np.ndarray, low: np.ndarray, high: np.ndarray
) -> list[dict[str, float | int | None]]:
    """Per trait column: rows compared (n), Pearson r, mean absolute error, interval coverage and
    mean interval width, over the rows where both target and prediction exist (None where
    undefined)."""
    out: list[dict[str, float | int | None]] = []
    for j in range(targets.shape[1]):
        rows = np.isfinite(targets[:, j]) & np.isfinite(pred[:, j])
        y, p = targets[rows, j], pred[rows, j]
        n = int(rows.sum())
        r = float(np.corrcoef(y, p)[0, 1]) if n > 2 and y.std() > 0 and p.std() > 0 else None
        inside = (low[rows, j] <= y) & (y <= high[rows, j])
        out.append(
            {
                "n": n,
                "r": r,
                "mae": float(np.mean(np.abs(y - p))) if n else None,
                "coverage": float(inside.mean()) if n else None,
                "width": float(np.mean(high[rows, j] - low[rows, j])) if n else None,
            }
        )
    return out
