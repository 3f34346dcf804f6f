"""Built-in inventories (checked against their published sources) and custom instrument files."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import shared_path

from personagen import TRAITS
from personagen.errors import PersonagenError
from personagen.psychometrics.instruments import (
    BUILTIN,
    IPIP_50,
    IPIP_FFM_COLUMNS,
    IPIP_NEO_120,
    IPIP_NEO_300,
    LIKERT_5,
    get_instrument,
    instrument_from_dict,
    load_instrument,
)

NEO_TRAIT = {
    "N": "neuroticism",
    "E": "extraversion",
    "O": "openness",
    "A": "agreeableness",
    "C": "conscientiousness",
}


def test_ipip_50_is_the_standard_key():
    assert IPIP_50.item_ids() == [f"{c}{n}" for c in "ENACO" for n in range(1, 11)]
    reversed_ids = {item.id for item in IPIP_50.items if item.keyed < 0}
    # The published IPIP key, as in ../shared/data/README.md.
    assert reversed_ids == set(
        [
            "E2",
            "E4",
            "E6",
            "E8",
            "E10",
            "N2",
            "N4",
            "A1",
            "A3",
            "A5",
            "A7",
            "C2",
            "C4",
            "C6",
            "C8",
            "O2",
            "O4",
            "O6",
        ]
    )
    assert IPIP_50.scale == LIKERT_5 and (LIKERT_5.min, LIKERT_5.max) == (1, 5)
    assert set(IPIP_FFM_COLUMNS.values()) == set(IPIP_50.item_ids())
    assert IPIP_FFM_COLUMNS["EST1"] == "N1" and IPIP_FFM_COLUMNS["OPN10"] == "O10"


@pytest.mark.parametrize(
    ("instrument", "per_trait", "per_facet"), [(IPIP_NEO_120, 24, 4), (IPIP_NEO_300, 60, 10)]
)
def test_neo_forms_have_their_structure(instrument, per_trait, per_facet):
    assert Counter(item.trait for item in instrument.items) == {t: per_trait for t in TRAITS}
    facets = instrument.facets()
    assert len(facets) == 30
    assert Counter(item.facet for item in instrument.items) == {f: per_facet for f in facets}
    # every facet lies within one domain
    assert all(len({i.trait for i in instrument.items if i.facet == f}) == 1 for f in facets)
    assert instrument.item_ids() == [f"I{n}" for n in range(1, len(instrument.items) + 1)]
    assert instrument.scale.labels[0] == "Very Inaccurate"


def test_neo_120_is_the_short_form_of_neo_300():
    by_text = {item.text: item for item in IPIP_NEO_300.items}
    for item in IPIP_NEO_120.items:
        full = by_text[item.text]
        assert (item.trait, item.keyed, item.facet) == (full.trait, full.keyed, full.facet)


@pytest.mark.shared_data
def test_builtin_files_match_the_five_factor_e_source():
    folder = shared_path("instruments")
    with (folder / "ipip-neo-300.keys.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    texts = {
        n: {
            q["id"]: q["text"]
            for q in json.loads((folder / f"ipip-neo-{n}.questions.json").read_text())["questions"]
        }
        for n in (120, 300)
    }
    for instrument, position, n in (
        (IPIP_NEO_120, "short_position", 120),
        (IPIP_NEO_300, "full_position", 300),
    ):
        expected = {
            f"I{r[position]}": (
                r["item"],
                NEO_TRAIT[r["key"][0]],
                1 if r["sign"][0] == "+" else -1,
                r["facet"],
            )
            for r in rows
            if r[position]
        }
        got = {i.id: (i.text, i.trait, i.keyed, i.facet) for i in instrument.items}
        assert got == expected
        assert {f"I{k}": v for k, v in texts[n].items()} == {i.id: i.text for i in instrument.items}
    labels = json.loads((folder / "ipip-neo-120.questions.json").read_text())["select"]
    assert IPIP_NEO_120.scale.labels == tuple(s["text"] for s in labels)
    licence = Path(__file__).parents[1] / "personagen/psychometrics/data/LICENSE.five-factor-e"
    assert licence.read_text() == (folder / "LICENSE.five-factor-e").read_text()


def test_get_instrument_by_name_path_or_error(tmp_path):
    assert get_instrument("ipip-neo-120") is IPIP_NEO_120
    assert set(BUILTIN) == {"ipip-50", "ipip-neo-120", "ipip-neo-300"}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(SEVEN_POINT))
    assert get_instrument(str(path)).id == "mine"
    assert get_instrument(path).scale.max == 7
    with pytest.raises(PersonagenError, match=r"unknown instrument 'ipip-99'.*ipip-50"):
        get_instrument("ipip-99")


SEVEN_POINT = {
    "id": "mine",
    "name": "A two-trait inventory",
    "scale": {"min": 1, "max": 7, "labels": [f"label {n}" for n in range(1, 8)]},
    "traits": ["extraversion", "neuroticism"],
    "items": [
        {"id": "x1", "text": "I am the life of the party.", "trait": "extraversion", "keyed": "+"},
        {"id": "x2", "text": "I keep in the background.", "trait": "extraversion", "keyed": "-"},
        {"id": "n1", "text": "I worry.", "trait": "Neuroticism", "keyed": 1, "facet": "Anxiety"},
        {"id": 7, "text": "I am relaxed.", "trait": "neuroticism", "keyed": -1},
    ],
}


def test_custom_yaml_file_is_read(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        """
id: mine
scale: {min: 0, max: 4, labels: [never, rarely, sometimes, often, always]}
traits: [openness]
items:
  - {id: o1, text: "I love new ideas.", trait: openness, keyed: "+"}
  - {id: o2, text: "I avoid philosophy.", trait: openness, keyed: "-", facet: Intellect}
