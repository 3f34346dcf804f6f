"""Item responses -> trait (and facet) scores on the 1-5 scale of the IPIP Likert items.

Responses are arrays of shape (n, items) in the instrument's item order, on the instrument's own
scale, NaN where an item has no answer. Stored responses come as per-persona lists of item ids and
values in any (shuffled) order; `align_responses` puts them into that shape by id.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from personagen import TRAITS
from personagen.errors import PersonagenError
from personagen.psychometrics.instruments import Instrument


def keyed_responses(responses: np.ndarray, instrument: Instrument) -> np.ndarray:
    """Reverse-keyed items reflected on the scale (x -> min + max - x); NaN stays NaN."""
    responses = np.asarray(responses, dtype=np.float64)
    signs = np.array([item.keyed for item in instrument.items])
    reflected = instrument.scale.min + instrument.scale.max - responses
    return np.where(signs < 0, reflected, responses)


def to_five_point(values: np.ndarray, instrument: Instrument) -> np.ndarray:
    """Linear map of the instrument's scale onto 1-5, so trait columns are comparable."""
    lo, hi = instrument.scale.min, instrument.scale.max
    return 1.0 + (np.asarray(values, dtype=np.float64) - lo) * 4.0 / (hi - lo)


def _group_means(keyed: np.ndarray, groups: np.ndarray, names: Sequence[str], min_items: int):
    """Per-row mean of the columns of each group; NaN where fewer than `min_items` answered."""
    out = np.full((keyed.shape[0], len(names)), np.nan)
    for j, name in enumerate(names):
        cols = keyed[:, groups == name]
        if cols.shape[1] == 0:
            continue
        answered = np.sum(~np.isnan(cols), axis=1)
        sums = np.nansum(cols, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, j] = np.where(answered >= max(min_items, 1), sums / answered, np.nan)
    return out


def trait_scores(responses: np.ndarray, instrument: Instrument, min_items: int = 1) -> np.ndarray:
    """(n, items) responses (NaN = missing) -> (n, 5) trait means in `TRAITS` order, on 1-5.

    A trait answered by fewer than `min_items` of its items is NaN rather than a guess; so is a
    trait the instrument does not measure.
    """
    keyed = to_five_point(keyed_responses(responses, instrument), instrument)
    traits = np.array([item.trait for item in instrument.items])
    return _group_means(keyed, traits, TRAITS, min_items)


def facet_scores(
    responses: np.ndarray, instrument: Instrument, min_items: int = 1
) -> tuple[list[str], np.ndarray]:
    """(n, items) responses -> (facet names, (n, facets) means on 1-5); no facets: empty."""
    names = instrument.facets()
    keyed = to_five_point(keyed_responses(responses, instrument), instrument)
    facets = np.array([item.facet or "" for item in instrument.items])
    return names, _group_means(keyed, facets, names, min_items)


def items_per_trait(instrument: Instrument) -> dict[str, int]:
    return {t: sum(item.trait == t for item in instrument.items) for t in instrument.traits}


def check_min_items(instrument: Instrument, min_items: int) -> None:
    """Fail early when a trait can never reach the minimum (rather than flag every persona), or
    when items have no text to ask (an SPI instrument read without its dictionary)."""
    untexted = [item.id for item in instrument.items if not item.text.strip()]
    if untexted:
        raise PersonagenError(
            f"instrument {instrument.id!r} has {len(untexted)} item(s) without text "
            f"({', '.join(untexted[:3])}...): give its item texts (for SPI: spi.dictionary.csv)"
        )
    short = {t: n for t, n in items_per_trait(instrument).items() if n < min_items}
    if short:
        detail = ", ".join(f"{t} has {n}" for t, n in short.items())
        raise PersonagenError(
            f"score.min_items_per_trait={min_items} exceeds the items of instrument "
            f"{instrument.id!r} ({detail}); lower it"
        )


def align_responses(
    item_ids: pa.Array | pa.ChunkedArray | Sequence[Sequence[str] | None],
    item_responses: pa.Array | pa.ChunkedArray | Sequence[Sequence[float | None] | None],
    instrument: Instrument,
) -> np.ndarray:
    """Per-row (ids, values) lists in any order -> (n, items) in the instrument's item order.

    Items a row lacks (and null values, and null rows) are NaN. An id the instrument does not
    have, a repeated id, or lists of different lengths are errors naming the row.
    """
    ids = _as_list_array(item_ids, pa.list_(pa.string()))
    values = _as_list_array(item_responses, pa.list_(pa.float64()))
    if len(ids) != len(values):
        raise PersonagenError(f"{len(ids)} rows of item ids but {len(values)} of responses")
    id_lengths = pc.fill_null(pc.list_value_length(ids), 0).to_numpy(zero_copy_only=False)
    value_lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(id_lengths != value_lengths)
    if bad.size:
        row = int(bad[0])
        raise PersonagenError(
            f"row {row}: {id_lengths[row]} item ids but {value_lengths[row]} responses"
        )
    flat_ids = pc.list_flatten(ids)
    rows = pc.list_parent_indices(ids).to_numpy(zero_copy_only=False)
    cols = pc.index_in(flat_ids, value_set=pa.array(instrument.item_ids(), pa.string()))
    unknown = np.flatnonzero(pc.is_null(cols).to_numpy(zero_copy_only=False))
    if unknown.size:
        first = int(unknown[0])
        raise PersonagenError(
            f"row {rows[first]}: item {flat_ids[first].as_py()!r} is not in instrument "
            f"{instrument.id!r}"
        )
    cols = cols.to_numpy(zero_copy_only=False)
    k = len(instrument.items)
    cells = rows.astype(np.int64) * k + cols
    unique, counts = np.unique(cells, return_counts=True)
    if np.any(counts > 1):
        cell = int(unique[np.argmax(counts > 1)])
        raise PersonagenError(f"row {cell // k}: item {instrument.items[cell % k].id!r} repeated")
    out = np.full((len(ids), k), np.nan)
    flat_values = pc.list_flatten(values).to_numpy(zero_copy_only=False)
    out[rows, cols] = np.asarray(flat_values, dtype=np.float64)
    return out


def _as_list_array(data, type_: pa.DataType) -> pa.Array:
    if isinstance(data, pa.ChunkedArray):
        data = data.combine_chunks()
    if not isinstance(data, pa.Array):
        data = pa.array(list(data), type_)
    return data.cast(type_)
