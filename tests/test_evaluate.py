"""Distribution metrics against scipy/POT, their properties, noise floors, the report and CLI."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import ot
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.stats as st
from click.testing import CliRunner
from conftest import shared_path
from hypothesis import given, settings
from hypothesis import strategies as hs
from hypothesis.extra import numpy as hnp

from personagen import TRAITS
from personagen.align.weights import kish_ess
from personagen.cli import cli
from personagen.errors import PersonagenError
from personagen.evaluate.metrics import (
    HEADLINE,
    distribution_metrics,
    floor_ratios,
    noise_floor,
    projected_w2,
    weighted_corr,
    weighted_ks,
)
from personagen.evaluate.report import write_report
from personagen.io.bank import GROUPS, write_group
from personagen.io.personas import read_personas

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _sample(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    return np.clip(rng.normal(3 + shift, 0.7, size=(n, 5)), 1, 5)


def _pad(v: np.ndarray) -> np.ndarray:
    """A 1-D sample as a 5-column matrix whose other columns are constant (distances unchanged)."""
    return np.column_stack([v, np.full((v.size, 4), 3.0)])


# --------------------------------------------------------------------------- exact references


@settings(max_examples=25, deadline=None)
@given(
    hnp.arrays(np.float64, hs.integers(2, 40), elements=hs.floats(1, 5)),
    hnp.arrays(np.float64, hs.integers(2, 40), elements=hs.floats(1, 5)),
    hs.integers(0, 2**16),
)
def test_one_dimensional_metrics_equal_scipy(u, v, seed):
    w = np.random.default_rng(seed).uniform(0.1, 2.0, size=u.size)
    m = distribution_metrics(_pad(u), _pad(v), x_weights=w)
    assert m["energy"] == pytest.approx(st.energy_distance(u, v, u_weights=w), abs=1e-9)
    assert m["w1"]["openness"] == pytest.approx(
        st.wasserstein_distance(u, v, u_weights=w), abs=1e-12
    )
    unweighted = distribution_metrics(_pad(u), _pad(v))
    assert unweighted["ks"]["openness"] == pytest.approx(st.ks_2samp(u, v).statistic, abs=1e-12)


def test_ks_on_discrete_scores_with_ties_equals_scipy():
    rng = np.random.default_rng(0)
    u = np.round(rng.uniform(1, 5, 500), 1)
    v = np.round(rng.uniform(1.2, 5, 300), 1)
    assert weighted_ks(u, v) == pytest.approx(st.ks_2samp(u, v).statistic, abs=1e-12)
    counts = rng.integers(1, 4, size=u.size)
    assert weighted_ks(u, v, counts.astype(float), None) == pytest.approx(
        st.ks_2samp(np.repeat(u, counts), v).statistic, abs=1e-12
    )


@pytest.mark.parametrize("n, m, weighted", [(200, 200, False), (150, 90, False), (120, 70, True)])
def test_sliced_wasserstein_equals_pot(n, m, weighted):
    rng = np.random.default_rng(n + m)
    x, y = _sample(rng, n), _sample(rng, m, 0.2)
    a = rng.uniform(0.1, 3, n) if weighted else None
    ours = distribution_metrics(x, y, x_weights=a, seed=5, n_projections=100)["sliced_wasserstein"]
    pot = ot.sliced_wasserstein_distance(
        x, y, a=None if a is None else a / a.sum(), n_projections=100, seed=5, p=2
    )
    assert ours == pytest.approx(float(pot), rel=1e-10)


def test_projected_w2_equals_pot_wasserstein_1d():
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=(3, 50)), rng.normal(1, 2, size=(3, 80))
    a, b = rng.uniform(0.1, 1, 50), rng.uniform(0.1, 1, 80)
    a, b = a / a.sum(), b / b.sum()
    pot = ot.wasserstein_1d(u.T, v.T, a, b, p=2)
    np.testing.assert_allclose(projected_w2(u, v, a, b), pot, rtol=1e-10)


def test_weights_act_as_replicated_rows():
    """Integer weights on either side give exactly the metrics of the replicated sample."""
    rng = np.random.default_rng(4)
    x, y = _sample(rng, 50, 0.2), _sample(rng, 60)
    cx, cy = rng.integers(1, 4, size=50), rng.integers(1, 4, size=60)
    replicated = distribution_metrics(np.repeat(x, cx, axis=0), np.repeat(y, cy, axis=0))
    weighted = distribution_metrics(x, y, x_weights=cx * 1.0, y_weights=cy * 1.0)
    for key in ("energy", "sliced_wasserstein", *HEADLINE[2:]):
        assert weighted[key] == pytest.approx(replicated[key], rel=1e-9, abs=1e-12), key
    np.testing.assert_allclose(
        weighted_corr(y, cy * 1.0), np.corrcoef(np.repeat(y, cy, axis=0), rowvar=False)
    )


def test_moments_and_correlation_errors():
    rng = np.random.default_rng(2)
    x, y = _sample(rng, 4000), _sample(rng, 3000, 0.3)
    m = distribution_metrics(x, y)
    np.testing.assert_allclose(
        [m["mean_error"][t] for t in TRAITS], x.mean(axis=0) - y.mean(axis=0), atol=1e-12
    )
    np.testing.assert_allclose(
        [m["sd_error"][t] for t in TRAITS], x.std(axis=0) - y.std(axis=0), atol=1e-12
    )
    np.testing.assert_allclose(m["corr_x"], np.corrcoef(x, rowvar=False), atol=1e-12)
    diff = np.corrcoef(x, rowvar=False) - np.corrcoef(y, rowvar=False)
    assert m["corr_error_max"] == pytest.approx(np.abs(diff).max(), abs=1e-12)


# --------------------------------------------------------------------------- properties

_matrices = hnp.arrays(
    np.float64,
    hs.tuples(hs.integers(3, 30), hs.just(5)),
    elements=hs.floats(1, 5, allow_nan=False),
)


@settings(max_examples=30, deadline=None)
@given(_matrices)
def test_identical_samples_are_at_distance_zero(x):
    m = distribution_metrics(x, x.copy())
    for key in HEADLINE:
        assert m[key] == pytest.approx(0.0, abs=1e-6), key


@settings(max_examples=30, deadline=None)
@given(_matrices, _matrices)
def test_distances_are_symmetric(x, y):
    xy, yx = distribution_metrics(x, y, seed=1), distribution_metrics(y, x, seed=1)
    for key in ("energy", "sliced_wasserstein", "w1_mean", "ks_max", "mean_abs_error"):
        assert xy[key] == pytest.approx(yx[key], rel=1e-9, abs=1e-9), key
    for t in TRAITS:
        assert xy["mean_error"][t] == pytest.approx(-yx["mean_error"][t], abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(_matrices, hs.floats(0.05, 1.0))
def test_a_larger_shift_is_a_larger_distance(x, step):
    direction = np.array([1.0, -0.5, 0.3, 0.0, 0.8])
    near = distribution_metrics(x, x + step * direction, seed=2)
    far = distribution_metrics(x, x + 2 * step * direction, seed=2)
    for key in ("energy", "sliced_wasserstein", "w1_mean", "mean_abs_error"):
        assert far[key] > near[key] > 0, key
    # A pure translation moves every marginal by exactly its offset.
    assert near["w1"]["openness"] == pytest.approx(step, rel=1e-9)


def test_energy_subsamples_beyond_its_limit_and_says_so():
    rng = np.random.default_rng(3)
    x, y = _sample(rng, 3000), _sample(rng, 2500, 0.1)
    exact = distribution_metrics(x, y, energy_max_rows=5000)
    sub = distribution_metrics(x, y, energy_max_rows=1000, seed=4)
    assert "exact on all rows" in exact["method"]["energy"]
    assert "subsample of 1,000 x 1,000 rows" in sub["method"]["energy"]
    assert sub["energy"] == distribution_metrics(x, y, energy_max_rows=1000, seed=4)["energy"]
    assert sub["energy"] == pytest.approx(exact["energy"], rel=0.35)


def test_bad_inputs_are_clear_errors():
    good = np.full((10, 5), 3.0)
    with pytest.raises(PersonagenError, match=r"\(n, 5\) trait matrix"):
        distribution_metrics(np.ones((10, 4)), good)
    bad = good.copy()
    bad[2, 2] = np.nan
    with pytest.raises(PersonagenError, match="NaN"):
        distribution_metrics(bad, good)
    with pytest.raises(PersonagenError, match="weights"):
        distribution_metrics(good, good, x_weights=-np.ones(10))


# --------------------------------------------------------------------------- floors


def test_noise_floor_shrinks_with_n_and_reads_as_ratios():
    rng = np.random.default_rng(5)
    reference = _sample(rng, 6000)
    small, large = noise_floor(reference, 100, seed=1), noise_floor(reference, 1000, seed=1)
    assert small["sampling"] == (
        "100 reference rows drawn uniformly without replacement against the 5,900 not drawn, "
        "rescaled to 100 against 6,000"
    )
    for key in ("energy", "sliced_wasserstein", "w1_mean", "ks_max", "mean_abs_error"):
        assert small["mean"][key] > large["mean"][key] > 0, key
    unsplit = noise_floor(reference[:101], 100, repeats=2)
    assert (
        unsplit["sampling"]
        == "100 rows drawn uniformly with replacement against all 101 (too few to split)"
    )
    # A fresh sample of the reference sits near 1x its floor; a shifted one far above.
    fresh = distribution_metrics(_sample(rng, 1000), reference, seed=1)
    shifted = distribution_metrics(_sample(rng, 1000, 0.5), reference, seed=1)
    floor = noise_floor(reference, 1000, seed=1, repeats=5)
    assert floor_ratios(fresh, floor)["energy"] < 2.0
    assert floor_ratios(shifted, floor)["energy"] > 5.0
    assert floor_ratios(fresh, floor)["w1.openness"] == pytest.approx(
        fresh["w1"]["openness"] / floor["mean"]["w1.openness"]
    )


def test_noise_floor_is_n_drawn_rows_against_the_rest_rescaled_to_all_rows():
    """By hand: the same draws as the floor's, each metric of the drawn rows against the rows not
    drawn, times sqrt((1/n + 1/m) / (1/n + 1/(m - n))) (with the energy subsample's sizes)."""
    rng = np.random.default_rng(8)
    reference, n, m = _sample(rng, 700), 200, 700
    floor = noise_floor(reference, n, repeats=3, seed=4, energy_max_rows=400)
    draws = np.random.default_rng(4)
    runs = []
    for _ in range(3):
        drawn = draws.choice(m, size=n, replace=False)
        rest = np.setdiff1d(np.arange(m), drawn)
        metrics = distribution_metrics(
            reference[drawn], reference[rest], seed=4, energy_max_rows=400
        )
        runs.append(metrics)
    plain = np.sqrt((1 / n + 1 / m) / (1 / n + 1 / (m - n)))
    capped = np.sqrt((1 / 200 + 1 / 400) / (1 / 200 + 1 / 400))  # both sides cut to 400 rows
    assert capped == 1.0
    assert floor["mean"]["energy"] == pytest.approx(np.mean([r["energy"] for r in runs]))
    for key in ("sliced_wasserstein", "w1_mean", "ks_max", "corr_error_rmse"):
        expected = plain * np.mean([r[key] for r in runs])
        assert floor["mean"][key] == pytest.approx(expected), key


def test_a_weighted_floor_draws_by_weight_and_keeps_the_weights_of_the_rest():
    rng = np.random.default_rng(9)
    reference = _sample(rng, 300)
    weights = np.where(np.arange(300) < 150, 1.0, 0.0)
    weights[150] = 1e-12  # the rows not drawn may be weighted next to nothing
    floor = noise_floor(reference, 100, repeats=2, seed=1, weights=weights)
    assert floor["sampling"].startswith(
        "100 reference rows drawn with probability proportional to the weights"
    )
    draws = np.random.default_rng(1)
    p = weights / weights.sum()
    drawn = draws.choice(300, size=100, replace=False, p=p)
    assert drawn.max() < 151  # only rows with weight are drawn
    rest = np.setdiff1d(np.arange(300), drawn)
    first = distribution_metrics(reference[drawn], reference[rest], y_weights=weights[rest], seed=1)
    second_drawn = draws.choice(300, size=100, replace=False, p=p)
    second_rest = np.setdiff1d(np.arange(300), second_drawn)
    second = distribution_metrics(
        reference[second_drawn], reference[second_rest], y_weights=weights[second_rest], seed=1
    )
    scale = np.sqrt((1 / 100 + 1 / 300) / (1 / 100 + 1 / 200))
    assert floor["mean"]["w1_mean"] == pytest.approx(
        scale * (first["w1_mean"] + second["w1_mean"]) / 2
    )


@pytest.mark.shared_data
@pytest.mark.slow
@pytest.mark.parametrize("n", [100, 1000, 5000])
def test_real_people_score_about_one_floor_against_any_size_of_reference(n):
    """Fresh samples of real BIG5 respondents, none of them in the reference, against references
    of 2n rows, 10,000 rows and every other respondent: the energy distance (the report's
    headline) over its floor averages within 0.8-1.25 over independent splits."""
    from personagen.io.reference import load_reference

    people = load_reference(f"big5:{shared_path('ipip', 'big5-2012', 'data.csv')}").trait_matrix()
    splits = {100: 12, 1000: 6, 5000: 3}[n]
    for size in (2 * n, 10_000, None):
        ratios = []
        for k in range(splits):
            order = np.random.default_rng(100 * n + k).permutation(people.shape[0])
            fresh, rest = people[order[:n]], people[order[n:]]
            reference = rest if size is None else rest[:size]
            floor = noise_floor(reference, n, repeats=3, seed=k)
            ratios.append(floor_ratios(distribution_metrics(fresh, reference, seed=k), floor))
        energy = float(np.mean([r["energy"] for r in ratios]))
        assert 0.8 <= energy <= 1.25, (n, size, energy)


def test_kish_ess():
    assert kish_ess(np.ones(50)) == pytest.approx(50)
    assert kish_ess(np.array([1.0, 0, 0, 0])) == pytest.approx(1)
    assert kish_ess(np.array([3.0, 1.0])) == pytest.approx(16 / 10)


# --------------------------------------------------------------------------- report


def test_report_is_self_contained_and_carries_the_numbers(tmp_path):
    rng = np.random.default_rng(6)
    reference, before = _sample(rng, 3000), _sample(rng, 1500, 0.4)
    after = before[:400]
    weights = rng.uniform(0, 2, size=1500)
    json_path, html_path = write_report(
        tmp_path / "out",
        reference=reference,
        after=after,
        before=before,
        info={"method": "is+ot", "n": np.int64(400), "note": "<b>escaped</b>"},
        weights=weights,
        floor_repeats=2,
    )
    report = json.loads(json_path.read_text())
    assert report["info"] == {"method": "is+ot", "n": 400, "note": "<b>escaped</b>"}
    assert report["weights"]["ess"] == pytest.approx(kish_ess(weights))
    assert set(report["sets"]) == {"before", "after"}
    assert report["sets"]["after"]["floor"]["n"] == 400
    assert report["sets"]["before"]["floor"]["n"] == 1500
    after_energy = report["sets"]["after"]["metrics"]["energy"]
    ratio = report["sets"]["after"]["x_floor"]["energy"]
    assert ratio == pytest.approx(after_energy / report["sets"]["after"]["floor"]["mean"]["energy"])

    page = html_path.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3  # histograms, correlation heatmaps, weights
    assert all(base64.b64decode(img).startswith(PNG_MAGIC) for img in images)
    assert f"{after_energy:.4g}" in page and f"{ratio:.2f}x" in page
    assert "Kish" in page or "ess" in page
    assert "<b>escaped</b>" not in page and "&lt;b&gt;escaped&lt;/b&gt;" in page
    assert not re.search(r"<(script|link)\b|src=\"http|href=\"http", page)


def test_report_without_before_or_weights(tmp_path):
    rng = np.random.default_rng(7)
    _, html_path = write_report(
        tmp_path, reference=_sample(rng, 500), after=_sample(rng, 100), info={}, floor_repeats=1
    )
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "before" not in json.loads((tmp_path / "report.json").read_text())["sets"]


# --------------------------------------------------------------------------- personas and CLI


def _persona_table(x: np.ndarray, prefix: str = "p") -> pa.Table:
    return pa.table(
        {"persona_id": [f"{prefix}{i}" for i in range(len(x))]}
        | {t: x[:, j] for j, t in enumerate(TRAITS)}
    )


def test_read_personas_from_a_bank_leaves_out_unscored_rows(tmp_path):
    rng = np.random.default_rng(8)
    ids = [f"u{i}/0" for i in range(30)]
    personas = pa.table(
        {
            "persona_id": ids,
            "user_id": [i.split("/")[0] for i in ids],
            "window_id": pa.array([0] * 30, pa.int32()),
            "narrative": ["a person"] * 30,
            "attributes": pa.nulls(30),
            "source_meta": ["{}"] * 30,
            "model": ["m"] * 30,
            "prompt_version": ["v1"] * 30,
        }
    )
    write_group(tmp_path, "personas", personas)
    x = _sample(rng, 25)
    scores = {field.name: pa.nulls(25, field.type) for field in GROUPS["scores"]}
    scores |= {"persona_id": pa.array(ids[:25])} | {t: x[:, j] for j, t in enumerate(TRAITS)}
    write_group(tmp_path, "scores", pa.table(scores))
    read = read_personas(tmp_path)
    assert read.unscored == 5 and read.table.num_rows == 25
    np.testing.assert_allclose(read.trait_matrix(), x)


def test_read_personas_errors(tmp_path):
    x = np.full((4, 5), 3.0)
    cases = {
        "dup": (
            _persona_table(x).set_column(0, "persona_id", pa.array(["a", "a", "b", "c"])),
            "duplicate",
        ),
        "nan": (_persona_table(np.where(np.eye(4, 5) > 0, np.nan, x)), "missing or NaN"),
        "range": (_persona_table(x + 2.5), "outside 1-5"),
        "cols": (_persona_table(x).drop_columns(["neuroticism"]), "lack column"),
    }
    for name, (table, message) in cases.items():
        path = tmp_path / f"{name}.parquet"
        pq.write_table(table, path)
        with pytest.raises(PersonagenError, match=message):
            read_personas(path)


def test_evaluate_cli(tmp_path):
    rng = np.random.default_rng(9)
    pq.write_table(_persona_table(_sample(rng, 300)), tmp_path / "after.parquet")
    pq.write_table(_persona_table(_sample(rng, 900, 0.3)), tmp_path / "before.parquet")
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "evaluate",
            "--personas",
            str(tmp_path / "after.parquet"),
            "--before",
            str(tmp_path / "before.parquet"),
            "--reference",
            "builtin:global",
            "--set",
            "evaluate.floor_repeats=2",
            "--out",
            str(tmp_path / "report"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "energy distance" in result.output and "x floor" in result.output
    assert (tmp_path / "report" / "report.html").exists()
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["info"]["reference"].startswith("builtin:global")
    assert report["n_after"] == 300 and report["n_before"] == 900


def test_reference_cli_show_and_errors(tmp_path):
    runner = CliRunner()
    small = tmp_path / "small.parquet"
    pq.write_table(_persona_table(np.full((10, 5), 3.0)), small)
    failed = runner.invoke(cli, ["reference", "show", str(small)])
    assert failed.exit_code == 2
    assert "error: the reference has 10 usable rows" in failed.output
    shown = runner.invoke(cli, ["reference", "show", "builtin:europe"])
    assert shown.exit_code == 0, shown.output
    assert "respondents" in shown.output and "neuroticism" in shown.output
    regions = runner.invoke(cli, ["reference", "regions"])
    assert regions.exit_code == 0 and "east-asia" in regions.output
