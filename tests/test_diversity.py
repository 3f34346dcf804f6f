"""Diversity metrics against brute-force references, and the comparison table's arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist, pdist

from personagen.evaluate.comparison import SetData, Settings, compare_sets, reduction
from personagen.evaluate.diversity import (
    cell_edges,
    cell_uniformity,
    coverage,
    mean_cosine_distance,
    trait_diversity,
    vendi_score,
)
from personagen.evaluate.metrics import HEADLINE


def brute_coverage(x: np.ndarray, ref: np.ndarray, k: int) -> float:
    d = cdist(ref, ref)
    radius = np.sort(d, axis=1)[:, k]  # column 0 is the point itself
    return float(np.mean(cdist(ref, x).min(axis=1) <= radius))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 30), st.integers(8, 60), st.integers(1, 5))
def test_coverage_matches_brute_force(seed, n, m, k):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(m, 5))
    x = rng.normal(size=(n, 5))
    assert coverage(x, ref, k=k) == brute_coverage(x, ref, k)


def test_coverage_of_the_reference_itself_is_one_and_of_one_archetype_small():
    ref = np.random.default_rng(1).normal(size=(300, 5))
    assert coverage(ref, ref) == 1.0
    collapsed = np.repeat(ref[:1], 50, axis=0)
    assert coverage(collapsed, ref) == brute_coverage(ref[:1], ref, 5) < 0.05
    with pytest.raises(ValueError, match="more than k=5 reference rows"):
        coverage(ref, ref[:5])


def test_cell_uniformity_by_hand():
    ref = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])
    edges = cell_edges(ref, bins=2)  # the medians: 2.5 on both traits
    np.testing.assert_allclose(edges, [[2.5], [2.5]])
    # 4 personas, 2 in cell (0,0), 1 in (1,1), 1 in (0,1): entropy of (1/2, 1/4, 1/4)
    x = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 3.0], [1.0, 4.0]])
    expected = -(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25)) / np.log(4)
    assert cell_uniformity(x, edges) == pytest.approx(expected)
    assert cell_uniformity(x[:1], edges) == 1.0
    assert cell_uniformity(np.repeat(x[:1], 4, axis=0), edges) == 0.0


def test_a_collapsed_set_shows_against_real_people():
    rng = np.random.default_rng(2)
    ref = np.clip(rng.normal(3, 0.7, size=(4000, 5)), 1, 5)
    real = np.clip(rng.normal(3, 0.7, size=(100, 5)), 1, 5)  # people not in the reference
    archetypes = ref[rng.choice(4000, 4, replace=False)]
    collapsed = archetypes[rng.integers(0, 4, 100)] + rng.normal(0, 0.02, (100, 5))
    fair, narrow = trait_diversity(real, ref), trait_diversity(collapsed, ref)
    assert fair["coverage_real"] == narrow["coverage_real"]  # same n, same draws
    assert narrow["coverage"] < 0.5 * fair["coverage"]
    assert narrow["uniformity"] < 0.5 * fair["uniformity"]
    assert abs(fair["coverage"] - fair["coverage_real"]) < 0.05
    with pytest.raises(ValueError, match="needs more than 105 reference rows, got 100"):
        trait_diversity(real, ref[:100])


def exact_vendi(e: np.ndarray) -> float:
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    lam = np.linalg.eigvalsh(u @ u.T / len(u))
    lam = lam[lam > 1e-12]
    return float(np.exp(-(lam * np.log(lam)).sum()))


def test_vendi_score_known_values_and_both_branches():
    assert vendi_score(np.ones((7, 4))) == pytest.approx(1.0)
    assert vendi_score(np.eye(6)) == pytest.approx(6.0)
    two = np.vstack([np.tile([1.0, 0, 0], (5, 1)), np.tile([0, 1.0, 0], (5, 1))])
    assert vendi_score(two) == pytest.approx(2.0)
    rng = np.random.default_rng(3)
    wide, tall = rng.normal(size=(10, 40)), rng.normal(size=(60, 8))  # n <= d and n > d
    assert vendi_score(wide) == pytest.approx(exact_vendi(wide))
    assert vendi_score(tall) == pytest.approx(exact_vendi(tall))
    with pytest.raises(ValueError, match="non-zero rows"):
        vendi_score(np.zeros((3, 4)))


def test_mean_cosine_distance_matches_scipy():
    e = np.random.default_rng(4).normal(size=(25, 16))
    assert mean_cosine_distance(e) == pytest.approx(pdist(e, "cosine").mean())
    assert mean_cosine_distance(np.ones((5, 3))) == pytest.approx(0.0)
    assert mean_cosine_distance(e[:1]) == 0.0


# ------------------------------------------------------------------------------ the table


def test_reduction_against_the_baseline():
    base = {"metrics": dict.fromkeys(HEADLINE, 2.0)}
    value = {"metrics": dict.fromkeys(HEADLINE, 0.5)}
    assert reduction(value, base) == dict.fromkeys(HEADLINE, 75.0)
    assert reduction(base, base) == dict.fromkeys(HEADLINE, 0.0)


def test_compare_sets_real_people_sit_at_the_floor_and_a_biased_set_does_not():
    rng = np.random.default_rng(5)
    people = np.clip(rng.normal(3, 0.7, size=(6000, 5)), 1, 5)
    reference, pool = people[:4000], people[4000:]
    real = pool[:200]
    biased = np.clip(real + np.array([0, 0, 0.6, 0.4, -0.6]), 1, 5)
    held = np.clip(rng.normal(3, 0.7, size=(3000, 5)), 1, 5)
    sets = [
        SetData("biased", biased, held_out=held[:150] + 0.5),
        SetData("real", real, held_out=held[1000:1150], embeddings=rng.normal(size=(200, 8))),
    ]
    result = compare_sets(
        sets, reference, held[:1000], baseline="biased", settings=Settings(seed=1)
    )
    rows = result["sets"]
    assert 0.6 < rows["real"]["in_distribution"]["x_floor"]["energy"] < 1.6
    assert rows["biased"]["in_distribution"]["x_floor"]["energy"] > 4
    assert rows["biased"]["in_distribution"]["reduction_pct"]["energy"] == 0.0
    assert rows["real"]["in_distribution"]["reduction_pct"]["energy"] > 60
    assert rows["real"]["held_out"]["n"] == 150
    assert rows["real"]["held_out"]["reduction_pct"]["energy"] > 60
    assert rows["biased"]["narratives"] is None and 1 < rows["real"]["narratives"]["vendi"] <= 8
    assert result["n_reference"] == 4000 and result["n_held_out_reference"] == 1000
    with pytest.raises(ValueError, match="baseline set 'gpt' is not among the sets"):
        compare_sets(sets, reference, baseline="gpt")
    alone = compare_sets(sets[:1], reference)
    assert alone["sets"]["biased"]["held_out"] is None
    assert "reduction_pct" not in alone["sets"]["biased"]["in_distribution"]
