"""Trait and facet scoring, and aligning per-persona shuffled answers by item id."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from personagen import TRAITS
from personagen.errors import PersonagenError
from personagen.psychometrics.instruments import (
    IPIP_50,
    IPIP_NEO_120,
    Instrument,
    Item,
    Scale,
)
from personagen.psychometrics.scoring import (
    align_responses,
    check_min_items,
    facet_scores,
    keyed_responses,
    to_five_point,
    trait_scores,
)

SEVEN = Instrument(
    id="seven",
    name="seven-point",
    items=(
        Item("a", "x", "openness", 1, "F1"),
        Item("b", "x", "openness", -1, "F1"),
        Item("c", "x", "openness", 1, "F2"),
        Item("d", "x", "neuroticism", -1),
    ),
    scale=Scale(1, 7, tuple("1234567")),
    source="test",
    traits=("openness", "neuroticism"),
)


def test_scores_by_hand():
    responses = np.array([[7, 1, 4, 7], [1, 7, np.nan, np.nan]])
    # a: 7 -> 5; b reversed: 1 -> 7 -> 5; c: 4 -> 3; d reversed: 7 -> 1 -> 1
    expected = np.full((2, 5), np.nan)
    expected[0, TRAITS.index("openness")] = (5 + 5 + 3) / 3
    expected[0, TRAITS.index("neuroticism")] = 1.0
    expected[1, TRAITS.index("openness")] = 1.0
    np.testing.assert_allclose(trait_scores(responses, SEVEN), expected)
    names, facets = facet_scores(responses, SEVEN)
    assert names == ["F1", "F2"]
    np.testing.assert_allclose(facets, [[5.0, 3.0], [1.0, np.nan]])


def test_min_items_leaves_thin_traits_empty():
    responses = np.array([[7, np.nan, np.nan, 7]])
    scores = trait_scores(responses, SEVEN, min_items=2)
    assert np.isnan(scores[0, TRAITS.index("openness")])
    with pytest.raises(PersonagenError, match=r"min_items_per_trait=2.*neuroticism has 1"):
        check_min_items(SEVEN, 2)
    check_min_items(IPIP_50, 10)


responses_5 = arrays(
    np.float64, (7, 50), elements=st.sampled_from([1.0, 2.0, 3.0, 4.0, 5.0, np.nan])
)


@settings(max_examples=50, deadline=None)
@given(responses_5)
def test_reverse_keying_is_an_involution_and_scores_stay_in_range(responses):
    keyed = keyed_responses(responses, IPIP_50)
    np.testing.assert_array_equal(keyed_responses(keyed, IPIP_50), responses)
    scores = trait_scores(responses, IPIP_50)
    finite = scores[~np.isnan(scores)]
    assert np.all((finite >= 1) & (finite <= 5))
    # reflecting every answer reflects every trait score (keys are symmetric on the scale)
    np.testing.assert_allclose(trait_scores(6 - responses, IPIP_50), 6 - scores)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, (5, 4), elements=st.floats(1, 7)))
def test_other_scales_map_linearly_onto_one_to_five(responses):
    five = to_five_point(responses, SEVEN)
    np.testing.assert_allclose(five, 1 + (responses - 1) * 4 / 6)
    scores = trait_scores(responses, SEVEN)
    assert np.all((scores[:, 0] >= 1 - 1e-12) & (scores[:, 0] <= 5 + 1e-12))


def test_neo_facets_average_to_domains():
    rng = np.random.default_rng(0)
    responses = rng.integers(1, 6, size=(20, 120)).astype(float)
    names, facets = facet_scores(responses, IPIP_NEO_120)
    domains = trait_scores(responses, IPIP_NEO_120)
    trait_of = {item.facet: item.trait for item in IPIP_NEO_120.items}
    for j, trait in enumerate(TRAITS):
        cols = [k for k, name in enumerate(names) if trait_of[name] == trait]
        # 4 items per facet, 24 per domain: the domain is the mean of its six facets
        np.testing.assert_allclose(facets[:, cols].mean(axis=1), domains[:, j])


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_alignment_undoes_any_shuffle(data):
    n = data.draw(st.integers(1, 6))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    ordered = rng.integers(1, 6, size=(n, 50)).astype(float)
    ordered[rng.random((n, 50)) < 0.1] = np.nan
    ids, values = [], []
    for row in ordered:
        keep = [j for j in rng.permutation(50) if not np.isnan(row[j]) or rng.random() < 0.5]
        ids.append([IPIP_50.items[j].id for j in keep])
        values.append([None if np.isnan(row[j]) else row[j] for j in keep])
    np.testing.assert_array_equal(align_responses(ids, values, IPIP_50), ordered)
    table = pa.table({"ids": ids, "values": pa.array(values, pa.list_(pa.float32()))})
    np.testing.assert_array_equal(
        align_responses(table.column("ids"), table.column("values"), IPIP_50), ordered
    )


def test_alignment_errors_name_the_row():
    with pytest.raises(PersonagenError, match=r"row 1: item 'Z9' is not in instrument 'ipip-50'"):
        align_responses([["E1"], ["Z9"]], [[1.0], [2.0]], IPIP_50)
    with pytest.raises(PersonagenError, match=r"row 0: item 'E1' repeated"):
        align_responses([["E1", "E1"]], [[1.0, 2.0]], IPIP_50)
    with pytest.raises(PersonagenError, match=r"row 0: 2 item ids but 1 responses"):
        align_responses([["E1", "E2"]], [[1.0]], IPIP_50)
    rows = align_responses([None, ["O10"]], [None, [5.0]], IPIP_50)
    assert np.isnan(rows[0]).all() and rows[1, -1] == 5.0
