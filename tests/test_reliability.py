"""Cronbach's alpha against independent references, and the bank reliability report + CLI."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from conftest import shared_path
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from personagen import TRAITS
from personagen.cli import cli
from personagen.commands.reliability import reliability_report
from personagen.errors import PersonagenError
from personagen.io.bank import TRAIT_INTERVAL_TYPE, write_group
from personagen.psychometrics.flags import quality_flags
from personagen.psychometrics.human import read_ipip50_responses
from personagen.psychometrics.instruments import IPIP_50, Instrument
from personagen.psychometrics.reliability import (
    alpha_if_deleted,
    corrected_item_total,
    cronbach_alpha,
    human_correlations,
    instrument_reliability,
    trait_correlations,
)
from personagen.psychometrics.scoring import keyed_responses, trait_scores


def hoyt_alpha(x: np.ndarray) -> float:
    """Alpha from a persons x items ANOVA without interaction (Hoyt 1941): 1 - MS_res / MS_persons.

    A derivation independent of the variance formula used by `cronbach_alpha`.
    """
    n, k = x.shape
    grand = x.mean()
    ss_persons = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_items = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_residual = ((x - grand) ** 2).sum() - ss_persons - ss_items
    return 1 - (ss_residual / ((n - 1) * (k - 1))) / (ss_persons / (n - 1))


def test_alpha_by_hand():
    # items A, B, C of five people; item variances 0.7, 0.8, 0.7 (sum 2.2); totals 10, 9, 13, 8,
    # 12 have variance 4.3; alpha = 3/2 * (1 - 2.2/4.3) = 63/86
    x = np.array([[3, 4, 3], [2, 3, 4], [4, 4, 5], [3, 2, 3], [4, 4, 4]])
    assert cronbach_alpha(x) == pytest.approx(float(Fraction(63, 86)), abs=1e-12)


likert = arrays(
    np.float64,
    st.tuples(st.integers(3, 40), st.integers(2, 8)),
    elements=st.sampled_from([1.0, 2.0, 3.0, 4.0, 5.0]),
)


@settings(max_examples=100, deadline=None)
@given(likert, st.randoms(use_true_random=False))
def test_alpha_matches_hoyt_and_is_invariant(x, rnd):
    assume(x.sum(axis=1).var() > 0)
    alpha = cronbach_alpha(x)
    assert alpha == pytest.approx(hoyt_alpha(x), abs=1e-9)
    assert alpha <= 1 + 1e-12
    rows = list(range(x.shape[0]))
    cols = list(range(x.shape[1]))
    rnd.shuffle(rows)
    rnd.shuffle(cols)
    assert cronbach_alpha(x[rows][:, cols]) == pytest.approx(alpha, abs=1e-9)
    assert cronbach_alpha(x + np.arange(x.shape[1])) == pytest.approx(alpha, abs=1e-9)
    # a row with a missing answer is left out (listwise), whatever its other answers
    with_gap = np.vstack([x, np.r_[np.nan, x[0, 1:] * 0 + 5]])
    assert cronbach_alpha(with_gap) == pytest.approx(alpha, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.integers(3, 30), elements=st.floats(1, 5)), st.integers(2, 6))
def test_identical_items_have_alpha_one(column, k):
    assume(np.ptp(column) > 1e-6)
    assert cronbach_alpha(np.tile(column[:, None], (1, k))) == pytest.approx(1.0)


@settings(max_examples=50, deadline=None)
@given(likert)
def test_item_statistics_agree_with_their_definitions(x):
    r = corrected_item_total(x)
    dropped = alpha_if_deleted(x)
    for j in range(x.shape[1]):
        np.testing.assert_allclose(dropped[j], cronbach_alpha(np.delete(x, j, axis=1)), atol=1e-9)
        item, rest = x[:, j], x.sum(axis=1) - x[:, j]
        if np.ptp(item) == 0 or np.ptp(rest) == 0:
            assert np.isnan(r[j])
        else:
            assert r[j] == pytest.approx(np.corrcoef(item, rest)[0, 1], abs=1e-9)


def test_undefined_cases_are_nan():
    assert np.isnan(cronbach_alpha(np.ones((10, 3))))
    assert np.isnan(cronbach_alpha(np.arange(10.0)[:, None]))
    assert np.isnan(cronbach_alpha(np.array([[1.0, 2.0]])))
    assert np.isnan(corrected_item_total(np.array([[1.0, 2.0]]))).all()


def simulated(n: int, instrument: Instrument, seed: int = 0, loading: float = 0.9) -> np.ndarray:
    """Answers from a five-factor model: item = 3 + keyed * loading * trait + noise, on 1-5."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, len(TRAITS)))
    cols = [TRAITS.index(item.trait) for item in instrument.items]
    signs = np.array([item.keyed for item in instrument.items])
    raw = 3 + signs * loading * latent[:, cols] + rng.standard_normal((n, len(cols)))
    return np.clip(np.rint(raw), 1, 5)


