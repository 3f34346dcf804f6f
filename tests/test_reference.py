"""Reference loaders on the real survey files, cleaning counts, groups, builtin summaries."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import shared_path

from personagen import TRAITS
from personagen.errors import PersonagenError
from personagen.evaluate.metrics import distribution_metrics, noise_floor
from personagen.io import builtin, reference
from personagen.io.reference import load_reference
from personagen.psychometrics.instruments import get_instrument, spi_instrument
from personagen.psychometrics.scoring import check_min_items

# The standard IPIP-50 key as the data README states it (independent of the package's tables).
REVERSED = {"E2", "E4", "E6", "E8", "E10", "N2", "N4", "A1", "A3", "A5", "A7"}
REVERSED |= {"C2", "C4", "C6", "C8", "O2", "O4", "O6"}
LETTER = {"O": "openness", "C": "conscientiousness", "E": "extraversion"}
LETTER |= {"A": "agreeableness", "N": "neuroticism"}
FFM_PREFIX = {"EXT": "E", "EST": "N", "AGR": "A", "CSN": "C", "OPN": "O"}


def _hand_scores(frame: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """Trait = mean of 10 items after 6 - x on reverse-keyed ones; complete rows only."""
    items = frame[list(names)].rename(columns=names).astype(float)
    items = items[(items > 0).all(axis=1)]
    for col in items:
        if col in REVERSED:
            items[col] = 6 - items[col]
    return pd.DataFrame(
        {LETTER[k]: items[[c for c in items if c[0] == k]].mean(axis=1) for k in LETTER}
    )[list(TRAITS)]


def _cleaning_adds_up(ref: reference.Reference) -> None:
    c = ref.cleaning
    assert c["rows_read"] == c["rows_kept"] + sum(c["dropped"].values())
    assert c["rows_kept"] == ref.n_rows
    assert set(c["dropped"]) <= set(c["rules"])


# --------------------------------------------------------------------------- real files


@pytest.mark.shared_data
def test_big5_scores_match_a_hand_computation():
    path = shared_path("ipip", "big5-2012", "data.csv")
    ref = load_reference(f"big5:{path}")
    _cleaning_adds_up(ref)
    assert ref.cleaning["rows_read"] == 19719
    assert ref.cleaning["keying"]["reflected_columns"] == []
    frame = pd.read_csv(path, sep="\t")
    items = [f"{k}{i}" for k in "ENACO" for i in range(1, 11)]
    hand = _hand_scores(frame, {c: c for c in items})
    x = ref.trait_matrix()
    assert x.shape == (ref.n_rows, 5) and x.dtype == np.float64
    assert np.all((x >= 1) & (x <= 5))
    np.testing.assert_allclose(x.mean(axis=0), hand.mean().to_numpy(), atol=2e-4)
    np.testing.assert_allclose(x.std(axis=0), hand.std(ddof=0).to_numpy(), atol=2e-4)
    # Extraversion and neuroticism correlate negatively in every Big Five sample.
    assert np.corrcoef(x, rowvar=False)[2, 4] < -0.15
    assert set(ref.table.column_names) >= {*TRAITS, "country", "region", "age", "gender"}
    ages = ref.table.column("age").drop_null().to_numpy()
    assert ages.min() >= 10 and ages.max() <= 100
    assert ref.cleaning["notes"]["age_out_of_range_set_null"] > 0


@pytest.mark.shared_data
def test_ipip_ffm_scores_match_a_hand_computation():
    path = shared_path("ipip", "ipip-ffm", "data-final-first1000.csv")
    ref = load_reference(f"ipip-ffm:{path}")
    _cleaning_adds_up(ref)
    frame = pd.read_csv(path, sep="\t")
    names = {f"{p}{i}": f"{k}{i}" for p, k in FFM_PREFIX.items() for i in range(1, 11)}
    hand = _hand_scores(frame, names)
    complete = ref.table.to_pandas()
    # Rows with all 50 answers score identically; the loader also keeps rows with a few missing.
    assert ref.n_rows >= len(hand)
    assert ref.cleaning["notes"]["rows_kept_with_some_missing_items"] == ref.n_rows - len(hand)
    np.testing.assert_allclose(
        np.sort(hand["neuroticism"].to_numpy()),
        np.sort(complete["neuroticism"].to_numpy()[_complete_rows(frame, names, ref.n_rows)]),
    )


def _complete_rows(frame: pd.DataFrame, names: dict[str, str], n_kept: int) -> np.ndarray:
    items = frame[list(names)]
    enough = np.ones(len(frame), dtype=bool)
    for prefix in FFM_PREFIX:
        enough &= (items[[c for c in names if c.startswith(prefix)]] > 0).sum(axis=1) >= 8
    complete = (items > 0).all(axis=1).to_numpy()[enough.to_numpy()]
    assert complete.size == n_kept
    return complete


@pytest.mark.shared_data
def test_reflected_extract_is_detected_and_undone(tmp_path):
    """The first-1000 file with the stability-keyed items reflected (as in the 20k extract) must
    load to exactly the same scores as the raw file."""
    path = shared_path("ipip", "ipip-ffm", "data-final-first1000.csv")
    frame = pd.read_csv(path, sep="\t")
    reflected = ["EXT2", "EXT4", "EST1", "EST3", "EST5", "EST10", "AGR1", "CSN2", "OPN2"]
    frame[reflected] = 6 - frame[reflected]
    copy = tmp_path / "reflected.csv"
    frame.to_csv(copy, sep="\t", index=False)
    raw = load_reference(f"ipip-ffm:{path}")
    undone = load_reference(f"ipip-ffm:{copy}")
    assert sorted(undone.cleaning["keying"]["reflected_columns"]) == sorted(reflected)
    np.testing.assert_array_equal(raw.trait_matrix(), undone.trait_matrix())


@pytest.mark.shared_data
def test_items_20k_extract_is_read_with_its_reflected_columns():
    ref = load_reference(f"ipip-ffm:{shared_path('ipip', 'ipip-ffm', 'items-20k.csv')}")
    _cleaning_adds_up(ref)
    flipped = set(ref.cleaning["keying"]["reflected_columns"])
    # That extract reflects the items keyed against emotional stability, i.e. toward N.
    assert {"EST1", "EST3", "EST10", "EXT2", "AGR1", "OPN2"} <= flipped
    assert not flipped & {"EST2", "EST4", "EXT1", "AGR2"}
    big5 = load_reference(f"big5:{shared_path('ipip', 'big5-2012', 'data.csv')}")
    x, y = ref.trait_matrix(), big5.trait_matrix()
    # Same instrument, same website, a few years apart: means and SDs within 0.1.
    np.testing.assert_allclose(x.mean(axis=0), y.mean(axis=0), atol=0.1)
    np.testing.assert_allclose(x.std(axis=0), y.std(axis=0), atol=0.1)


@pytest.mark.shared_data
def test_streamed_batches_equal_one_batch(tmp_path, monkeypatch):
    """Tiny blocks (many batches) give the same rows, and duplicates are found across batches."""
    path = shared_path("ipip", "ipip-ffm", "data-final-first1000.csv")
    frame = pd.read_csv(path, sep="\t")
    doubled = pd.concat([frame, frame.iloc[:37]])
    copy = tmp_path / "doubled.csv"
    doubled.to_csv(copy, sep="\t", index=False)
    whole = load_reference(f"ipip-ffm:{copy}")
    monkeypatch.setattr(reference, "_BATCH_BYTES", 64 << 10)
    streamed = load_reference(f"ipip-ffm:{copy}")
    assert (
        whole.cleaning["dropped"]["duplicates"]
        == 37 + load_reference(f"ipip-ffm:{path}").cleaning["dropped"]["duplicates"]
    )
    keying = streamed.cleaning.pop("keying"), whole.cleaning.pop("keying")
    assert keying[0]["reflected_columns"] == keying[1]["reflected_columns"] == []
    assert streamed.cleaning == whole.cleaning
    np.testing.assert_array_equal(streamed.trait_matrix(), whole.trait_matrix())


@pytest.mark.shared_data
def test_spi_instrument_and_scores():
    path = shared_path("ipip", "sapa-spi", "spi.csv")
    keys = json.loads((path.parent / "spi.keys.json").read_text())
    instrument = spi_instrument(path.parent / "spi.keys.json")
    assert get_instrument(f"spi:{path}") == instrument
    assert len(instrument.items) == 70
    assert sum(item.keyed < 0 for item in instrument.items) == sum(
        entry.startswith("-")
        for k in ("Agree", "Consc", "Neuro", "Extra", "Open")
        for entry in keys[k]
    )
    assert all(item.text for item in instrument.items)
    ref = load_reference(f"spi:{path}")
    _cleaning_adds_up(ref)
    frame = pd.read_csv(path)
    hand = {}
    for key, trait in (("Open", "openness"), ("Neuro", "neuroticism")):
        cols = [e.lstrip("-") for e in keys[key]]
        values = frame[cols].astype(float).copy()
        for e in keys[key]:
            if e.startswith("-"):
                values[e[1:]] = 7 - values[e[1:]]
        hand[trait] = 1 + (values.mean(axis=1) - 1) * 4 / 5
    x = ref.trait_matrix()
    np.testing.assert_allclose(x[:, TRAITS.index("openness")], hand["openness"], atol=1e-12)
    np.testing.assert_allclose(x[:, TRAITS.index("neuroticism")], hand["neuroticism"], atol=1e-12)
    assert set(ref.table.column("gender").drop_null().to_pylist()) == {"male", "female"}


@pytest.mark.shared_data
def test_spi_without_its_dictionary_serves_references_but_cannot_be_asked(tmp_path):
    keys = shared_path("ipip", "sapa-spi", "spi.keys.json")
    (tmp_path / "spi.keys.json").write_bytes(keys.read_bytes())
    instrument = spi_instrument(tmp_path)
    assert len(instrument.items) == 70 and not any(item.text for item in instrument.items)
    with pytest.raises(PersonagenError, match=r"70 item.s. without text .*spi.dictionary.csv"):
        check_min_items(instrument, 1)
    check_min_items(spi_instrument(keys.parent), 10)


# --------------------------------------------------------------------------- trait tables


def test_trait_table_cleaning_counts(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 5, size=(100, 5))
    x[3, 1] = np.nan
    x[7, 0] = 5.5
    x[8, 4] = 0.2
    weights = np.ones(100)
    weights[10] = -1
    table = pa.table(
        {
            **{t: x[:, j] for j, t in enumerate(TRAITS)},
            "country": ["jp"] * 50 + ["US"] * 49 + ["A1"],
            "weight": weights,
        }
    )
    path = tmp_path / "ref.parquet"
    pq.write_table(table, path)
    ref = load_reference(str(path))
    _cleaning_adds_up(ref)
    assert ref.cleaning["dropped"] == {"missing_traits": 1, "out_of_range": 2, "bad_weight": 1}
    assert ref.cleaning["notes"]["country_not_a_country_code"] == 1
    assert ref.weights() is not None and ref.weights().shape == (96,)
    assert set(ref.table.column("region").drop_null().to_pylist()) == {"east-asia", "north-america"}
    csv = tmp_path / "ref.csv"
    table.to_pandas().to_csv(csv, index=False)
    from_csv = load_reference(str(csv), group="east-asia", min_rows=10)
    # Rows 3, 7, 8 and 10 (all Japanese) were dropped above; 46 remain of the 50.
    assert from_csv.n_rows == 46 and from_csv.cleaning["dropped"]["group"] == 96 - 46


def test_trait_table_errors(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"openness": [3.0], "extraversion": [2.0]}), path)
    with pytest.raises(PersonagenError, match="lacks trait columns conscientiousness"):
        load_reference(str(path))
    with pytest.raises(PersonagenError, match="not found"):
        load_reference(str(tmp_path / "nope.parquet"))
    with pytest.raises(PersonagenError, match="not found"):
        load_reference(f"big5:{tmp_path / 'nope.csv'}")
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({t: [3.0] * 10 for t in TRAITS}), good)
    with pytest.raises(PersonagenError, match=r"has 10 usable rows.*at least 50"):
        load_reference(str(good))
    with pytest.raises(PersonagenError, match="no country column"):
        load_reference(str(good), group="europe", min_rows=1)
    with pytest.raises(PersonagenError, match="not both"):
        load_reference(str(good), group="europe", countries=["JP"])


# --------------------------------------------------------------------------- groups


@pytest.mark.shared_data
def test_group_and_countries_filter_big5():
    path = shared_path("ipip", "big5-2012", "data.csv")
    frame = pd.read_csv(path, sep="\t", keep_default_na=False)
    everyone = load_reference(f"big5:{path}")
    east = load_reference(f"big5:{path}", group="east-asia")
    _cleaning_adds_up(east)
    expected = everyone.table.filter(
        pa.array(
            [
                c in {"CN", "JP", "KR", "TW", "HK", "MO", "MN", "KP"}
                for c in everyone.table.column("country").to_pylist()
            ]
        )
    )
    assert east.n_rows == expected.num_rows > 100
    assert east.group == "east-asia"
    assert "Eastern Asia" in east.cleaning["rules"]["group"]
    jpkr = load_reference(f"big5:{path}", countries=["JP", "KR"])
    assert jpkr.n_rows == int(frame["country"].isin(["JP", "KR"]).sum())
    with pytest.raises(PersonagenError, match=r"group 'central-asia' has \d+ usable rows"):
        load_reference(f"big5:{path}", group="central-asia")
    with pytest.raises(PersonagenError, match="group 'GL' has 0 usable rows"):
        load_reference(f"big5:{path}", countries=["GL"], min_rows=1)


# --------------------------------------------------------------------------- builtin


def test_builtin_works_without_data():
    ref = load_reference("builtin:global", seed=3, builtin_rows=5000)
    x = ref.trait_matrix()
    assert x.shape == (5000, 5) and np.all((x >= 1) & (x <= 5))
    assert "Open-Source Psychometrics" in ref.source and "respondents" in ref.source
    again = load_reference("builtin:global", seed=3, builtin_rows=5000).trait_matrix()
    np.testing.assert_array_equal(x, again)
    assert not np.array_equal(x, load_reference("builtin:global", seed=4).trait_matrix()[:5000])
    east = load_reference("builtin:global", group="east-asia", builtin_rows=500)
    assert east.group == "east-asia" and east.table.column("region")[0].as_py() == "east-asia"
    document = builtin.read_builtin()
    assert builtin.BUILTIN_PATH.stat().st_size < 200_000
    for name, group in document["groups"].items():
        assert group["respondents"] >= document["min_respondents"], name
    assert all(n < document["min_respondents"] for n in document["withheld"].values())


def test_builtin_errors():
    document = builtin.read_builtin()
    withheld = next(iter(document["withheld"]))
    with pytest.raises(PersonagenError, match=f"'{withheld}' is not offered: it rests on"):
        load_reference(f"builtin:{withheld}")
    with pytest.raises(PersonagenError, match="unknown group 'mars'"):
        load_reference("builtin:mars")
    with pytest.raises(PersonagenError, match="region summaries only"):
        load_reference("builtin:global", countries=["JP"])
    with pytest.raises(PersonagenError, match="name one group"):
        load_reference("builtin:europe", group="east-asia")


@pytest.mark.shared_data
@pytest.mark.parametrize("group", ["global", "east-asia", "north-america", "europe"])
def test_builtin_samples_reproduce_the_source(group):
    """Tolerances, with 200k samples: means and SDs within 0.01 (source SDs are 0.6-0.95 on the
    1-5 scale), every Pearson correlation within 0.02 of the source's."""
    path = shared_path("ipip", "big5-2012", "data.csv")
    source = load_reference(f"big5:{path}", group=group).trait_matrix()
    sample = load_reference(f"builtin:{group}", seed=11, builtin_rows=200_000).trait_matrix()
    np.testing.assert_allclose(sample.mean(axis=0), source.mean(axis=0), atol=0.01)
    np.testing.assert_allclose(sample.std(axis=0), source.std(axis=0), atol=0.01)
    np.testing.assert_allclose(
        np.corrcoef(sample, rowvar=False), np.corrcoef(source, rowvar=False), atol=0.02
    )
    # Samples sit on the source's score values: means of 10 answers, multiples of 0.1.
    assert np.allclose(sample * 10, np.round(sample * 10))


