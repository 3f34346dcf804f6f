"""Alignment algorithms on small inputs: selection, weights, Sinkhorn vs POT, shards vs one."""

from __future__ import annotations

import json
import math

import numpy as np
import ot
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import spearmanr

from personagen import TRAITS
from personagen.align.api import align
from personagen.align.compress import compress_reference
from personagen.align.coverage import uncovered, weighted_quantiles
from personagen.align.density import classifier_log_ratio, kde_log_ratio
from personagen.align.options import AlignOptions
from personagen.align.select import choose, inclusion_probabilities
from personagen.align.sharded import Graph, local_shards
from personagen.align.sinkhorn import STALL_WINDOW, sinkhorn, stalled
from personagen.align.weights import psis, truncate
from personagen.config import RayConfig
from personagen.errors import PersonagenError
from personagen.evaluate.metrics import distribution_metrics
from personagen.runtime.align_shards import ray_shards

positive_weights = arrays(
    np.float64,
    st.integers(2, 60),
    elements=st.one_of(st.just(0.0), st.floats(1e-6, 100.0, allow_nan=False)),
).filter(lambda w: np.count_nonzero(w) >= 2)


def traits(rng: np.random.Generator, rows: int, shift: float = 0.0, sd: float = 0.7):
    return np.clip(rng.normal(3.0 + shift, sd, (rows, 5)), 1, 5)


@given(positive_weights, st.data())
def test_inclusion_probabilities_are_capped_and_sum_to_n(w, data):
    n = data.draw(st.integers(1, int(np.count_nonzero(w))))
    pi = inclusion_probabilities(w, n)
    assert np.all(pi >= 0) and np.all(pi <= 1 + 1e-12)
    assert pi.sum() == pytest.approx(n)
    assert np.all(pi[w == 0] == 0)
    order = np.argsort(w, kind="stable")
    assert np.all(np.diff(pi[order]) >= -1e-12)


@given(positive_weights, st.data(), st.integers(0, 2**31))
def test_choose_without_replacement_gives_n_distinct(w, data, seed):
    n = data.draw(st.integers(1, int(np.count_nonzero(w))))
    idx = choose(w, n, replace=False, seed=seed)
    assert idx.size == n and np.unique(idx).size == n
    assert np.all(w[idx] > 0)


@given(positive_weights, st.integers(1, 200), st.integers(0, 2**31))
def test_choose_with_replacement_counts_are_floor_or_ceil(w, n, seed):
    idx = choose(w, n, replace=True, seed=seed)
    counts = np.bincount(idx, minlength=w.size)
    expected = w / w.sum() * n
    assert idx.size == n
    assert np.all(counts >= np.floor(expected - 1e-9)) and np.all(
        counts <= np.ceil(expected + 1e-9)
    )


@pytest.mark.parametrize("spatial", [False, True])
def test_systematic_sampling_hits_the_inclusion_probabilities(spatial):
    w = np.array([5.0, 1.0, 1.0, 2.0, 0.5, 0.5, 3.0, 1.0])
    points = np.random.default_rng(0).normal(size=(w.size, 5)) if spatial else None
    pi = inclusion_probabilities(w, 3)
    hits = np.zeros(w.size)
    for seed in range(4000):
        hits[choose(w, 3, replace=False, seed=seed, points=points)] += 1
    assert np.allclose(hits / 4000, pi, atol=0.03)


def test_psis_recovers_the_pareto_shape_and_normalises():
    rng = np.random.default_rng(0)
    for shape in (0.3, 0.8):
        raw = rng.pareto(1 / shape, 20000) + 1
        smoothed = psis(np.log(raw))
        assert smoothed.khat == pytest.approx(shape, abs=0.12)
        assert smoothed.weights.sum() == pytest.approx(1.0)
        assert np.all(smoothed.weights >= 0)
        assert smoothed.weights.max() <= raw.max() / raw.sum() * (1 + 1e-9) * 1.5
    raw = rng.pareto(0.5, 1000) + 1
    capped = np.minimum(raw, raw.mean() * np.sqrt(1000))
    assert np.allclose(truncate(np.log(raw)).weights, capped / capped.sum())
    assert capped.max() < raw.max()


def test_kde_and_classifier_ratios_track_the_true_ratio():
    rng = np.random.default_rng(1)
    pool = rng.normal(0.5, 1.0, (1500, 2))
    ref = rng.normal(0.0, 1.0, (1500, 2))
    true = -0.5 * (pool**2).sum(1) + 0.5 * ((pool - 0.5) ** 2).sum(1)
    assert spearmanr(kde_log_ratio(pool, ref), true).statistic > 0.9
    assert spearmanr(classifier_log_ratio(pool, ref), true).statistic > 0.8