"""
    )
    instrument = load_instrument(path)
    assert instrument.traits == ("openness",)
    assert [(i.id, i.keyed, i.facet) for i in instrument.items] == [
        ("o1", 1, None),
        ("o2", -1, "Intellect"),
    ]
    assert instrument.name == "mine" and instrument.scale.points == range(0, 5)


def test_custom_json_file_is_read(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(SEVEN_POINT))
    instrument = load_instrument(path)
    assert [i.id for i in instrument.items] == ["x1", "x2", "n1", "7"]
    assert [i.keyed for i in instrument.items] == [1, -1, 1, -1]
    assert instrument.items[2].trait == "neuroticism"
    assert instrument.facets() == ["Anxiety"]


def _broken(**changes):
    data = json.loads(json.dumps(SEVEN_POINT))
    for key, value in changes.items():
        if re.fullmatch(r"item\d+_\w+", key):
            index, field = key[4:].split("_", 1)
            data["items"][int(index)][field] = value
        elif key.startswith("scale_"):
            data["scale"][key[6:]] = value
        else:
            data[key] = value
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            _broken(item2_trait="extroversion"),
            r"items\[2\] \(id 'n1'\)\.trait: unknown trait 'extroversion'",
        ),
        (_broken(item3_id="x1"), r"items\[3\] \(id 'x1'\): duplicate id \(first at items\[0\]\)"),
        (_broken(item1_keyed="reverse"), r"items\[1\] \(id 'x2'\)\.keyed: must be \+ or -"),
        (_broken(scale_min=7), r"scale: min \(7\) must be below max \(7\)"),
        (_broken(scale_labels=["a", "b"]), r"scale\.labels: 2 labels for a 1-7 scale \(needs 7"),
        (
            _broken(traits=["extraversion", "neuroticism", "openness"]),
            r"traits: 'openness' has no items",
        ),
        (
            _broken(traits=["extraversion", "neuroticism", "honesty"]),
            r"traits: unknown trait 'honesty'",
        ),
        (_broken(item0_text=" "), r"items\[0\] \(id 'x1'\)\.text: empty"),
        (_broken(item0_colour="red"), r"items\[0\] \(id 'x1'\)\.colour: unknown field"),
        (_broken(scale_max="many"), r"scale\.max: input should be a valid integer"),
        (_broken(items=[]), r"items: empty"),
        ({"id": "x", "scale": SEVEN_POINT["scale"]}, r"items: field required"),
    ],
)
def test_invalid_instrument_names_the_problem(data, message):
    with pytest.raises(PersonagenError, match=message) as info:
        instrument_from_dict(data, where="instrument file x.yaml")
    assert str(info.value).startswith("instrument file x.yaml is invalid: ")
    assert "\n" not in str(info.value)


def test_all_problems_are_reported_at_once():
    data = _broken(item2_trait="extroversion", item3_id="x1", scale_labels=["a"])
    with pytest.raises(PersonagenError) as info:
        instrument_from_dict(data)
    assert str(info.value).count("; ") == 2


def test_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(PersonagenError, match="instrument file not found"):
        load_instrument(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("items: [unclosed")
    with pytest.raises(PersonagenError, match="not valid YAML/JSON"):
        load_instrument(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(PersonagenError, match="must be a mapping"):
        load_instrument(listing)