@pytest.mark.shared_data
def test_builtin_file_is_reproducible_from_the_source():
    """Refitting the shipped groups from the source gives the shipped numbers."""
    path = shared_path("ipip", "big5-2012", "data.csv")
    document = builtin.read_builtin()
    for group in ("global", "east-asia"):
        x = load_reference(f"big5:{path}", group=group).trait_matrix()
        refit = builtin.fit_summary(x, seed=0)
        shipped = document["groups"][group]
        assert refit["respondents"] == shipped["respondents"]
        assert refit["marginals"] == shipped["marginals"]
        np.testing.assert_allclose(
            refit["latent_correlation"], shipped["latent_correlation"], atol=1e-6
        )


@pytest.mark.shared_data
def test_copula_is_about_as_close_to_the_source_as_another_source_sample():
    """Energy distance of copula samples to half the source, over the noise floor (two halves
    of the source): measured about 1.25x for the global group at n = 1,500; must stay < 1.6x.
    This checks the whole joint, not only the moments a Gaussian copula is built to match."""
    source = load_reference(f"big5:{shared_path('ipip', 'big5-2012', 'data.csv')}").trait_matrix()
    n = 1500
    floor = noise_floor(source, n, repeats=4, seed=1)["mean"]["energy"]
    rng = np.random.default_rng(2)
    model = builtin.read_builtin()["groups"]["global"]
    energies = []
    for k in range(4):
        half = source[rng.choice(source.shape[0], n, replace=False)]
        energies.append(
            distribution_metrics(builtin.sample_summary(model, n, seed=k), half, seed=k)["energy"]
        )
    assert np.mean(energies) < 1.6 * floor