def _solve(atoms, mass, x, capacity, *, knn, eps, tol, dummy=0.0):
    shards = local_shards(x, capacity, 37, atoms.shape[0])
    graph = Graph(shards, x, atoms, mass, knn=knn, reverse_factor=4.0, reverse_max=64)
    result = sinkhorn(
        shards, mass, dummy, eps=eps, eps_start=1.0, tol=tol, max_iter=20000, grow=graph.grow
    )
    return result, shards


@settings(max_examples=15, deadline=None)
@given(
    st.integers(2, 12), st.integers(2, 40), st.sampled_from([0.05, 0.2, 1.0]), st.integers(0, 999)
)
def test_log_domain_sinkhorn_equals_pot(k, p, eps, seed):
    rng = np.random.default_rng(seed)
    atoms, x = rng.normal(size=(k, 3)), rng.normal(size=(p, 3))
    a = rng.random(k) + 0.05
    b = rng.random(p) + 0.05
    a, b = a / a.sum(), b / b.sum()
    result, shards = _solve(atoms, a, x, b, knn=k, eps=eps, tol=1e-10)
    assert result.converged and result.marginal_error <= 1e-10
    cost = ((atoms[:, None] - x[None]) ** 2).sum(2)
    plan = np.exp((result.f[:, None] + shards.potentials()[None] - cost) / eps)
    reference = ot.sinkhorn(a, b, cost, eps, method="sinkhorn_log", stopThr=1e-13, numItermax=10**6)
    assert np.abs(plan - reference).sum() < 1e-6
    assert np.allclose(plan.sum(0), b, atol=1e-12)


def test_capacity_transport_marginals_and_truncation():
    rng = np.random.default_rng(2)
    y, x, n = traits(rng, 300), traits(rng, 800, shift=0.3), 200
    atoms = compress_reference(y, max_atoms=10**6)
    mass = atoms.mass * n
    full, sf = _solve(atoms.points, mass, x, np.ones(800), knn=10**6, eps=0.02, tol=1e-6, dummy=600)
    cut, sc = _solve(atoms.points, mass, x, np.ones(800), knn=16, eps=0.02, tol=1e-6, dummy=600)
    for result, shards in ((full, sf), (cut, sc)):
        received = shards.received()
        assert result.converged
        assert np.all(received >= -1e-12) and np.all(received <= 1 + 1e-9)
        assert received.sum() == pytest.approx(n, rel=1e-5)
    assert np.abs(sf.received() - sc.received()).sum() / n < 0.02


def test_compress_reference_dedups_then_clusters():
    rng = np.random.default_rng(3)
    base = np.round(traits(rng, 50), 1)
    exact = compress_reference(np.vstack([base, base[:10]]), max_atoms=1000)
    assert exact.method == "exact" and exact.points.shape[0] == np.unique(base, axis=0).shape[0]
    assert exact.mass.sum() == pytest.approx(1.0)
    assert exact.mass.max() == pytest.approx(2 / 60)
    y = traits(rng, 5000)
    atoms = compress_reference(y, max_atoms=200, seed=0)
    assert atoms.method == "kmeans" and atoms.points.shape[0] <= 200
    assert atoms.mass.sum() == pytest.approx(1.0)
    assert np.allclose(atoms.mass @ atoms.points, y.mean(0), atol=1e-6)
    assert 0 < atoms.cell_variance < y.var(0).mean()


@pytest.mark.parametrize("method", ["is", "ot", "is+ot"])
def test_pool_from_the_reference_population_aligns_near_the_floor(method):
    rng = np.random.default_rng(4)
    pool, ref, held, n = traits(rng, 2000), traits(rng, 2000), traits(rng, 2000), 400
    result = align(pool, ref, n, method=method, seed=0)
    assert np.unique(result.indices).size == n
    assert result.weights.sum() == pytest.approx(1.0) and np.all(result.weights >= 0)
    got = distribution_metrics(pool[result.indices], held)["energy"]
    floor = np.mean(
        [
            distribution_metrics(ref[rng.choice(2000, n, replace=False)], held)["energy"]
            for _ in range(5)
        ]
    )
    assert got < 1.6 * floor


def test_alignment_removes_a_bias_random_picking_keeps():
    rng = np.random.default_rng(5)
    pool, ref, n = traits(rng, 3000, shift=0.4), traits(rng, 2000), 500
    result = align(pool, ref, n, seed=0)
    assert result.method == "ot" and "benchmark" in result.reason
    aligned = distribution_metrics(pool[result.indices], ref)["energy"]
    random = distribution_metrics(pool[rng.choice(3000, n, replace=False)], ref)["energy"]
    assert aligned < random / 3


