"""Answer-token probabilities -> item responses (logprob mode) and strict text answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import entropy

from personagen.errors import PersonagenError
from personagen.psychometrics.answers import (
    CALIBRATION_SMOOTHING,
    NoScaleAnswer,
    answer_distribution,
    answer_point,
    calibrated,
    content_free_prior,
    sample_point,
    supports_logprobs,
)
from personagen.psychometrics.instruments import LIKERT_5, Scale

SEVEN = Scale(1, 7, tuple("abcdefg"))


@pytest.mark.parametrize(
    ("token", "point"),
    [
        ("3", 3),
        (" 3", 3),
        ("3\n", 3),
        ("\u01203", 3),
        ("\u25813", 3),
        ("3.", 3),
        ("3)", 3),
        (" 5,", 5),
        ("6", None),  # off a 1-5 scale
        ("0", None),
        ("30", None),
        ("3/5", None),
        ("three", None),
        ("(3", None),
        ("3..", None),
        ("", None),
        ("I'd say 3", None),
    ],
)
def test_which_tokens_are_answers(token, point):
    assert answer_point(token, LIKERT_5) == point


def test_distribution_by_hand():
    top = {"3": math.log(0.4), " 3": math.log(0.1), "4": math.log(0.25), "Sure": math.log(0.2)}
    dist = answer_distribution(top, LIKERT_5)
    np.testing.assert_allclose(dist.probs, [0, 0, 0.5 / 0.75, 0.25 / 0.75, 0])
    assert dist.expected == pytest.approx(3 + 0.25 / 0.75)
    assert dist.coverage == pytest.approx(0.75)
    assert dist.entropy == pytest.approx(entropy([2 / 3, 1 / 3]))


def test_repeated_tokens_add_up_and_pairs_are_accepted():
    pairs = [("2", math.log(0.3)), ("2", math.log(0.3)), ("5", math.log(0.4))]
    dist = answer_distribution(pairs, LIKERT_5)
    assert dist.probs[1] == pytest.approx(0.6) and dist.expected == pytest.approx(3.2)


def test_no_scale_token_is_a_clear_failure():
    with pytest.raises(NoScaleAnswer, match=r"no 1-5 answer among the top tokens \('Yes', 'No'\)"):
        answer_distribution({"Yes": -0.1, "No": -2.5}, LIKERT_5)
    with pytest.raises(NoScaleAnswer, match=r"\(none\)"):
        answer_distribution({}, LIKERT_5)
    with pytest.raises(NoScaleAnswer):
        answer_distribution({"3": -math.inf}, LIKERT_5)
    assert issubclass(NoScaleAnswer, PersonagenError)


def test_scales_beyond_one_digit_are_refused():
    ten = Scale(0, 10, tuple(str(n) for n in range(11)))
    assert not supports_logprobs(ten) and supports_logprobs(SEVEN)
    with pytest.raises(PersonagenError, match="single-digit"):
        answer_distribution({"3": -0.1}, ten)


answer_tokens = st.sampled_from(["1", "2", "3", "4", "5", "6", "7", " 4", "7.", "\u25812"])
other_tokens = st.sampled_from(["Yes", "no", "8", "10", "I", "\n", "**"])
logprobs = st.floats(-30, 0, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(answer_tokens, logprobs), min_size=1, max_size=8),
    st.lists(st.tuples(other_tokens, logprobs), max_size=5),
    st.floats(-20, 0),
)
def test_distribution_properties(answers, others, shift):
    dist = answer_distribution(answers + others, SEVEN)
    probs = np.array(dist.probs)
    assert len(probs) == 7 and np.all(probs >= 0) and probs.sum() == pytest.approx(1)
    assert 1 <= dist.expected <= 7
    assert dist.expected == pytest.approx(np.dot(np.arange(1, 8), probs))
    assert dist.entropy == pytest.approx(entropy(probs), abs=1e-9)
    assert 0 <= dist.entropy <= math.log(7) + 1e-9
    assert dist.coverage == pytest.approx(min(1, sum(math.exp(lp) for _, lp in answers)))
    # other tokens change only the coverage; a common shift of the log-probabilities nothing
    alone = answer_distribution(answers, SEVEN)
    np.testing.assert_allclose(alone.probs, probs, atol=1e-12)
    shifted = answer_distribution([(t, lp + shift) for t, lp in answers], SEVEN)
    np.testing.assert_allclose(shifted.probs, probs, atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 5), st.floats(-1e-6, 0))
def test_a_certain_answer_is_that_answer(point, logprob):
    dist = answer_distribution({f" {point}": logprob, "x": -50.0}, LIKERT_5)
    assert dist.expected == pytest.approx(point) and dist.entropy == pytest.approx(0, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(answer_tokens, logprobs), min_size=1, max_size=20))
def test_distribution_matches_scipy_logsumexp(answers):
    """Reference: per-point log-probabilities summed with scipy's logsumexp, renormalised."""
    by_point = [[lp for t, lp in answers if answer_point(t, SEVEN) == k] for k in range(1, 8)]
    point_logp = np.array([logsumexp(lps) if lps else -np.inf for lps in by_point])
    total = logsumexp(point_logp)
    dist = answer_distribution(answers, SEVEN)
    np.testing.assert_allclose(dist.probs, np.exp(point_logp - total), rtol=1e-9, atol=1e-15)
    assert dist.coverage == pytest.approx(min(1.0, math.exp(total)), rel=1e-9)


