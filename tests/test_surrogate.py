"""The surrogate's numerics: ridge with leave-one-out alpha against scikit-learn's RidgeCV,
leave-one-out residuals and jackknife+ intervals against refitting by brute force, the choice of
the zero-shot column's weight, coverage on synthetic data, agreement by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Ridge as SkRidge
from sklearn.linear_model import RidgeCV

from personagen.psychometrics.surrogate import (
    ALPHAS,
    MIN_ROWS,
    agreement,
    fit_ridge,
    fit_surrogate,
    fit_trait,
    held_out,
    predict,
)


@pytest.mark.parametrize(("n", "d"), [(12, 40), (20, 384), (60, 6)])
def test_ridge_matches_sklearn_ridgecv(n, d):
    """Wide (n < d, as a 10% subsample of embeddings) and tall data: the same alpha,
    coefficients, intercept and leave-one-out squared errors as RidgeCV's efficient LOO."""
    rng = np.random.default_rng(n + d)
    x = rng.normal(size=(n, d))
    y = x[:, 0] - 0.5 * x[:, 1] + rng.normal(scale=0.5, size=n) + 3
    ours = fit_ridge(x, y)
    theirs = RidgeCV(alphas=ALPHAS, store_cv_results=True).fit(x, y)
    assert ours.alpha == theirs.alpha_
    assert ours.coef == pytest.approx(theirs.coef_, abs=1e-9)
    assert ours.intercept == pytest.approx(theirs.intercept_, abs=1e-9)
    column = list(ALPHAS).index(theirs.alpha_)
    assert ours.loo_residuals**2 == pytest.approx(theirs.cv_results_[:, column], rel=1e-6)
    assert ours.predict(x) == pytest.approx(theirs.predict(x), abs=1e-9)


def brute_force(x, y, alpha, new, level):
    """Leave-one-out residuals and the jackknife+ interval of `new` by refitting n times."""
    n = len(y)
    residuals, at_new = [], []
    for i in range(n):
        keep = np.arange(n) != i
        model = SkRidge(alpha=alpha).fit(x[keep], y[keep])
        residuals.append(y[i] - model.predict(x[i : i + 1])[0])
        at_new.append(model.predict(new))
    residuals, at_new = np.array(residuals), np.array(at_new).T
    spread = np.abs(residuals)
    high = np.sort(at_new + spread, axis=1)[:, math.ceil(level * (n + 1)) - 1]
    low = np.sort(at_new - spread, axis=1)[:, math.floor((1 - level) * (n + 1)) - 1]
    return residuals, low, high


@settings(max_examples=25, deadline=None)
@given(
    st.integers(10, 25),
    st.integers(2, 30),
    st.sampled_from([0.8, 0.9]),
    st.integers(0, 10_000),
)
def test_loo_residuals_and_jackknife_plus_equal_refitting(n, d, level, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = x @ rng.normal(size=d) + rng.normal(size=n)
    new = rng.normal(size=(4, d))
    model = fit_ridge(x, y)
    residuals, low, high = brute_force(x, y, model.alpha, new, level)
    assert model.loo_residuals == pytest.approx(residuals, abs=1e-7)
    ours_low, ours_high = model.interval(new, level)
    assert ours_low == pytest.approx(low, abs=1e-7) and ours_high == pytest.approx(high, abs=1e-7)
    assert np.all(ours_low <= ours_high)


def test_too_few_rows_for_the_level_give_an_unbounded_side():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=5)
    low, high = fit_ridge(x, y).interval(x[:2], 0.9)  # ceil(0.9 * 6) = 6 > 5 rows
    assert np.all(np.isinf(high)) and np.all(np.isinf(low))  # floor(0.1 * 6) = 0
    with pytest.raises(ValueError, match=f"at least {MIN_ROWS} rows"):
        fit_ridge(x[:2], y[:2])


def test_the_zero_shot_column_is_weighted_by_leave_one_out_error():
    """Where the zero-shot score carries the signal and the embedding is noise, the fit gives the
    column weight; where the column is noise and the embedding carries it, weight 0 or the
    column helps no more than a little."""
    rng = np.random.default_rng(3)
    n, d = 30, 50
    x = rng.normal(size=(n, d))
    prior = rng.normal(size=n)
    leaning = fit_trait(x, 3 + prior + rng.normal(scale=0.2, size=n), prior)
    assert leaning.weight > 0
    alone = fit_trait(x, 3 + prior + rng.normal(scale=0.2, size=n), None)
    assert leaning.ridge.loo_mse < alone.ridge.loo_mse and alone.weight == 0.0
    features = leaning.features(x, prior)
    assert features.shape == (n, d + 1) and features[:, -1] == pytest.approx(leaning.weight * prior)


def synthetic(n: int, seed: int, noise: float = 0.4):
    """Traits that are a linear function of 20-dimensional vectors, plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 20))
    weights = rng.normal(size=(20, 5)) / np.sqrt(20)
    targets = 3 + 0.8 * (x @ weights) + rng.normal(scale=noise, size=(n, 5))
    return x, np.clip(targets, 1, 5)


def test_a_surrogate_recovers_learnable_traits_with_calibrated_intervals():
    x, targets = synthetic(600, seed=5)
    train, test = slice(0, 100), slice(100, None)
    models = fit_surrogate(x[train], targets[train])
    pred, low, high = predict(models, x[test])
    rows = agreement(targets[test], pred, low, high)
    assert all(row["n"] == 500 for row in rows)
    assert min(row["r"] for row in rows) > 0.75
    coverage = np.mean([row["coverage"] for row in rows])
    assert 0.85 <= coverage <= 0.97, coverage  # jackknife+ at 90%
    assert np.all((pred >= 1) & (pred <= 5)) and np.all((low >= 1) & (low <= high) & (high <= 5))
    # the held-out estimate from the training rows alone tells about the same story
    held = agreement(targets[train], *held_out(x[train], targets[train], folds=5, seed=1))
    assert min(row["r"] for row in held) > 0.7
    assert abs(np.mean([row["coverage"] for row in held]) - coverage) < 0.08


def test_traits_without_enough_scores_get_no_model():
    x, targets = synthetic(20, seed=2)
    targets[:, 1] = np.nan  # an instrument without this trait
    targets[2:, 3] = np.nan  # only two personas with this trait
    models = fit_surrogate(x, targets)
    assert models[1] is None and models[3] is None and models[0] is not None
    pred, low, high = predict(models, x[:3])
    assert np.isnan(pred[:, [1, 3]]).all() and np.isnan(low[:, 1]).all()
    assert np.isnan(high[:, 3]).all()
    assert np.isfinite(pred[:, [0, 2, 4]]).all()


def test_agreement_by_hand():
    targets = np.array([[1.0, 2.0], [2.0, np.nan], [3.0, 2.0], [4.0, 5.0]])
    pred = np.array([[1.5, 3.0], [2.0, 3.0], [2.5, 3.0], [4.5, 3.0]])
    low, high = pred - 0.6, pred + 0.6
    first, second = agreement(targets, pred, low, high)
    assert first["n"] == 4 and first["mae"] == pytest.approx(0.375)
    assert first["r"] == pytest.approx(np.corrcoef(targets[:, 0], pred[:, 0])[0, 1])
    assert first["coverage"] == 1.0 and first["width"] == pytest.approx(1.2)
    assert second["n"] == 3 and second["r"] is None  # a constant prediction has no correlation
    assert second["mae"] == pytest.approx(4 / 3) and second["coverage"] == 0.0
