"""Quality flags on synthetic answer patterns (human rates: test_keys_human.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from personagen.config import ScoreConfig, load_config
from personagen.errors import ConfigError
from personagen.psychometrics.flags import (
    acquiescence_index,
    quality_flags,
    response_sd,
)
from personagen.psychometrics.instruments import IPIP_50, IPIP_NEO_120, Instrument

SIGNS = np.array([item.keyed for item in IPIP_50.items])
TRAIT_OF = np.array([item.trait for item in IPIP_50.items])


def consistent(levels: dict[str, float], instrument: Instrument = IPIP_50) -> np.ndarray:
    """Raw answers of someone answering purely by content: trait level L on forward items,
    its reflection on reverse items."""
    lo, hi = instrument.scale.min, instrument.scale.max
    return np.array(
        [[levels[i.trait] if i.keyed > 0 else lo + hi - levels[i.trait] for i in instrument.items]],
        dtype=float,
    )


def flags_of(row: np.ndarray, **cfg) -> list[str]:
    return quality_flags(np.atleast_2d(row), IPIP_50, ScoreConfig(**cfg))[0]


def test_patterns():
    assert flags_of(np.full(50, 5.0)) == ["acquiescent", "low_variance"]
    assert flags_of(np.full(50, 1.0)) == ["nay_saying", "low_variance"]
    assert flags_of(np.full(50, 3.0)) == ["low_variance"]
    extreme = consistent(dict.fromkeys(IPIP_50.traits, 5.0))
    assert flags_of(extreme) == []
    # agrees fully with forward items and is neutral on reverse ones: one step of yes-saying
    yes = np.where(SIGNS > 0, 5.0, 3.0)
    assert flags_of(yes) == ["acquiescent"]
    assert acquiescence_index(yes[None], IPIP_50)[0] == pytest.approx(4.0)
    # alternating 1/5 regardless of content: high variance, no net agreement
    assert flags_of(np.tile([1.0, 5.0], 25)) == []


def test_missing_items_per_trait():
    row = consistent(dict.fromkeys(IPIP_50.traits, 4.0))[0]
    row[(TRAIT_OF == "neuroticism")] = np.nan
    row[np.flatnonzero(TRAIT_OF == "openness")[:3]] = np.nan
    assert flags_of(row) == ["missing_items:openness", "missing_items:neuroticism"]
    assert flags_of(row, min_items_per_trait=7) == ["missing_items:neuroticism"]
    assert flags_of(np.full(50, np.nan)) == [f"missing_items:{t}" for t in IPIP_50.traits]


def test_thresholds_are_configurable():
    yes = np.where(SIGNS > 0, 5.0, 2.0)  # balanced agreement 3.5
    assert flags_of(yes) == []
    assert flags_of(yes, acquiescence_max=0.5) == ["acquiescent"]
    assert flags_of(np.tile([3.0, 4.0], 25)) == []  # sd 0.5
    assert flags_of(np.tile([3.0, 4.0], 25), min_response_sd=0.6) == ["low_variance"]
    cfg = load_config(overrides=["score.acquiescence_max=0.75", "score.mode=logprob"])
    assert (cfg.score.acquiescence_max, cfg.score.mode, cfg.score.instrument) == (
        0.75,
        "logprob",
        "ipip-50",
    )
    with pytest.raises(ConfigError, match=r"score\.mode"):
        load_config(overrides=["score.mode=guess"])


levels = st.floats(1, 5, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.tuples(levels, levels, levels, levels, levels), st.sampled_from([IPIP_50, IPIP_NEO_120]))
def test_content_alone_is_never_acquiescence(values, instrument):
    row = consistent(dict(zip(instrument.traits, values, strict=True)), instrument)
    assert acquiescence_index(row, instrument)[0] == pytest.approx(3.0)
    assert "acquiescent" not in quality_flags(row, instrument)[0]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([1.0, 2.0, 3.0, 4.0, 5.0]), min_size=50, max_size=50),
    st.floats(-1, 1),
)
def test_agreement_shifts_and_reflections(answers, shift):
    row = np.array([answers])
    acq = acquiescence_index(row, IPIP_50)[0]
    # reflecting every answer reflects agreement; adding c to every answer adds c
    assert acquiescence_index(6 - row, IPIP_50)[0] == pytest.approx(6 - acq)
    assert acquiescence_index(row + shift, IPIP_50)[0] == pytest.approx(acq + shift)
    assert response_sd(row + shift, IPIP_50)[0] == pytest.approx(np.std(answers), abs=1e-9)