@pytest.mark.parametrize(
    ("personas", "reference", "n", "message"),
    [
        (np.full((10, 5), np.nan), np.full((10, 5), 3.0), 2, "NaN"),
        (np.full((10, 5), 6.0), np.full((10, 5), 3.0), 2, "outside 1-5"),
        (np.full((10, 5), 3.0), np.empty((0, 5)), 2, "reference is empty"),
        (np.full((10, 5), 3.0), np.full((10, 5), 3.0), 11, "cannot choose 11 distinct"),
        (np.full((10, 4), 3.0), np.full((10, 5), 3.0), 2, "trait matrix"),
    ],
)
def test_bad_input_is_one_clear_error(personas, reference, n, message):
    with pytest.raises(PersonagenError, match=message):
        align(personas, reference, n)


def test_replace_allows_more_than_the_candidates():
    rng = np.random.default_rng(6)
    result = align(traits(rng, 50), traits(rng, 200), 120, method="ot", replace=True)
    assert result.indices.size == 120 and np.unique(result.indices).size < 120


@pytest.mark.slow
def test_ray_shards_give_the_same_result_as_one_shard(ray_local):
    rng = np.random.default_rng(7)
    pool, ref = traits(rng, 3000, shift=0.3), traits(rng, 1500)
    cfg = AlignOptions(block_rows=256, knn=8, atoms=1000)
    one = align(pool, ref, 300, method="ot", seed=3, options=cfg)
    many = align(
        pool, ref, 300, method="ot", seed=3, options=cfg, shards=ray_shards(RayConfig(), 3)
    )
    assert many.diagnostics["ot"]["shards"] == 3 and many.diagnostics["ot"]["ray"]
    assert one.diagnostics["ot"]["atoms_method"] == "kmeans"
    assert np.array_equal(one.indices, many.indices)
    assert np.abs(one.weights - many.weights).max() <= 1e-6


def test_too_few_candidates_for_a_pareto_fit_leave_khat_unestimated():
    """With under ~26 candidates PSIS cannot fit the tail: k-hat is None (a report stores
    JSON, which has no infinity), the weights are the raw normalised ones."""
    rng = np.random.default_rng(0)
    result = align(rng.uniform(1, 5, (12, 5)), rng.uniform(1, 5, (500, 5)), 6, method="is")
    assert result.diagnostics["is"]["khat"] is None
    assert json.loads(json.dumps(result.diagnostics, allow_nan=False))["is"]["khat"] is None
    assert math.isfinite(psis(np.log(rng.uniform(size=200))).khat)


def _unbalanced(atoms, mass, x, capacity, *, eps, reg_m, dummy=0.0, eps_start=None):
    shards = local_shards(x, capacity, 37, atoms.shape[0])
    Graph(shards, x, atoms, mass, knn=atoms.shape[0], reverse_factor=4.0, reverse_max=64)
    result = sinkhorn(
        shards, mass, dummy, eps=eps, eps_start=eps_start, reg_m=reg_m, tol=1e-11, max_iter=10**5
    )
    cost = ((atoms[:, None] - x[None]) ** 2).sum(2)
    plan = np.exp((result.f[:, None] + shards.potentials()[None] - cost) / eps)
    return result, shards, plan


@settings(max_examples=15, deadline=None)
@given(
    st.integers(2, 12),
    st.integers(2, 40),
    st.sampled_from([0.05, 0.2, 1.0]),
    st.sampled_from([0.1, 1.0, 10.0]),
    st.integers(0, 999),
)
def test_unbalanced_sinkhorn_equals_pot(k, p, eps, reg_m, seed):
    """The relaxed atom side against POT's sinkhorn_unbalanced (reg_type "kl", the persona side
    exact: reg_m = (reg_m, inf)), with different total masses on the two sides."""
    rng = np.random.default_rng(seed)
    atoms, x = rng.normal(size=(k, 3)), rng.normal(size=(p, 3))
    a, b = rng.random(k) + 0.05, rng.random(p) + 0.05
    a, b = a / a.sum() * rng.uniform(0.5, 2.0), b / b.sum()
    result, _, plan = _unbalanced(atoms, a, x, b, eps=eps, reg_m=reg_m)
    assert result.converged
    cost = ((atoms[:, None] - x[None]) ** 2).sum(2)
    reference = ot.sinkhorn_unbalanced(
        a, b, cost, eps, (reg_m, math.inf), reg_type="kl", stopThr=1e-15, numItermax=10**6
    )
    assert np.abs(plan - reference).sum() < 1e-6
    assert np.allclose(plan.sum(0), b, atol=1e-12)
    assert np.allclose(result.rows, plan.sum(1), atol=1e-12)


