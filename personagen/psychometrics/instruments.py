"""Inventories as data: items with their trait and keying, the response scale, the source.

Built in: the IPIP 50-item Big-Five Factor Markers (Goldberg 1992; ipip.ori.org, public domain),
the instrument of the human reference data. Item ids follow the Open-Source Psychometrics BIG5
file (`E1..E10 N1..N10 A1..A10 C1..C10 O1..O10`); `IPIP_FFM_COLUMNS` maps the IPIP-FFM file's
names (`EXT1..OPN10`, where `EST` items are keyed toward neuroticism) onto them.
"""

from __future__ import annotations

from dataclasses import dataclass

from personagen import TRAITS
from personagen.errors import PersonagenError


@dataclass(frozen=True)
class Item:
    id: str
    text: str
    trait: str
    keyed: int
    """+1 if agreeing means more of the trait, -1 if it means less (reverse-keyed)."""


@dataclass(frozen=True)
class Scale:
    min: int
    max: int
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Instrument:
    id: str
    name: str
    items: tuple[Item, ...]
    scale: Scale
    source: str

    def item_ids(self) -> list[str]:
        return [item.id for item in self.items]


LIKERT_5 = Scale(
    1,
    5,
    ("Disagree", "Slightly disagree", "Neutral", "Slightly agree", "Agree"),
)

_TRAIT_OF_LETTER = {t[0].upper(): t for t in TRAITS}

_IPIP_50_TEXTS = {
    "E": [
        "I am the life of the party.",
        "I don't talk a lot.",
        "I feel comfortable around people.",
        "I keep in the background.",
        "I start conversations.",
        "I have little to say.",
        "I talk to a lot of different people at parties.",
        "I don't like to draw attention to myself.",
        "I don't mind being the center of attention.",
        "I am quiet around strangers.",
    ],
    "N": [
        "I get stressed out easily.",
        "I am relaxed most of the time.",
        "I worry about things.",
        "I seldom feel blue.",
        "I am easily disturbed.",
        "I get upset easily.",
        "I change my mood a lot.",
        "I have frequent mood swings.",
        "I get irritated easily.",
        "I often feel blue.",
    ],
    "A": [
        "I feel little concern for others.",
        "I am interested in people.",
        "I insult people.",
        "I sympathize with others' feelings.",
        "I am not interested in other people's problems.",
        "I have a soft heart.",
        "I am not really interested in others.",
        "I take time out for others.",
        "I feel others' emotions.",
        "I make people feel at ease.",
    ],
    "C": [
        "I am always prepared.",
        "I leave my belongings around.",
        "I pay attention to details.",
        "I make a mess of things.",
        "I get chores done right away.",
        "I often forget to put things back in their proper place.",
        "I like order.",
        "I shirk my duties.",
        "I follow a schedule.",
        "I am exacting in my work.",
    ],
    "O": [
        "I have a rich vocabulary.",
        "I have difficulty understanding abstract ideas.",
        "I have a vivid imagination.",
        "I am not interested in abstract ideas.",
        "I have excellent ideas.",
        "I do not have a good imagination.",
        "I am quick to understand things.",
        "I use difficult words.",
        "I spend time reflecting on things.",
        "I am full of ideas.",
    ],
}
_IPIP_50_REVERSED = {
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
}

IPIP_50 = Instrument(
    id="ipip-50",
    name="IPIP Big-Five Factor Markers, 50 items",
    items=tuple(
        Item(
            id=f"{letter}{number}",
            text=text,
            trait=_TRAIT_OF_LETTER[letter],
            keyed=-1 if f"{letter}{number}" in _IPIP_50_REVERSED else 1,
        )
        for letter, texts in _IPIP_50_TEXTS.items()
        for number, text in enumerate(texts, start=1)
    ),
    scale=LIKERT_5,
    source="Goldberg (1992), IPIP Big-Five Factor Markers, ipip.ori.org (public domain)",
)

IPIP_FFM_COLUMNS = {
    f"{prefix}{n}": f"{letter}{n}"
    for prefix, letter in (("EXT", "E"), ("EST", "N"), ("AGR", "A"), ("CSN", "C"), ("OPN", "O"))
    for n in range(1, 11)
}
"""IPIP-FFM column name -> IPIP-50 item id (same items, same order; EST is keyed toward N)."""

BUILTIN = {IPIP_50.id: IPIP_50}


def get_instrument(name: str) -> Instrument:
    try:
        return BUILTIN[name]
    except KeyError:
        raise PersonagenError(
            f"unknown instrument {name!r}; built in: {', '.join(BUILTIN)}"
        ) from None
