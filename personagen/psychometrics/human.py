"""Human IPIP-50 item responses from the Open-Source Psychometrics files (BIG5, IPIP-FFM).

Both files hold the 50 Big-Five Factor Markers on 1-5 with 0 for a missed item; BIG5 names them
`E1..O10`, IPIP-FFM `EXT1..OPN10` (tab- or comma-separated). Used to prove the keys and to give
the human trait correlations that a bank's are compared with.

Some derived copies are already keyed: the shared `items-20k.csv` sample has its reverse-keyed
items reflected and its `EST` block keyed toward emotional stability (every raw item correlates
positively with the rest of its block, and the item means are the reflections of the raw file's).
Scoring such a file with the standard keys would silently reverse half the items, so the reader
detects the keying from the data (`keying="auto"`) and returns raw responses either way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from personagen.errors import PersonagenError
from personagen.psychometrics.instruments import IPIP_50, IPIP_FFM_COLUMNS

log = logging.getLogger(__name__)

Keying = Literal["auto", "raw", "prekeyed"]

_SIGNS = np.array([item.keyed for item in IPIP_50.items])
_TRAITS = np.array([item.trait for item in IPIP_50.items])
_PREKEYED_SIGNS = np.where(_TRAITS == "neuroticism", -_SIGNS, _SIGNS)
"""Keys relative to the direction a pre-keyed file stores: EST toward stability, others as usual."""


def read_ipip50_responses(path: str | Path, keying: Keying = "auto") -> np.ndarray:
    """(people, 50) raw responses in `IPIP_50` item order; 0, blanks, out of range -> NaN.

    `keying`: "raw" (as answered), "prekeyed" (reverse items reflected, EST toward stability,
    as in items-20k.csv) or "auto" (decided from the data by `looks_prekeyed`).
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            header = f.readline()
    except FileNotFoundError:
        raise PersonagenError(f"human response file not found: {path}") from None
    sep = "\t" if "\t" in header else ","
    names = [name.strip() for name in header.split(sep)]
    ids = IPIP_50.item_ids()
    if set(ids) <= set(names):
        columns = {item_id: item_id for item_id in ids}
    elif set(IPIP_FFM_COLUMNS) <= set(names):
        columns = dict(IPIP_FFM_COLUMNS)
    else:
        raise PersonagenError(
            f"{path}: no IPIP-50 item columns (expected E1..O10 as in BIG5 or EXT1..OPN10 as in "
            "IPIP-FFM)"
        )
    frame = pd.read_csv(path, sep=sep, usecols=list(columns))
    frame = frame.rename(columns=columns)[ids].apply(pd.to_numeric, errors="coerce")
    values = frame.to_numpy(dtype=np.float64, copy=True)
    scale = IPIP_50.scale
    values[(values < scale.min) | (values > scale.max)] = np.nan
    if keying == "auto":
        keying = "prekeyed" if looks_prekeyed(values) else "raw"
        log.info("%s: responses read as %s", path, keying)
    if keying == "prekeyed":
        values = np.where(_PREKEYED_SIGNS < 0, scale.min + scale.max - values, values)
    return values


def looks_prekeyed(values: np.ndarray) -> bool:
    """True when the reverse-keyed items correlate positively with their trait's other items.

    In raw answers a reverse-keyed item ("I don't talk a lot") goes against the forward items of
    its trait; in a pre-keyed file it goes with them. The median over the 18 reverse items decides
    (on the rows that answered every item).
    """
    complete = values[~np.isnan(values).any(axis=1)]
    if len(complete) < 3:
        return False
    correlations = []
    for j in np.flatnonzero(_SIGNS < 0):
        forward = complete[:, (_TRAITS[j] == _TRAITS) & (_SIGNS > 0)].mean(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            correlations.append(np.corrcoef(complete[:, j], forward)[0, 1])
    return bool(np.nanmedian(correlations) > 0)