def test_sampled_answers_follow_the_tempered_distribution():
    """Draws at temperature T have frequencies p ** (1/T), renormalised; points the model gave
    no probability are never drawn; a seed gives one answer."""
    dist = answer_distribution(
        [("2", math.log(0.2)), ("3", math.log(0.5)), ("5", math.log(0.3))], LIKERT_5
    )
    draws = 20_000
    for temperature in (1.0, 0.5, 2.0):
        tempered = np.array(dist.probs) ** (1 / temperature)
        expected = tempered / tempered.sum()
        points = [sample_point(dist, LIKERT_5, temperature, seed) for seed in range(draws)]
        observed = np.bincount(np.array(points) - 1, minlength=5) / draws
        assert observed[0] == observed[3] == 0.0
        np.testing.assert_allclose(observed, expected, atol=4 * np.sqrt(0.25 / draws))
    assert sample_point(dist, LIKERT_5, 0.7, 11) == sample_point(dist, LIKERT_5, 0.7, 11)
    with pytest.raises(ValueError, match="must be > 0"):
        sample_point(dist, LIKERT_5, 0.0, 1)


# ------------------------------------------------------------------------------ calibration


def dist_of(probs: list[float]):
    return answer_distribution(
        [(str(k + 1), math.log(p)) for k, p in enumerate(probs) if p], LIKERT_5
    )


def test_contextual_calibration_by_hand():
    """Zhao et al.: p_cal ∝ p / p_cf. A model that says "3" to everything (prior 0.1, 0.1, 0.6,
    0.1, 0.1) and gives a persona 0.05, 0.05, 0.5, 0.3, 0.1 really leans towards 4."""
    cf = [dist_of([0.1, 0.1, 0.6, 0.1, 0.1]), dist_of([0.1, 0.1, 0.6, 0.1, 0.1])]
    prior = content_free_prior(cf, smoothing=0.0)
    assert prior == pytest.approx((0.1, 0.1, 0.6, 0.1, 0.1))
    out = calibrated(dist_of([0.05, 0.05, 0.5, 0.3, 0.1]), prior, LIKERT_5)
    weights = np.array([0.5, 0.5, 0.5 / 0.6, 3.0, 1.0])
    probs = weights / weights.sum()
    assert out.probs == pytest.approx(tuple(probs))
    assert out.expected == pytest.approx(float(np.dot(np.arange(1, 6), probs)))
    assert out.entropy == pytest.approx(entropy(probs), rel=1e-9)
    assert out.expected > 3.4 > dist_of([0.05, 0.05, 0.5, 0.3, 0.1]).expected


def test_content_free_prior_averages_and_smooths():
    """The mean of the inputs' distributions, mixed with the uniform one: a point no
    content-free input gives still has a prior of smoothing / points."""
    a, b = dist_of([0, 0, 1.0, 0, 0]), dist_of([0, 0, 0.5, 0.5, 0])
    prior = content_free_prior([a, b])
    mean = np.array([0, 0, 0.75, 0.25, 0])
    expected = (1 - CALIBRATION_SMOOTHING) * mean + CALIBRATION_SMOOTHING / 5
    assert prior == pytest.approx(tuple(expected)) and sum(prior) == pytest.approx(1.0)
    assert min(prior) == pytest.approx(CALIBRATION_SMOOTHING / 5)
    with pytest.raises(ValueError):
        content_free_prior([])


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0.01, 1.0), min_size=5, max_size=5))
def test_calibration_properties(raw):
    """Calibrating by a uniform prior changes nothing; calibrating a distribution by itself
    gives the uniform distribution (an answer that is only the model's prior says nothing)."""
    probs = np.array(raw) / sum(raw)
    dist = dist_of(list(probs))
    same = calibrated(dist, (0.2,) * 5, LIKERT_5)
    assert same.probs == pytest.approx(dist.probs) and same.expected == pytest.approx(dist.expected)
    flat = calibrated(dist, dist.probs, LIKERT_5)
    assert flat.probs == pytest.approx((0.2,) * 5) and flat.expected == pytest.approx(3.0)
    assert flat.coverage == dist.coverage