def test_unbalanced_mass_bounds_and_the_balanced_limit():
    """With the dummy row (the capacity problem): personas receive 0..1, the real mass is still
    n, each atom sits at its relaxed target a exp(-f' / reg_m); more reg_m leaves less mass
    uncovered, and reg_m -> inf gives the balanced plan."""
    rng = np.random.default_rng(8)
    y, x, n = traits(rng, 60), traits(rng, 200, shift=0.6, sd=0.5), 40
    atoms = compress_reference(y, max_atoms=10**6)
    mass = atoms.mass * n
    balanced, _, exact = _unbalanced(
        atoms.points, mass, x, np.ones(200), eps=0.05, reg_m=math.inf, dummy=160, eps_start=1.0
    )
    assert balanced.converged
    left = []
    for reg_m in (0.05, 0.5, 5.0, 1e7):
        result, shards, plan = _unbalanced(
            atoms.points, mass, x, np.ones(200), eps=0.05, reg_m=reg_m, dummy=160, eps_start=1.0
        )
        assert result.converged
        received = shards.received()
        assert np.all(received >= -1e-12) and np.all(received <= 1 + 1e-9)
        assert received.sum() == pytest.approx(n, rel=1e-8)
        f_kl = result.f - 0.05 * np.log(mass)
        assert np.allclose(result.rows, mass * np.exp(-f_kl / reg_m), rtol=1e-6)
        left.append(np.maximum(mass - result.rows, 0).sum() / n)
    assert 0 < left[-1] < 1e-5 < left[2] < left[1] < left[0] < 1
    assert np.abs(plan - exact).sum() / n < 1e-4


def test_auto_relaxes_the_marginal_when_the_pool_misses_a_region():
    """A narrow pool shifted up misses the reference's low region: the balanced solver stalls,
    auto goes on unbalanced and says where the reference was not covered (low on every trait);
    a covering pool stays balanced ot."""
    rng = np.random.default_rng(9)
    ref, pool = traits(rng, 1500), traits(rng, 2000, shift=0.6, sd=0.5)
    result = align(pool, ref, 500, method="auto", seed=0)
    ot_diag = result.diagnostics["ot"]
    assert result.method == "ot-unbalanced" and "stalled" in result.reason
    assert ot_diag["marginal"] == "unbalanced" and ot_diag["balanced_stalled"]["stalled"]
    assert ot_diag["converged"] and ot_diag["reg_m"] == AlignOptions().reg_m
    cover = ot_diag["uncovered"]
    assert 0.005 < cover["mass"] < 0.5
    for trait in TRAITS:
        assert cover["region"]["mean"][trait] < cover["reference_mean"][trait] - 0.3
        assert cover["region"]["quantiles"][trait][1] < cover["reference_mean"][trait]
    assert json.loads(json.dumps(result.diagnostics, allow_nan=False))["ot"]["uncovered"]
    covering = align(traits(rng, 2000), ref, 500, method="auto", seed=0)
    assert covering.method == "ot" and covering.diagnostics["ot"]["uncovered"] is None


def test_stall_is_a_rate_that_misses_the_budget():
    fast = [0.5 * 0.7**t for t in range(30)]
    slow = [0.05 * 0.995**t for t in range(30)]
    flat = [0.01 + 0.001 * (t % 2) for t in range(30)]
    assert not stalled(fast, 1e-3, 100)
    assert stalled(slow, 1e-3, 200) and not stalled(slow, 1e-3, 2000)
    assert stalled(flat, 1e-3, 10**6)
    assert not stalled(slow[:STALL_WINDOW], 1e-3, 1)


def test_uncovered_names_the_region_with_the_deficit():
    points = np.array([[1.0, 1.0], [3.0, 3.0], [5.0, 4.0], [4.0, 2.0]])
    mass = np.array([1.0, 2.0, 1.0, 0.0])
    rows = np.array([0.25, 2.5, 1.0, 0.25])
    summary = uncovered(points, mass, rows, ["a", "b"])
    assert summary["mass"] == pytest.approx(0.75 / 4)
    assert summary["atoms_below_half"] == 1
    assert summary["region"]["mean"] == {"a": 1.0, "b": 1.0}
    assert summary["region"]["top_atoms"] == [
        {"traits": {"a": 1.0, "b": 1.0}, "uncovered_share": 0.75 / 4, "kept": 0.25}
    ]
    assert uncovered(points, mass, mass, ["a", "b"])["region"] is None
    values, w = np.arange(10.0), np.ones(10)
    assert weighted_quantiles(values, w, (0.1, 0.5, 0.9)) == [0.0, 4.0, 8.0]
    assert weighted_quantiles(values, np.eye(10)[7], (0.1, 0.9)) == [7.0, 7.0]
