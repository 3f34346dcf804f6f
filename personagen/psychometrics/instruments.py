"""Inventories as data: items with their trait, keying and facet, the response scale, the source.

Built in (package data in `data/`, same format as a custom file, sources in `data/README.md`):

- `ipip-50`: the IPIP 50-item Big-Five Factor Markers (Goldberg 1992; public domain), the
  instrument of the human reference data. Item ids follow the Open-Source Psychometrics BIG5 file
  (`E1..E10 N1..N10 A1..A10 C1..C10 O1..O10`); `IPIP_FFM_COLUMNS` maps the IPIP-FFM file's names
  (`EXT1..OPN10`, where `EST` items are keyed toward neuroticism) onto them.
- `ipip-neo-120` (Johnson 2014) and `ipip-neo-300` (Goldberg 1999), with their 30 facets; item
  ids `I1..I120` / `I1..I300` as in Johnson's public response files.

A custom instrument is a YAML or JSON file::

    id: my-inventory
    name: My inventory            # optional
    source: who wrote the items   # optional
    scale: {min: 1, max: 7, labels: [Strongly disagree, ..., Strongly agree]}  # one label a point
    traits: [extraversion, neuroticism]   # optional, default: all five trait columns
    items:
      - {id: X1, text: "I am the life of the party.", trait: extraversion, keyed: "+"}
      - {id: X2, text: "I keep in the background.", trait: extraversion, keyed: "-", facet: Warmth}

Traits are the five trait columns of the bank (`personagen.TRAITS`), so that any instrument's
scores land in the same columns; every listed trait needs at least one item.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow.csv
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from personagen import TRAITS
from personagen.errors import PersonagenError


@dataclass(frozen=True)
class Item:
    id: str
    text: str
    trait: str
    keyed: int
    """+1 if agreeing means more of the trait, -1 if it means less (reverse-keyed)."""
    facet: str | None = None


@dataclass(frozen=True)
class Scale:
    min: int
    max: int
    labels: tuple[str, ...]

    @property
    def points(self) -> range:
        return range(self.min, self.max + 1)

    @property
    def midpoint(self) -> float:
        return (self.min + self.max) / 2


@dataclass(frozen=True)
class Instrument:
    id: str
    name: str
    items: tuple[Item, ...]
    scale: Scale
    source: str
    traits: tuple[str, ...] = TRAITS
    """The traits it measures (a subset of `TRAITS`); the other trait columns stay empty."""

    def item_ids(self) -> list[str]:
        return [item.id for item in self.items]

    def facets(self) -> list[str]:
        """Facet names in order of first appearance (empty if the items carry none)."""
        return list(dict.fromkeys(item.facet for item in self.items if item.facet))


# ---------------------------------------------------------------------------------------------
# Reading and validating an instrument description


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class _ScaleSpec(_Spec):
    min: int
    max: int
    labels: list[str]


class _ItemSpec(_Spec):
    id: str
    text: str
    trait: str
    keyed: str
    facet: str | None = None


class _InstrumentSpec(_Spec):
    id: str
    name: str = ""
    source: str = ""
    scale: _ScaleSpec
    traits: list[str] = list(TRAITS)
    items: list[_ItemSpec]


_KEYED = {"+": 1, "+1": 1, "1": 1, "-": -1, "-1": -1, "−": -1}


def instrument_from_dict(data: Any, where: str = "instrument") -> Instrument:
    """Validate a parsed instrument description; every problem is named in one error line."""
    if not isinstance(data, Mapping):
        raise PersonagenError(
            f"{where}: must be a mapping with id, scale, items (got {type(data).__name__})"
        )
    try:
        spec = _InstrumentSpec.model_validate(data)
    except ValidationError as exc:
        problems = [_describe_error(err, data) for err in exc.errors()]
        raise PersonagenError(f"{where} is invalid: {'; '.join(problems)}") from None
    problems = _semantic_problems(spec)
    if problems:
        raise PersonagenError(f"{where} is invalid: {'; '.join(problems)}")
    traits = tuple(t.strip().lower() for t in spec.traits)
    return Instrument(
        id=spec.id,
        name=spec.name or spec.id,
        items=tuple(
            Item(
                id=item.id,
                text=item.text.strip(),
                trait=item.trait.strip().lower(),
                keyed=_KEYED[item.keyed.strip()],
                facet=item.facet,
            )
            for item in spec.items
        ),
        scale=Scale(spec.scale.min, spec.scale.max, tuple(spec.scale.labels)),
        source=spec.source,
        traits=traits,
    )


def _item_label(index: int, data: Any) -> str:
    items = data.get("items") if isinstance(data, Mapping) else None
    raw = items[index] if isinstance(items, list) and index < len(items) else None
    item_id = raw.get("id") if isinstance(raw, Mapping) else None
    return f"items[{index}]" + (f" (id {item_id!r})" if item_id is not None else "")


def _describe_error(err: Mapping[str, Any], data: Any) -> str:
    loc = list(err["loc"])
    parts = [str(part) for part in loc]
    if len(loc) >= 2 and loc[0] == "items" and isinstance(loc[1], int):
        parts = [_item_label(loc[1], data), *parts[2:]]
    where = ".".join(parts) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown field"
    if err["type"] == "missing":
        return f"{where}: field required"
    return f"{where}: {err['msg'].lower()} (got {err.get('input')!r})"


def _semantic_problems(spec: _InstrumentSpec) -> list[str]:
    problems = []
    lo, hi = spec.scale.min, spec.scale.max
    if lo >= hi:
        problems.append(f"scale: min ({lo}) must be below max ({hi})")
    elif len(spec.scale.labels) != hi - lo + 1:
        problems.append(
            f"scale.labels: {len(spec.scale.labels)} labels for a {lo}-{hi} scale "
            f"(needs {hi - lo + 1}, one a point)"
        )
    traits = [t.strip().lower() for t in spec.traits]
    if not traits:
        problems.append("traits: empty")
    for trait in traits:
        if trait not in TRAITS:
            problems.append(f"traits: unknown trait {trait!r} (trait columns: {', '.join(TRAITS)})")
    twice = sorted(t for t, n in Counter(traits).items() if n > 1)
    if twice:
        problems.append(f"traits: listed twice: {', '.join(twice)}")
    if not spec.items:
        problems.append("items: empty")
    first_at: dict[str, int] = {}
    for index, item in enumerate(spec.items):
        label = f"items[{index}] (id {item.id!r})"
        if not item.id.strip():
            problems.append(f"items[{index}].id: empty")
        if item.id in first_at:
            problems.append(f"{label}: duplicate id (first at items[{first_at[item.id]}])")
        first_at.setdefault(item.id, index)
        if not item.text.strip():
            problems.append(f"{label}.text: empty")
        if item.trait.strip().lower() not in traits:
            problems.append(
                f"{label}.trait: unknown trait {item.trait!r} "
                f"(this instrument's traits: {', '.join(traits)})"
            )
        if item.keyed.strip() not in _KEYED:
            problems.append(f"{label}.keyed: must be + or - (or 1, -1), got {item.keyed!r}")
    used = {item.trait.strip().lower() for item in spec.items}
    for trait in traits:
        if trait in TRAITS and trait not in used:
            problems.append(f"traits: {trait!r} has no items")
    return problems


def load_instrument(path: str | Path) -> Instrument:
    """Read a custom instrument from a YAML or JSON file (JSON is read as YAML)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PersonagenError(f"instrument file not found: {path}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PersonagenError(f"instrument file {path} is not valid YAML/JSON: {exc}") from None
    return instrument_from_dict(data, where=f"instrument file {path}")


# ---------------------------------------------------------------------------------------------
# The SAPA Personality Inventory


_SPI_TRAITS = {
    "Open": "openness",
    "Consc": "conscientiousness",
    "Extra": "extraversion",
    "Agree": "agreeableness",
    "Neuro": "neuroticism",
}
SPI_SCALE = Scale(
    1,
    6,
    (
        "Very inaccurate",
        "Moderately inaccurate",
        "Slightly inaccurate",
        "Slightly accurate",
        "Moderately accurate",
        "Very accurate",
    ),
)


def spi_instrument(path: str | Path) -> Instrument:
    """The SAPA SPI Big Five scales as an `Instrument`, from the `spi.keys.json` (`-q_x` =
    reversed) and `spi.dictionary.csv` (the item texts) of the folder of `path` (the folder, the
    `spi.csv` data in it, or either file). Not shipped: some SPI items come from the EPQ, whose
    texts are not in the public domain as IPIP's are, so the texts are read from the user's copy
    of the SAPA data (the R package psychTools)."""
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    keys_path, dictionary_path = folder / "spi.keys.json", folder / "spi.dictionary.csv"
    if not keys_path.exists():
        raise PersonagenError(
            f"spi:{path} needs spi.keys.json in {folder} (the SAPA data of psychTools)"
        )
    try:
        keys = json.loads(Path(keys_path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PersonagenError(f"cannot read the SPI keys {keys_path}: {exc}") from None
    missing = [k for k in _SPI_TRAITS if k not in keys]
    if missing:
        raise PersonagenError(f"SPI keys {keys_path} lack the Big Five scales {missing}")
    texts = _spi_texts(dictionary_path)
    items = []
    for key, trait in _SPI_TRAITS.items():
        for entry in keys[key]:
            item_id = entry.lstrip("-")
            keyed = -1 if entry.startswith("-") else 1
            items.append(Item(id=item_id, text=texts.get(item_id, ""), trait=trait, keyed=keyed))
    return Instrument(
        id="sapa-spi-135-big5",
        name="SAPA Personality Inventory, Big Five scales (70 of 135 items)",
        items=tuple(items),
        scale=SPI_SCALE,
        source="Condon (2018), SAPA Personality Inventory; R package psychTools (spi data set)",
    )


def _spi_texts(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.exists():
        return {}
    table = pyarrow.csv.read_csv(path)
    if "item_id" not in table.column_names or "item" not in table.column_names:
        return {}
    return dict(
        zip(table.column("item_id").to_pylist(), table.column("item").to_pylist(), strict=True)
    )


# ---------------------------------------------------------------------------------------------
# Built-in instruments


def _builtin(name: str) -> Instrument:
    text = (
        resources.files("personagen.psychometrics")
        .joinpath("data", f"{name}.json")
        .read_text(encoding="utf-8")
    )
    return instrument_from_dict(json.loads(text), where=f"built-in instrument {name}")


BUILTIN: dict[str, Instrument] = {
    name: _builtin(name) for name in ("ipip-50", "ipip-neo-120", "ipip-neo-300")
}
IPIP_50 = BUILTIN["ipip-50"]
IPIP_NEO_120 = BUILTIN["ipip-neo-120"]
IPIP_NEO_300 = BUILTIN["ipip-neo-300"]
LIKERT_5 = IPIP_50.scale

IPIP_FFM_COLUMNS = {
    f"{prefix}{n}": f"{letter}{n}"
    for prefix, letter in (("EXT", "E"), ("EST", "N"), ("AGR", "A"), ("CSN", "C"), ("OPN", "O"))
    for n in range(1, 11)
}
"""IPIP-FFM column name -> IPIP-50 item id (same items, same order; EST is keyed toward N)."""


def get_instrument(name_or_path: str | Path) -> Instrument:
    """A built-in instrument by id, `spi:PATH` (the SAPA SPI Big Five scales, from the SAPA data
    at PATH), or a custom one from a YAML/JSON file."""
    if str(name_or_path) in BUILTIN:
        return BUILTIN[str(name_or_path)]
    if str(name_or_path).startswith("spi:"):
        return spi_instrument(str(name_or_path)[4:])
    path = Path(name_or_path)
    if path.is_file():
        return load_instrument(path)
    raise PersonagenError(
        f"unknown instrument {str(name_or_path)!r}: neither built in ({', '.join(BUILTIN)}), "
        "spi:PATH, nor an existing YAML/JSON file"
    )
