"""Country -> region table (UN M49 geoscheme), so a reference can be narrowed to a group.

Every ISO 3166-1 alpha-2 code is assigned to its M49 region, sub-region and, where M49 has one,
intermediate region (Statistics Division of the UN, "Standard country or area codes for
statistical use", unstats.un.org/unsd/methodology/m49). Taiwan (TW), which M49 does not list
separately, is placed in Eastern Asia, as in common practice. Antarctica (AQ) has no region.
Codes that are not countries (the survey files' `A1`, `A2`, `AP`, `EU`, `NONE`, `(nu`) map to
nothing. Groups are named by short slugs (`east-asia`, `north-america`, `europe`, ...); the
longer M49 wordings (`eastern-asia`, `northern-america`) are accepted as aliases.
"""

from __future__ import annotations

from dataclasses import dataclass

from personagen.errors import PersonagenError


@dataclass(frozen=True)
class Region:
    slug: str
    name: str
    m49: str
    level: str
    """`region`, `sub-region` or `intermediate-region` (the M49 hierarchy)."""
    countries: frozenset[str]


# (slug, M49 name, M49 code) of each level; the leaves hold their countries.
_REGIONS = {
    ("africa", "Africa", "002"): {
        ("northern-africa", "Northern Africa", "015"): "DZ EG LY MA SD TN EH",
        ("sub-saharan-africa", "Sub-Saharan Africa", "202"): {
            ("eastern-africa", "Eastern Africa", "014"): (
                "IO BI KM DJ ER ET TF KE MG MW MU YT MZ RE RW SC SO SS UG TZ ZM ZW"
            ),
            ("middle-africa", "Middle Africa", "017"): "AO CM CF TD CG CD GQ GA ST",
            ("southern-africa", "Southern Africa", "018"): "BW SZ LS NA ZA",
            ("western-africa", "Western Africa", "011"): (
                "BJ BF CV CI GM GH GN GW LR ML MR NE NG SH SN SL TG"
            ),
        },
    },
    ("americas", "Americas", "019"): {
        ("latin-america", "Latin America and the Caribbean", "419"): {
            ("caribbean", "Caribbean", "029"): (
                "AI AG AW BS BB BQ VG KY CU CW DM DO GD GP HT JM MQ MS PR BL KN LC MF VC SX TT "
                "TC VI AN"
            ),
            ("central-america", "Central America", "013"): "BZ CR SV GT HN MX NI PA",
            ("south-america", "South America", "005"): (
                "AR BO BV BR CL CO EC FK GF GY PY PE GS SR UY VE"
            ),
        },
        ("north-america", "Northern America", "021"): "BM CA GL PM US",
    },
    ("asia", "Asia", "142"): {
        ("central-asia", "Central Asia", "143"): "KZ KG TJ TM UZ",
        ("east-asia", "Eastern Asia", "030"): "CN HK MO KP JP MN KR TW",
        ("south-east-asia", "South-eastern Asia", "035"): "BN KH ID LA MY MM PH SG TH TL VN",
        ("south-asia", "Southern Asia", "034"): "AF BD BT IN IR MV NP PK LK",
        ("west-asia", "Western Asia", "145"): (
            "AM AZ BH CY GE IQ IL JO KW LB OM QA SA PS SY TR AE YE"
        ),
    },
    ("europe", "Europe", "150"): {
        ("eastern-europe", "Eastern Europe", "151"): "BY BG CZ HU PL MD RO RU SK UA",
        ("northern-europe", "Northern Europe", "154"): {
            ("channel-islands", "Channel Islands", "830"): "GG JE",
            ("northern-europe-other", "Northern Europe (outside the Channel Islands)", "154"): (
                "AX DK EE FO FI IS IE IM LV LT NO SJ SE GB"
            ),
        },
        ("southern-europe", "Southern Europe", "039"): (
            "AL AD BA HR GI GR VA IT MT ME MK PT SM RS SI ES XK"
        ),
        ("western-europe", "Western Europe", "155"): "AT BE FR DE LI LU MC NL CH",
    },
    ("oceania", "Oceania", "009"): {
        ("australia-new-zealand", "Australia and New Zealand", "053"): "AU CX CC HM NZ NF",
        ("melanesia", "Melanesia", "054"): "FJ NC PG SB VU",
        ("micronesia", "Micronesia", "057"): "GU KI MH FM NR MP PW UM",
        ("polynesia", "Polynesia", "061"): "AS CK PF NU PN WS TK TO TV WF",
    },
}
_LEVELS = ("region", "sub-region", "intermediate-region")
_PSEUDO_LEAVES = {"northern-europe-other"}
"""Leaves that exist only to hold the countries of a sub-region outside its one intermediate
region (M49 gives Northern Europe the Channel Islands and nothing else); not offered as groups."""

