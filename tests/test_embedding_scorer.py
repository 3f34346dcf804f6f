"""The zero-shot embedding scorer's arithmetic: by hand, and the properties that make it a
keyed, per-item standardised score."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from personagen import TRAITS
from personagen.psychometrics.embedding_scorer import (
    SPREAD,
    cosine,
    keyed_similarity,
    standardise,
    zero_shot_scores,
)
from personagen.psychometrics.instruments import IPIP_50, instrument_from_dict

TWO = instrument_from_dict(
    {
        "id": "two",
        "scale": {"min": 1, "max": 5, "labels": list("abcde")},
        "traits": ["extraversion", "neuroticism"],
        "items": [
            {"id": "E1", "text": "party", "trait": "extraversion", "keyed": "+"},
            {"id": "E2", "text": "quiet", "trait": "extraversion", "keyed": "-"},
            {"id": "N1", "text": "worry", "trait": "neuroticism", "keyed": "+"},
        ],
    }
)


def test_keyed_similarity_by_hand():
    similarity = np.array([[0.5, 0.1, 0.3], [0.3, 0.3, 0.3], [0.1, 0.5, 0.6]])
    # per item: E1 z = (1.2247, 0, -1.2247); E2 z = (-1.2247, 0, 1.2247), reversed: the same as E1
    # N1 z = (-0.7071, -0.7071, 1.4142)
    out = keyed_similarity(similarity, TWO)
    z = np.sqrt(1.5)
    assert out[:, TRAITS.index("extraversion")] == pytest.approx([z, 0, -z])
    assert out[:, TRAITS.index("neuroticism")] == pytest.approx(
        [-1 / np.sqrt(2)] * 2 + [np.sqrt(2)]
    )
    assert np.isnan(out[:, TRAITS.index("openness")]).all()
    scores = zero_shot_scores(out)
    assert scores[:, TRAITS.index("extraversion")] == pytest.approx(
        [3 + SPREAD * z, 3, 3 - SPREAD * z]
    )
    assert np.isnan(scores[:, TRAITS.index("agreeableness")]).all()


def test_cosine_and_standardise_by_hand():
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[0.0, 2.0]])
    assert cosine(a, b) == pytest.approx(np.array([[0.8], [0.0]]))
    values = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, 2.0], [5.0, 5.0, 4.0]])
    out = standardise(values)
    assert out[:, 0] == pytest.approx([-np.sqrt(1.5), 0, np.sqrt(1.5)])
    assert list(out[:, 1]) == [0, 0, 0]  # no spread: every row at the mean
    assert np.isnan(out[0, 2]) and out[1:, 2] == pytest.approx([-1, 1])


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, (12, 50), elements=st.floats(-1, 1)),
    arrays(np.float64, 50, elements=st.floats(0.1, 3)),
    arrays(np.float64, 50, elements=st.floats(-0.5, 0.5)),
)
def test_items_weigh_alike_whatever_their_similarity_level_and_spread(similarity, scale, shift):
    """A per-item affine change of the similarities (an item closer to every narrative, or one
    whose similarities vary more) leaves the keyed trait scores unchanged."""
    spread = np.random.default_rng(0).normal(scale=0.05, size=similarity.shape)
    similarity = similarity + spread  # every item and trait has some spread
    base = keyed_similarity(similarity, IPIP_50)
    moved = keyed_similarity(similarity * scale + shift, IPIP_50)
    assert moved == pytest.approx(base, abs=1e-6)
    assert np.nanmean(base, axis=0) == pytest.approx(np.zeros(5), abs=1e-9)
    scores = zero_shot_scores(base)
    assert np.all((scores >= 1) & (scores <= 5))


def test_a_narrative_close_to_forward_items_and_far_from_reverse_ones_scores_high():
    """Reverse keying: similarity to "I don't talk a lot" counts against extraversion."""
    rng = np.random.default_rng(0)
    similarity = rng.normal(scale=0.01, size=(10, 50))
    extraversion = [j for j, item in enumerate(IPIP_50.items) if item.trait == "extraversion"]
    for j in extraversion:
        similarity[0, j] += 0.3 * IPIP_50.items[j].keyed
    scores = zero_shot_scores(keyed_similarity(similarity, IPIP_50))
    column = scores[:, TRAITS.index("extraversion")]
    assert column.argmax() == 0 and column[0] == pytest.approx(min(5.0, 3 + SPREAD * 3.0))
