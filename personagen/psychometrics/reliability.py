"""Reliability of a bank's inventory answers: internal consistency, item quality, trait structure.

If personas answer like people, each trait's items hang together (Cronbach's alpha of human IPIP
data is about 0.8), no item goes against its trait after keying (corrected item-total r > 0), and
the traits correlate with each other as they do in people. A bank that fails these has trait
scores that mean little, however well its distribution is aligned later.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from personagen import TRAITS
from personagen.errors import PersonagenError
from personagen.psychometrics.human import Keying, read_ipip50_responses
from personagen.psychometrics.instruments import BUILTIN, IPIP_50, Instrument
from personagen.psychometrics.scoring import align_responses, keyed_responses, trait_scores

_EPS = 1e-12
"""Variances below this (relative to the items') count as zero: rounding, not spread."""


def _covariance(items: np.ndarray) -> np.ndarray | None:
    """Item covariance matrix over the rows answering every item (None with fewer than 2)."""
    x = np.asarray(items, dtype=np.float64)
    x = x[~np.isnan(x).any(axis=1)]
    if x.shape[0] < 2:
        return None
    return np.atleast_2d(np.cov(x, rowvar=False))


def _alpha_from_cov(k: int, item_var: np.ndarray, total_var: np.ndarray) -> np.ndarray:
    """k/(k-1) * (1 - sum of item variances / variance of the total); NaN where undefined."""
    item_var, total_var = np.asarray(item_var, float), np.asarray(total_var, float)
    if k < 2:
        return np.full(total_var.shape, np.nan)
    defined = total_var > _EPS * np.maximum(item_var, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined, k / (k - 1) * (1 - item_var / total_var), np.nan)


def item_analysis(items: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(n, k) keyed answers to the k items of one trait, on the rows answering all items ->
    (Cronbach's alpha, corrected item-total r per item, alpha if each item is deleted).

    All three come from one item covariance matrix C: alpha = k/(k-1) * (1 - tr C / sum C); an
    item's covariance with the rest is its row sum minus its variance. NaN where undefined
    (fewer than 2 items or rows, a constant total, a constant item).
    """
    k = np.shape(items)[1]
    cov = _covariance(items)
    if cov is None:
        return math.nan, np.full(k, np.nan), np.full(k, np.nan)
    var = np.diag(cov)
    row_sums = cov.sum(axis=1)
    rest_var = cov.sum() - 2 * row_sums + var
    with np.errstate(invalid="ignore", divide="ignore"):
        item_total = (row_sums - var) / np.sqrt(var * rest_var)
    floor = _EPS * max(float(np.trace(cov)), 1.0)
    item_total = np.where((var > floor) & (rest_var > floor), item_total, np.nan)
    alpha = float(_alpha_from_cov(k, np.trace(cov), cov.sum()))
    return alpha, item_total, _alpha_from_cov(k - 1, np.trace(cov) - var, rest_var)


def cronbach_alpha(items: np.ndarray) -> float:
    """Alpha of one trait's (n, k) keyed answers (rows answering all items); see `item_analysis`."""
    return item_analysis(items)[0]


def corrected_item_total(items: np.ndarray) -> np.ndarray:
    """Each item's correlation with the sum of the trait's other items; see `item_analysis`."""
    return item_analysis(items)[1]


def alpha_if_deleted(items: np.ndarray) -> np.ndarray:
    """Alpha without each item in turn (an item whose removal raises alpha is a weak one)."""
    return item_analysis(items)[2]


def trait_correlations(scores: np.ndarray) -> np.ndarray:
    """(n, traits) scores -> Pearson correlation matrix, each pair on the rows having both."""
    return pd.DataFrame(np.asarray(scores, dtype=np.float64)).corr().to_numpy()


@dataclass(frozen=True)
class CorrelationReference:
    """Human trait correlations (in `TRAITS` order) that a bank's are compared with."""

    matrix: np.ndarray
    source: str


def human_correlations(path: str | Path, keying: Keying = "auto") -> CorrelationReference:
    """Trait correlations of human IPIP-50 respondents (a BIG5 or IPIP-FFM response file)."""
    scores = trait_scores(read_ipip50_responses(path, keying), IPIP_50)
    n = int(np.sum(~np.isnan(scores).any(axis=1)))
    path = Path(path)
    return CorrelationReference(
        trait_correlations(scores), f"{path.parent.name}/{path.name} ({n:,} people)"
    )


def instrument_reliability(responses: np.ndarray, instrument: Instrument) -> dict[str, Any]:
    """Per trait: complete rows, items, alpha, corrected item-total r and alpha if deleted."""
    keyed = keyed_responses(responses, instrument)
    ids = np.array(instrument.item_ids())
    traits = np.array([item.trait for item in instrument.items])
    out: dict[str, Any] = {}
    for trait in instrument.traits:
        cols = traits == trait
        block = keyed[:, cols]
        names = ids[cols].tolist()
        alpha, item_total, dropped = item_analysis(block)
        out[trait] = {
            "n": int((~np.isnan(block).any(axis=1)).sum()),
            "items": len(names),
            "alpha": alpha,
            "item_total": dict(zip(names, item_total.tolist(), strict=True)),
            "alpha_if_deleted": dict(zip(names, dropped.tolist(), strict=True)),
        }
    return out


def scores_reliability(
    scores: pa.Table,
    instrument: Instrument | None = None,
    human: CorrelationReference | None = None,
) -> dict[str, Any]:
    """The reliability of a table of scores (the bank's `scores` group) as plain data (NaN where
    undefined).

    `instrument`: the one the scores name (their `instrument` column) when None; needed for a
    custom one. `human`: the reference trait correlations, or None to report them as unavailable.
    """
    instrument = instrument or _scored_instrument(scores.column("instrument").to_pylist())
    scores = scores.filter(pc.equal(scores.column("instrument"), instrument.id))
    if scores.num_rows == 0:
        raise PersonagenError(f"no personas scored with {instrument.id!r}")
    responses = align_responses(
        scores.column("item_ids"), scores.column("item_responses"), instrument
    )
    flags = [f or [] for f in scores.column("score_flags").to_pylist()]
    flagged = np.array([bool(f) for f in flags])
    traits = instrument_reliability(responses, instrument)
    for trait, unflagged in instrument_reliability(responses[~flagged], instrument).items():
        traits[trait]["alpha_unflagged"] = unflagged["alpha"]
    bank_corr = trait_correlations(np.column_stack([scores.column(t).to_numpy() for t in TRAITS]))
    return {
        "instrument": instrument.id,
        "personas": scores.num_rows,
        "flagged": int(flagged.sum()),
        "flagged_fraction": float(flagged.mean()),
        "flag_counts": dict(Counter(flag for row in flags for flag in row).most_common()),
        "traits": traits,
        "correlations": {
            "traits": list(TRAITS),
            "bank": bank_corr.tolist(),
            "human": None if human is None else human.matrix.tolist(),
            "human_source": "unavailable" if human is None else human.source,
            "mean_abs_difference": None if human is None else _mean_abs_offdiag(bank_corr, human),
        },
    }


def _scored_instrument(ids: list[str | None]) -> Instrument:
    present = sorted({i for i in ids if i})
    if len(present) != 1:
        raise PersonagenError(
            f"the personas were scored with {len(present)} instruments "
            f"({', '.join(present) or 'none'}); choose one with --instrument"
        )
    if present[0] not in BUILTIN:
        raise PersonagenError(
            f"the personas were scored with the custom instrument {present[0]!r}; pass its file "
            "with --instrument"
        )
    return BUILTIN[present[0]]


def _mean_abs_offdiag(bank_corr: np.ndarray, human: CorrelationReference) -> float:
    upper = np.triu_indices(len(TRAITS), k=1)
    return float(np.nanmean(np.abs(bank_corr[upper] - human.matrix[upper])))


def to_json(value: Any) -> Any:
    """NaN -> None, recursively, so the report is valid JSON."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