ALIASES = {
    "eastern-asia": "east-asia",
    "south-eastern-asia": "south-east-asia",
    "southeast-asia": "south-east-asia",
    "southern-asia": "south-asia",
    "western-asia": "west-asia",
    "northern-america": "north-america",
    "latin-america-and-the-caribbean": "latin-america",
    "australia-and-new-zealand": "australia-new-zealand",
}

GLOBAL = "global"
"""The group of everyone (no filter); rows without a usable country belong only to it."""


def _codes(node: dict | str) -> frozenset[str]:
    if isinstance(node, str):
        return frozenset(node.split())
    return frozenset().union(*(_codes(child) for child in node.values()))


def _build() -> tuple[dict[str, Region], dict[str, tuple[str, ...]]]:
    """Walk the tree top-down: regions in hierarchy order, and each country's chain of slugs."""
    regions: dict[str, Region] = {}
    chain_of: dict[str, tuple[str, ...]] = {}

    def walk(node: dict | str, chain: tuple[str, ...]) -> None:
        if isinstance(node, str):
            for code in node.split():
                chain_of[code] = chain
            return
        for (slug, name, m49), child in node.items():
            if slug in _PSEUDO_LEAVES:
                walk(child, chain)
                continue
            regions[slug] = Region(slug, name, m49, _LEVELS[len(chain)], _codes(child))
            walk(child, (*chain, slug))

    walk(_REGIONS, ())
    return regions, chain_of


REGIONS, _CHAIN = _build()
"""slug -> Region, for every M49 region, sub-region and intermediate region."""

COUNTRIES: frozenset[str] = frozenset(_CHAIN)
"""Every code the table knows (ISO 3166-1 alpha-2, plus the legacy AN and user-assigned XK)."""


def normalize_country(code: object) -> str | None:
    """An ISO-2 code in upper case, or None for missing or non-country codes (A1, EU, NONE)."""
    if not isinstance(code, str):
        return None
    code = code.strip().upper()
    return code if code in COUNTRIES else None


def region_of(code: str | None, level: str = "sub-region") -> str | None:
    """The slug of the country's region at `level` (None if unknown or none at that level)."""
    chain = _CHAIN.get(code or "", ())
    index = _LEVELS.index(level)
    return chain[index] if index < len(chain) else None


def canonical(group: str) -> str:
    """The slug of a group name (case, spaces and underscores forgiven; aliases resolved)."""
    slug = group.strip().lower().replace("_", "-").replace(" ", "-")
    return ALIASES.get(slug, slug)


def resolve_group(group: str) -> Region:
    """The region named `group`, or a `PersonagenError` that lists the known names."""
    slug = canonical(group)
    if slug in REGIONS:
        return REGIONS[slug]
    raise PersonagenError(
        f"unknown group {group!r}; known groups: {GLOBAL}, {', '.join(sorted(REGIONS))} "
        "(see `personagen reference regions`)"
    )


def parse_countries(codes: list[str] | str) -> list[str]:
    """Explicit country codes (`JP,KR` or a list) checked against the table; order kept."""
    items = codes.split(",") if isinstance(codes, str) else codes
    wanted = [c.strip().upper() for c in items if c and c.strip()]
    if not wanted:
        raise PersonagenError("--countries needs at least one ISO-2 country code, e.g. JP,KR")
    unknown = [c for c in wanted if c not in COUNTRIES]
    if unknown:
        raise PersonagenError(
            f"unknown country code(s) {', '.join(unknown)}: use ISO 3166-1 alpha-2 codes (JP, KR)"
        )
    return list(dict.fromkeys(wanted))


def region_rows() -> list[dict[str, object]]:
    """The table as rows (level, slug, M49 name and code, countries), in hierarchy order."""
    rows = []
    for region in REGIONS.values():
        rows.append(
            {
                "level": region.level,
                "group": region.slug,
                "name": region.name,
                "m49": region.m49,
                "countries": sorted(region.countries),
            }
        )
    return rows