def test_a_noise_item_is_found():
    x = keyed_responses(simulated(500, IPIP_50), IPIP_50)[:, :10]  # the extraversion items
    x[:, 3] = np.random.default_rng(1).integers(1, 6, 500)
    r = corrected_item_total(x)
    assert abs(r[3]) < 0.15 and np.delete(r, 3).min() > 0.3
    assert alpha_if_deleted(x)[3] > cronbach_alpha(x)


def write_bank(bank, responses: np.ndarray, instrument: Instrument, seed: int = 0) -> None:
    """A scored bank as the score stage writes it: items in a per-persona shuffled order."""
    rng = np.random.default_rng(seed)
    ids = instrument.item_ids()
    orders = [rng.permutation(len(ids)) for _ in range(len(responses))]
    scores = trait_scores(responses, instrument)
    table = pa.table(
        {
            "persona_id": [f"p{i}" for i in range(len(responses))],
            "instrument": [instrument.id] * len(responses),
            "answer_mode": ["logprob"] * len(responses),
            "item_ids": [[ids[j] for j in order] for order in orders],
            "item_responses": [
                [None if np.isnan(row[j]) else float(row[j]) for j in order]
                for row, order in zip(responses, orders, strict=True)
            ],
            "item_entropy": [None] * len(responses),
            **{t: scores[:, k] for k, t in enumerate(TRAITS)},
            "score_flags": quality_flags(responses, instrument),
            "score_model": ["test"] * len(responses),
            "score_prompt_version": ["v0"] * len(responses),
            "score_seed": [seed] * len(responses),
            "item_errors": [[]] * len(responses),
            "trait_interval": pa.nulls(len(responses), TRAIT_INTERVAL_TYPE),
        }
    )
    write_group(bank, "scores", table)


def test_report_aligns_shuffled_answers(tmp_path):
    responses = simulated(400, IPIP_50, seed=3)
    responses[:5] = 5.0  # five yes-sayers
    write_bank(tmp_path, responses, IPIP_50)
    report = reliability_report(tmp_path)
    direct = instrument_reliability(responses, IPIP_50)
    clean = instrument_reliability(responses[5:], IPIP_50)
    for trait in TRAITS:
        assert report["traits"][trait]["alpha"] == pytest.approx(direct[trait]["alpha"])
        assert report["traits"][trait]["alpha"] > 0.8
        assert report["traits"][trait]["alpha_unflagged"] == pytest.approx(clean[trait]["alpha"])
    assert report["flagged"] == 5 and report["flagged_fraction"] == pytest.approx(5 / 400)
    assert report["flag_counts"] == {"acquiescent": 5, "low_variance": 5}
    bank_corr = np.array(report["correlations"]["bank"])
    np.testing.assert_allclose(bank_corr, trait_correlations(trait_scores(responses, IPIP_50)))
    assert report["correlations"]["human"] is None
    assert report["correlations"]["human_source"] == "unavailable"


def test_report_errors(tmp_path):
    with pytest.raises(PersonagenError, match="no scores yet"):
        reliability_report(tmp_path)
    write_bank(tmp_path, simulated(20, IPIP_50), IPIP_50)
    custom = Instrument("other", "other", IPIP_50.items, IPIP_50.scale, "test")
    with pytest.raises(PersonagenError, match="no personas scored with 'other'"):
        reliability_report(tmp_path, custom)


@pytest.mark.shared_data
def test_cli_report_against_human_big5(tmp_path):
    big5 = shared_path("ipip", "big5-2012", "data.csv")
    people = read_ipip50_responses(big5)[:3000]
    write_bank(tmp_path, people, IPIP_50)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        cli, ["reliability", str(tmp_path), "--human", str(big5), "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "alpha" in result.output and "flagged personas" in result.output
    report = json.loads(out.read_text())
    assert report["personas"] == 3000
    assert all(report["traits"][t]["alpha"] > 0.75 for t in TRAITS)
    # the bank's people are 3,000 of the reference's 19,719: their correlations agree closely
    assert report["correlations"]["mean_abs_difference"] < 0.05
    assert "big5-2012/data.csv (19,7" in report["correlations"]["human_source"]
    human = human_correlations(big5).matrix
    assert human[TRAITS.index("extraversion"), TRAITS.index("neuroticism")] < -0.15


def test_cli_error_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["reliability", str(tmp_path)])
    assert result.exit_code == 2
    assert "no scores yet" in result.output
