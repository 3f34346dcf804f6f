"""The country -> UN M49 region table: complete, a partition at each level, clear errors."""

from __future__ import annotations

import importlib.resources

import pyarrow.csv as pacsv
import pytest
from conftest import shared_path

from personagen.errors import PersonagenError
from personagen.io import regions

NOT_COUNTRIES = {"A1", "A2", "AP", "EU", "(NU", "NONE"}
"""Codes in the survey files that are not countries (MaxMind proxies/continents, nulls)."""


def _iso3166_codes() -> set[str]:
    """An independent list of ISO 3166-1 alpha-2 codes: the IANA tz database's iso3166.tab."""
    text = importlib.resources.files("tzdata").joinpath("zoneinfo/iso3166.tab").read_text()
    return {line.split("\t")[0] for line in text.splitlines() if line and line[0] != "#"}


def test_every_iso_country_has_a_region_except_antarctica():
    iso = _iso3166_codes()
    assert len(iso) >= 245
    assert iso - regions.COUNTRIES == {"AQ"}
    for code in iso - {"AQ"}:
        assert regions.region_of(code, "region") is not None
        assert regions.region_of(code, "sub-region") is not None


def test_each_level_partitions_the_countries():
    for level in ("region", "sub-region"):
        groups = [r for r in regions.REGIONS.values() if r.level == level]
        seen: set[str] = set()
        for group in groups:
            assert not (seen & group.countries), f"{group.slug} overlaps another {level}"
            seen |= group.countries
        assert seen == regions.COUNTRIES
    for child in regions.REGIONS.values():
        if child.level != "region":
            parents = [
                r
                for r in regions.REGIONS.values()
                if r.level == "region" and child.countries <= r.countries
            ]
            assert len(parents) == 1, child.slug


def test_named_groups_hold_the_expected_countries():
    assert regions.resolve_group("east-asia").countries >= {
        "CN",
        "JP",
        "KR",
        "TW",
        "HK",
        "MO",
        "MN",
    }
    assert regions.resolve_group("north-america").countries == {"US", "CA", "BM", "GL", "PM"}
    assert {"DE", "FR", "NL"} <= regions.resolve_group("western-europe").countries
    assert {"IN", "PK", "BD"} <= regions.resolve_group("south-asia").countries
    assert {"MX", "BR", "AR", "JM"} <= regions.resolve_group("latin-america").countries
    assert (
        regions.resolve_group("europe").countries
        >= regions.resolve_group("western-europe").countries
    )
    assert regions.region_of("JP") == "east-asia"
    assert regions.region_of("JP", "region") == "asia"
    assert regions.region_of("BR", "intermediate-region") == "south-america"
    assert regions.region_of("GB", "intermediate-region") is None


@pytest.mark.parametrize(
    "alias, slug",
    [("Eastern Asia", "east-asia"), ("northern_america", "north-america"), ("EUROPE", "europe")],
)
def test_aliases_and_spelling_are_forgiven(alias, slug):
    assert regions.resolve_group(alias).slug == slug


def test_unknown_group_and_country_are_clear_errors():
    with pytest.raises(PersonagenError, match=r"unknown group 'atlantis'.*east-asia"):
        regions.resolve_group("atlantis")
    with pytest.raises(PersonagenError, match=r"unknown country code.*XY"):
        regions.parse_countries("JP,XY")
    with pytest.raises(PersonagenError, match="at least one"):
        regions.parse_countries(" , ")
    assert regions.parse_countries("jp, KR,JP") == ["JP", "KR"]
    assert regions.normalize_country(" us ") == "US"
    assert regions.normalize_country("EU") is None
    assert regions.normalize_country(None) is None


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "parts, delimiter",
    [
        (("ipip", "big5-2012", "data.csv"), "\t"),
        (("ipip", "ipip-ffm", "data-final-first1000.csv"), "\t"),
    ],
)
def test_every_code_in_the_survey_files_is_known(parts, delimiter):
    table = pacsv.read_csv(
        shared_path(*parts),
        parse_options=pacsv.ParseOptions(delimiter=delimiter),
        convert_options=pacsv.ConvertOptions(
            include_columns=["country"], column_types={"country": "string"}
        ),
    )
    raw = table.column("country").drop_null().to_pylist()
    codes = {c.strip().upper() for c in raw if c.strip()}
    unknown = codes - regions.COUNTRIES - NOT_COUNTRIES
    assert not unknown
    assert all(regions.region_of(c) for c in codes & regions.COUNTRIES)
