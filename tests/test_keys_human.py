"""The keys proven on real human answers: reverse-keyed items go with their trait after keying,
every trait is internally consistent (alpha >= 0.75), and people are rarely flagged.

Data: ../shared/data/ipip (skipped when absent). There is no human IPIP-NEO data there, so the
NEO keys are checked against their published source in test_instruments.py instead.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path

from personagen.config import ScoreConfig
from personagen.psychometrics.flags import quality_flags
from personagen.psychometrics.human import looks_prekeyed, read_ipip50_responses
from personagen.psychometrics.instruments import IPIP_50, Instrument, instrument_from_dict
from personagen.psychometrics.reliability import instrument_reliability

pytestmark = pytest.mark.shared_data

FILES = {
    "big5": ("big5-2012", "data.csv"),
    "ffm-first1000": ("ipip-ffm", "data-final-first1000.csv"),
    "ffm-20k": ("ipip-ffm", "items-20k.csv"),
}


@pytest.fixture(scope="module", params=list(FILES))
def human(request):
    return request.param, read_ipip50_responses(shared_path("ipip", *FILES[request.param]))


def assert_keys_hold(responses: np.ndarray, instrument: Instrument) -> dict[str, float]:
    report = instrument_reliability(responses, instrument)
    for trait, row in report.items():
        assert row["alpha"] >= 0.75, (trait, row["alpha"])
        for item in instrument.items:
            if item.trait == trait:
                # after keying, every item (reverse-keyed ones included) goes with the rest
                assert row["item_total"][item.id] > 0.2, (item.id, item.keyed, row["item_total"])
    return {trait: row["alpha"] for trait, row in report.items()}


def test_ipip_50_keys_on_human_answers(human):
    name, responses = human
    assert responses.shape[1] == 50 and responses.shape[0] >= 1000
    alphas = assert_keys_hold(responses, IPIP_50)
    print(name, {t: round(a, 3) for t, a in alphas.items()})


def test_pre_keyed_sample_is_detected_and_unkeyed():
    path_20k = shared_path("ipip", *FILES["ffm-20k"])
    raw_20k = read_ipip50_responses(path_20k, keying="raw")
    assert looks_prekeyed(raw_20k)
    first = read_ipip50_responses(shared_path("ipip", *FILES["ffm-first1000"]), keying="raw")
    assert not looks_prekeyed(first)
    # read as it is stored, the standard keys would turn reverse items against their trait
    report = instrument_reliability(raw_20k, IPIP_50)
    assert report["extraversion"]["item_total"]["E2"] < 0
    # unkeyed, the 20k sample answers each item like the raw first 1,000 rows of the same survey,
    # which also fixes the direction of the EST block (toward neuroticism, not stability)
    unkeyed = read_ipip50_responses(path_20k)
    gap = np.abs(np.nanmean(unkeyed, axis=0) - np.nanmean(first, axis=0))
    assert gap.max() < 0.2, dict(zip(IPIP_50.item_ids(), gap.round(2), strict=True))


def test_humans_are_rarely_flagged(human):
    name, responses = human
    flags = quality_flags(responses, IPIP_50, ScoreConfig())
    rate = np.mean([bool(f) for f in flags])
    print(name, f"flagged {rate:.2%}")
    assert rate < 0.02
    # and the flags do catch the straight-liners people produce too
    rows = np.flatnonzero(np.sum(~np.isnan(responses), axis=1) >= 2)
    sub = responses[rows]
    straight = rows[np.nanmax(sub, axis=1) == np.nanmin(sub, axis=1)]
    assert straight.size
    assert all("low_variance" in flags[i] for i in straight)


def test_sapa_spi_big_five_keys_on_a_six_point_scale():
    folder = shared_path("ipip", "sapa-spi")
    keys = json.loads((folder / "spi.keys.json").read_text())
    dictionary = pd.read_csv(folder / "spi.dictionary.csv")
    texts = dict(zip(dictionary["item_id"], dictionary["item"], strict=True))
    traits = {
        "Open": "openness",
        "Consc": "conscientiousness",
        "Extra": "extraversion",
        "Agree": "agreeableness",
        "Neuro": "neuroticism",
    }
    spi = instrument_from_dict(
        {
            "id": "spi-big5",
            "scale": {"min": 1, "max": 6, "labels": [str(n) for n in range(1, 7)]},
            "items": [
                {
                    "id": key.lstrip("-"),
                    "text": texts[key.lstrip("-")],
                    "trait": trait,
                    "keyed": "-" if key.startswith("-") else "+",
                }
                for short, trait in traits.items()
                for key in keys[short]
            ],
        }
    )
    data = pd.read_csv(folder / "spi.csv", usecols=spi.item_ids())[spi.item_ids()]
    alphas = assert_keys_hold(data.to_numpy(dtype=np.float64), spi)
    print("spi", {t: round(a, 3) for t, a in alphas.items()})
