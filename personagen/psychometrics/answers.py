"""A model's answer to one item -> an item response on the instrument's scale.

Logprob mode asks for a one-token answer with `top_logprobs` and reads the probabilities of the
scale's answer tokens: the expected value is a graded response even from a small model, and the
entropy says how sure it was. Text mode parses a written answer strictly, by the same rule
(`answer_point` of the whole reply; None means ask again).

Which tokens count as answer k: the digit k alone, after removing surrounding whitespace and the
word-start markers some tokenizers show ("Ġ", "▁"), optionally followed by one of `. ) , :`.
So "3", " 3", "3\\n", "▁3", "3." and "3)" all mean 3; "30", "3/5", "three", "(3" do not. Several
tokens meaning the same point (" 3" and "3") add up: they are disjoint continuations. Scale points
must be single digits (0-9), since a longer number is not one token.

Contextual calibration (Zhao et al. 2021, "Calibrate before use"): small models answer Likert
items with a strong prior of their own (always "3", always "agree"). The answer distribution of
an item under content-free personas (`CONTENT_FREE`, averaged as the paper does) estimates that
prior; dividing it out (`calibrated`: p_cal ∝ p / p_cf, renormalised) leaves what the persona
changes. The prior is mixed with a little of the uniform distribution first
(`CALIBRATION_SMOOTHING`), so a point the content-free answers never give is boosted by a large
but finite factor rather than an infinite one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from personagen.errors import PersonagenError
from personagen.psychometrics.instruments import Scale

CONTENT_FREE = ("N/A", "", "[MASK]")
"""The content-free personas whose answer distributions are averaged into an item's prior (the
three inputs of Zhao et al. 2021)."""
CALIBRATION_SMOOTHING = 0.01
"""Share of the uniform distribution mixed into a content-free prior: on a 5-point scale no point
has a prior below 0.002, so dividing by it boosts a point at most 500-fold."""

_ANSWER = re.compile(r"([0-9])[.),:]?")
_STRIP = " \t\r\n\u0120\u2581"  # whitespace, GPT-2 "Ġ", SentencePiece "▁"


class NoScaleAnswer(PersonagenError):
    """The model's top tokens hold no answer on the scale."""


@dataclass(frozen=True)
class AnswerDistribution:
    probs: tuple[float, ...]
    """Probability of each scale point (min..max), renormalised over the scale's tokens."""
    expected: float
    """Expected response on the instrument's scale."""
    entropy: float
    """Shannon entropy of `probs` in nats (0 = certain; log(points) = uniform)."""
    coverage: float
    """Probability the model put on scale answers at all, before renormalising (0-1]."""


def answer_point(token: str, scale: Scale) -> int | None:
    """The scale point a token (or a whole text answer) stands for, or None (rule: see above)."""
    match = _ANSWER.fullmatch(token.strip(_STRIP))
    if match is None:
        return None
    point = int(match.group(1))
    return point if scale.min <= point <= scale.max else None


def supports_logprobs(scale: Scale) -> bool:
    """Every point of the scale is a single digit, so an answer is one token."""
    return scale.min >= 0 and scale.max <= 9


def answer_distribution(
    top_logprobs: Mapping[str, float] | Iterable[tuple[str, float]], scale: Scale
) -> AnswerDistribution:
    """Top token log-probabilities of a one-token answer -> distribution over the scale points.

    Raises `NoScaleAnswer` (naming the tokens seen) when none of them is a scale answer.
    """
    if not supports_logprobs(scale):
        raise PersonagenError(
            f"logprob answers need single-digit scale points; the scale is {scale.min}-{scale.max}"
        )
    pairs = list(top_logprobs.items() if isinstance(top_logprobs, Mapping) else top_logprobs)
    index, logps = [], []
    for token, logprob in pairs:
        point = answer_point(token, scale)
        if point is not None and math.isfinite(logprob):
            index.append(point - scale.min)
            logps.append(float(logprob))
    if not logps:
        seen = ", ".join(repr(token) for token, _ in pairs[:10]) or "none"
        raise NoScaleAnswer(f"no {scale.min}-{scale.max} answer among the top tokens ({seen})")
    # log-sum-exp by hand: scipy's logsumexp costs ~0.2 ms a call, and this runs once per item
    shift = max(logps)
    size = scale.max - scale.min + 1
    mass = np.bincount(index, weights=np.exp(np.array(logps) - shift), minlength=size)
    total = mass.sum()
    return _distribution(mass / total, scale, float(min(math.exp(shift) * total, 1.0)))


def _distribution(probs: np.ndarray, scale: Scale, coverage: float) -> AnswerDistribution:
    nonzero = probs[probs > 0]
    return AnswerDistribution(
        probs=tuple(float(p) for p in probs),
        expected=float(
            np.clip(np.dot(np.arange(scale.min, scale.max + 1), probs), scale.min, scale.max)
        ),
        entropy=float(-np.sum(nonzero * np.log(nonzero))),
        coverage=coverage,
    )


def content_free_prior(
    distributions: Sequence[AnswerDistribution], smoothing: float = CALIBRATION_SMOOTHING
) -> tuple[float, ...]:
    """An item's prior: the mean of its answer distributions under content-free personas, mixed
    with `smoothing` of the uniform distribution."""
    if not distributions:
        raise ValueError("a content-free prior needs at least one answer distribution")
    mean = np.mean([d.probs for d in distributions], axis=0)
    prior = (1 - smoothing) * mean + smoothing / mean.size
    return tuple(float(p) for p in prior)


def calibrated(
    dist: AnswerDistribution, prior: Sequence[float], scale: Scale
) -> AnswerDistribution:
    """`dist` with the item's content-free `prior` divided out (p_cal ∝ p / prior), renormalised;
    expected value and entropy of the result, `coverage` of the raw answer."""
    weights = np.array(dist.probs) / np.array(prior, dtype=np.float64)
    return _distribution(weights / weights.sum(), scale, dist.coverage)


def sample_point(dist: AnswerDistribution, scale: Scale, temperature: float, seed: int) -> int:
    """One answer drawn from `dist` at `temperature` (probabilities ** (1 / T), renormalised):
    what sampling the answer token at that temperature gives, restricted to the scale."""
    if temperature <= 0:
        raise ValueError(f"a sampling temperature must be > 0, not {temperature}")
    logp = np.log(np.maximum(np.array(dist.probs), 1e-300)) / temperature
    weights = np.exp(logp - logp.max()) * (np.array(dist.probs) > 0)
    rng = np.random.default_rng(seed)
    return scale.min + int(rng.choice(len(weights), p=weights / weights.sum()))
