"""Human reference distributions: real survey files -> one clean table of Big Five trait scores.

A reference is named by a spec string:

- `big5:PATH`      Open-Source Psychometrics "BIG5" (c. 2012): tab-separated `E1..O10`, 0 = missed
- `ipip-ffm:PATH`  Open-Source Psychometrics IPIP-FFM `data-final.csv` (`EXT1..OPN10`, 0 = missing),
                   read in streamed column batches: the full 1,015,341-row file needs little memory
- `spi:PATH`       SAPA Personality Inventory `spi.csv` with `spi.keys.json` beside it (1-6 scale)
- `PATH`           a Parquet or CSV table that already has the five trait columns on 1-5
- `builtin:global`, `builtin:<group>`  the summaries shipped in the package (no data needed)

Item files are scored with the package's instruments and `trait_scores`, never with keying of
their own. Every cleaning rule is explicit and its count is reported in `Reference.cleaning`,
where `rows_read == rows_kept + sum(dropped.values())` always holds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from personagen import TRAITS
from personagen.errors import PersonagenError
from personagen.io import regions
from personagen.io.builtin import sample_builtin
from personagen.psychometrics.instruments import (
    IPIP_50,
    IPIP_FFM_COLUMNS,
    Instrument,
    spi_instrument,
)
from personagen.psychometrics.scoring import keyed_responses, trait_scores

KINDS = ("big5", "ipip-ffm", "spi", "builtin")
MIN_ANSWERED = 0.8
"""A trait is scored only when at least this share of its items was answered (8 of 10)."""
AGE_RANGE = (10, 100)
"""Ages outside this range (the BIG5 file has 1e9) are typing errors: set to null, row kept."""
_NULLS = ["", "NULL", "null", "NA", "NaN", "nan", "NONE", "None", "(null)"]
_BATCH_BYTES = 8 << 20

GENDER_CODES = {1: "male", 2: "female", 3: "other"}
"""BIG5 `gender` and SAPA `sex` codes (0 or missing = unknown)."""


@dataclass(frozen=True)
class Reference:
    """A clean reference: the five trait columns (float64, 1-5) and optional demographics."""

    table: pa.Table
    source: str
    """What the data is and where it comes from (file, instrument, licence for the builtin)."""
    cleaning: dict[str, Any] = field(default_factory=dict)
    """`rows_read`, `dropped` (count per rule), `rules` (what each rule does), `rows_kept`,
    `notes` (counts of repairs that kept the row, e.g. unknown country codes set to null)."""
    spec: str = ""
    group: str | None = None

    def trait_matrix(self) -> np.ndarray:
        """The (n, 5) float64 matrix of trait scores in `TRAITS` order."""
        return np.column_stack(
            [self.table.column(t).to_numpy(zero_copy_only=False) for t in TRAITS]
        ).astype(np.float64, copy=False)

    def weights(self) -> np.ndarray | None:
        """Per-row survey weights when the table has a `weight` column, else None (uniform)."""
        if "weight" not in self.table.column_names:
            return None
        return self.table.column("weight").to_numpy(zero_copy_only=False).astype(np.float64)

    @property
    def n_rows(self) -> int:
        return self.table.num_rows

    def describe(self) -> str:
        where = f" [{self.group}]" if self.group else ""
        return f"{self.spec}{where}: {self.n_rows:,} rows"


def load_reference(
    spec: str,
    *,
    group: str | None = None,
    countries: list[str] | None = None,
    min_rows: int = 50,
    seed: int = 0,
    builtin_rows: int | None = None,
) -> Reference:
    """Load, clean and (optionally) narrow a reference to a region `group` or to `countries`.

    `seed` and `builtin_rows` only matter for `builtin:` specs, which are sampled from their
    summary (default 20,000 rows). Fewer than `min_rows` rows left is an error naming the group.
    """
    if group is not None and countries:
        raise PersonagenError("give a group or a list of countries, not both")
    kind, path = parse_spec(spec)
    if kind == "builtin":
        sample = sample_builtin(
            path, group=group, countries=countries, seed=seed, rows=builtin_rows
        )
        check_rows(sample.respondents, min_rows=min_rows, spec=spec, label=sample.group)
        return Reference(sample.table, sample.source, sample.cleaning, spec, sample.group)
    if kind == "big5":
        table, cleaning, source = _read_item_file(path, _BIG5)
    elif kind == "ipip-ffm":
        table, cleaning, source = _read_item_file(path, _IPIP_FFM)
    elif kind == "spi":
        table, cleaning, source = _read_item_file(path, _spi_format(path))
    else:
        table, cleaning, source = _read_trait_table(path)
    table, label = filter_group(table, cleaning, group=group, countries=countries)
    check_rows(table.num_rows, min_rows=min_rows, spec=spec, label=label)
    return Reference(table=table, source=source, cleaning=cleaning, spec=spec, group=label)


def parse_spec(spec: str) -> tuple[str, str]:
    """`kind:rest` for the known kinds, else ("table", path). The path must exist."""
    kind, sep, rest = spec.partition(":")
    if sep and kind.lower() in KINDS:
        kind = kind.lower()
        if not rest:
            raise PersonagenError(f"reference {spec!r}: missing the part after '{kind}:'")
        if kind != "builtin" and not Path(rest).exists():
            raise PersonagenError(f"reference file not found: {rest}")
        return kind, rest
    if not Path(spec).exists():
        hint = f"; known kinds: {', '.join(f'{k}:' for k in KINDS)}" if sep else ""
        raise PersonagenError(f"reference file not found: {spec}{hint}")
    return "table", spec


def check_rows(n: int, *, min_rows: int, spec: str, label: str | None) -> None:
    if n >= min_rows and n > 0:
        return
    where = f"group {label!r}" if label else "the reference"
    fix = "choose a larger group, or" if label else "give more respondents, or"
    raise PersonagenError(
        f"{where} has {n:,} usable rows in {spec} (at least {max(min_rows, 1):,} needed): "
        f"{fix} lower reference.min_rows"
    )


# --------------------------------------------------------------------------- groups


def filter_group(
    table: pa.Table,
    cleaning: dict[str, Any],
    *,
    group: str | None,
    countries: list[str] | None,
) -> tuple[pa.Table, str | None]:
    """Rows of the region `group` or of the listed `countries`; records the step in `cleaning`."""
    if group is None and not countries:
        return table, None
    if group is not None and regions.canonical(group) == regions.GLOBAL:
        _record(cleaning, "group", 0, "group 'global': every row kept")
        return table, regions.GLOBAL
    if countries:
        wanted = set(regions.parse_countries(countries))
        label = ",".join(sorted(wanted))
        rule = f"country in {label}"
        mask = _country_mask(table, wanted, label)
    else:
        region = regions.resolve_group(group or "")
        label = region.slug
        rule = f"country in {region.name} (M49 {region.m49}: {' '.join(sorted(region.countries))})"
        mask = _country_mask(table, set(region.countries), label, region=region)
    kept = table.filter(pa.array(mask))
    _record(cleaning, "group", table.num_rows - kept.num_rows, rule)
    return kept, label


def _country_mask(
    table: pa.Table, wanted: set[str], label: str, region: regions.Region | None = None
) -> np.ndarray:
    if "country" in table.column_names:
        codes = table.column("country").to_pylist()
        return np.array([c in wanted for c in codes], dtype=bool)
    if region is not None and "region" in table.column_names:
        names = table.column("region").to_pylist()
        return np.array([_within(name, region) for name in names], dtype=bool)
    raise PersonagenError(
        f"cannot select {label!r}: the reference has no country column (nor a region column)"
    )


def _within(name: str | None, region: regions.Region) -> bool:
    """Whether a region named in the data lies inside `region` (e.g. east-asia inside asia)."""
    if not name:
        return False
    inner = regions.REGIONS.get(regions.canonical(name))
    return inner is not None and inner.countries <= region.countries


def _record(cleaning: dict[str, Any], step: str, dropped: int, rule: str) -> None:
    cleaning.setdefault("dropped", {})[step] = int(dropped)
    cleaning.setdefault("rules", {})[step] = rule
    cleaning["rows_kept"] = int(cleaning.get("rows_kept", 0)) - int(dropped)


def _new_cleaning(rows_read: int) -> dict[str, Any]:
    return {"rows_read": int(rows_read), "dropped": {}, "rules": {}, "rows_kept": int(rows_read)}


# --------------------------------------------------------------------------- item files


@dataclass(frozen=True)
class _ItemFormat:
    """How one survey file names its items and metadata, and what missing looks like."""

    name: str
    instrument: Instrument
    columns: dict[str, str]
    """file column -> instrument item id."""
    zero_is_missing: bool
    meta: dict[str, str]
    """file column -> output column (`country`, `age`, `gender`)."""
    source: str


_OSPP = "Open-Source Psychometrics Project raw data (openpsychometrics.org/_rawdata)"
_BIG5 = _ItemFormat(
    name="big5",
    instrument=IPIP_50,
    columns={item_id: item_id for item_id in IPIP_50.item_ids()},
    zero_is_missing=True,
    meta={"country": "country", "age": "age", "gender": "gender"},
    source=f"BIG5 data set (c. 2012), {_OSPP}; items: {IPIP_50.name}",
)
_IPIP_FFM = _ItemFormat(
    name="ipip-ffm",
    instrument=IPIP_50,
    columns=dict(IPIP_FFM_COLUMNS),
    zero_is_missing=True,
    meta={"country": "country"},
    source=f"IPIP-FFM data (2016-2018), {_OSPP}; items: {IPIP_50.name}",
)


def _spi_format(path: str) -> _ItemFormat:
    instrument = spi_instrument(path)
    return _ItemFormat(
        name="spi",
        instrument=instrument,
        columns={item_id: item_id for item_id in instrument.item_ids()},
        zero_is_missing=False,
        meta={"age": "age", "sex": "gender"},
        source=f"{instrument.source}; {instrument.name}, 1-6 rescaled to 1-5",
    )


def _read_item_file(path: str, fmt: _ItemFormat) -> tuple[pa.Table, dict[str, Any], str]:
    """Score an item-response file batch by batch, then drop duplicates across all batches."""
    header, delimiter = _header(path)
    missing = [c for c in fmt.columns if c not in header]
    if missing:
        raise PersonagenError(
            f"{fmt.name}:{path} lacks item columns {', '.join(missing[:8])}"
            f"{' ...' if len(missing) > 8 else ''} (is it the right format?)"
        )
    meta = {col: out for col, out in fmt.meta.items() if col in header}
    item_cols = list(fmt.columns)
    scale = fmt.instrument.scale
    answered_needed = _answered_needed(fmt.instrument)

    keying: dict[str, Any] | None = None
    flip = np.zeros(len(item_cols), dtype=bool)
    counts = {"rows_read": 0, "out_of_range": 0, "missing_items": 0, "kept_with_missing": 0}
    traits_parts, codes_parts, meta_parts = [], [], {out: [] for out in meta.values()}
    for batch in _stream(path, delimiter, item_cols, list(meta)):
        n = batch.num_rows
        counts["rows_read"] += n
        raw = np.column_stack(
            [batch.column(c).to_numpy(zero_copy_only=False) for c in item_cols]
        ).astype(np.float64, copy=False)
        if keying is None:
            keying = detect_keying(raw, fmt.instrument, fmt.zero_is_missing, item_cols)
            flip = np.isin(item_cols, keying["reflected_columns"])
        raw[:, flip] = scale.min + scale.max - raw[:, flip]
        if fmt.zero_is_missing:
            raw[raw == 0] = np.nan
        answered = ~np.isnan(raw)
        bad = answered & ((raw < scale.min) | (raw > scale.max) | (raw != np.round(raw)))
        out_of_range = bad.any(axis=1)
        enough = _enough_answered(answered, fmt.instrument, answered_needed)
        keep = ~out_of_range & enough
        counts["out_of_range"] += int(out_of_range.sum())
        counts["missing_items"] += int((~out_of_range & ~enough).sum())
        counts["kept_with_missing"] += int((keep & ~answered.all(axis=1)).sum())
        kept_raw = raw[keep]
        traits_parts.append(trait_scores(kept_raw, fmt.instrument))
        codes_parts.append(np.nan_to_num(kept_raw, nan=0.0).astype(np.uint8))
        kept_batch = batch.filter(pa.array(keep))
        for col, out in meta.items():
            meta_parts[out].append(kept_batch.column(col))

    traits = np.concatenate(traits_parts) if traits_parts else np.empty((0, len(TRAITS)))
    codes = np.concatenate(codes_parts) if codes_parts else np.empty((0, len(item_cols)), np.uint8)
    columns: dict[str, Any] = {t: traits[:, j] for j, t in enumerate(TRAITS)}
    notes: dict[str, int] = {"rows_kept_with_some_missing_items": counts["kept_with_missing"]}
    for out, parts in meta_parts.items():
        chunked = pa.chunked_array(parts, type=parts[0].type) if parts else pa.array([])
        columns[out] = _clean_meta(out, chunked, notes)
    if "country" in columns:
        columns["region"] = _map_distinct(columns["country"], regions.region_of)
    table = pa.table(columns)

    first = _first_of_duplicates(
        codes,
        scale.max + 1,
        table,
        [c for c in ("country", "age", "gender") if c in meta.values()],
    )
    duplicates = table.num_rows - int(first.sum())
    table = table.filter(pa.array(first))

    cleaning = _new_cleaning(counts["rows_read"])
    lo, hi = scale.min, scale.max
    zero = " (0 = missing)" if fmt.zero_is_missing else ""
    _record(
        cleaning,
        "out_of_range",
        counts["out_of_range"],
        f"row dropped if any item answer is not a whole number in {lo}-{hi}{zero}",
    )
    _record(
        cleaning,
        "missing_items",
        counts["missing_items"],
        f"row dropped if any trait has fewer than {MIN_ANSWERED:.0%} of its items answered "
        f"({_needed_text(answered_needed)}); otherwise a trait is the mean of its answered items",
    )
    _record(
        cleaning,
        "duplicates",
        duplicates,
        "exact repeat of an earlier row (all item answers"
        + (
            f" and {', '.join(c for c in ('country', 'age', 'gender') if c in meta.values())}"
            if meta
            else ""
        )
        + ") dropped: a repeated submission",
    )
    cleaning["notes"] = notes
    if keying is not None:
        cleaning["keying"] = keying
    source = f"{fmt.source}; file {path}"
    return table, cleaning, source


def detect_keying(
    raw: np.ndarray,
    instrument: Instrument,
    zero_is_missing: bool,
    columns: list[str],
    min_rows: int = 30,
) -> dict[str, Any]:
    """Which of the file's item columns are stored reflected (`min + max - x`), not as answers.

    Some public extracts store items reflected; the 20k IPIP-FFM sample reflects every item
    keyed against *emotional stability* (EST1, EST3, EST5-10, ...), which also turns the missing
    code 0 into 6. Evidence, first batch only: with 0 = missing, a column holding 6 and never 0
    is reflected and one holding 0 is raw. A column with neither is oriented by the sign of its
    keyed correlation with its trait's other items. The verdict goes to the cleaning report.
    """
    lo, hi = instrument.scale.min, instrument.scale.max
    k = raw.shape[1]
    reflected = np.zeros(k, dtype=bool)
    known = np.zeros(k, dtype=bool)
    if zero_is_missing:
        has_top = (raw == lo + hi).any(axis=0)
        has_zero = (raw == 0).any(axis=0)
        reflected = has_top & ~has_zero
        known = has_top ^ has_zero
    x = np.where(reflected, lo + hi - raw, raw)
    if zero_is_missing:
        x[x == 0] = np.nan
    x[(x < lo) | (x > hi)] = np.nan
    keyed = keyed_responses(x, instrument)
    traits = np.array([item.trait for item in instrument.items])
    by_correlation = []
    for j in np.flatnonzero(~known):
        anchors = (traits == traits[j]) & (known if known.any() else True)
        anchors[j] = False
        if not anchors.any():
            continue
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rest = np.nanmean(keyed[:, anchors], axis=1)
        ok = ~np.isnan(keyed[:, j]) & ~np.isnan(rest)
        if ok.sum() < min_rows or np.std(keyed[ok, j]) == 0 or np.std(rest[ok]) == 0:
            continue
        if np.corrcoef(keyed[ok, j], rest[ok])[0, 1] < 0:
            reflected[j] = True
            by_correlation.append(columns[j])
    names = [columns[j] for j in np.flatnonzero(reflected)]
    rule = (
        f"{len(names)} item columns stored reflected ({lo + hi} - x) are un-reflected before "
        f"scoring: {' '.join(names)}"
        if names
        else "item columns stored as raw answers (no reflected columns found)"
    )
    evidence = (
        f"first {raw.shape[0]:,} rows: {int((known & reflected).sum())} columns hold {lo + hi} "
        f"(a reflected missing 0) and no 0; {int((known & ~reflected).sum())} hold 0 (raw)"
        if zero_is_missing
        else f"first {raw.shape[0]:,} rows"
    )
    evidence += f"; {len(by_correlation)} more oriented by a negative keyed item-trait correlation"
    return {"reflected_columns": names, "rule": rule, "evidence": evidence}


def _answered_needed(instrument: Instrument) -> dict[str, int]:
    per_trait: dict[str, int] = {}
    for item in instrument.items:
        per_trait[item.trait] = per_trait.get(item.trait, 0) + 1
    return {t: math.ceil(MIN_ANSWERED * k) for t, k in per_trait.items()}


def _needed_text(needed: dict[str, int]) -> str:
    values = sorted(set(needed.values()))
    if len(values) == 1:
        return f"at least {values[0]} per trait"
    return ", ".join(f"{t} {n}" for t, n in needed.items())


def _enough_answered(
    answered: np.ndarray, instrument: Instrument, needed: dict[str, int]
) -> np.ndarray:
    traits = np.array([item.trait for item in instrument.items])
    ok = np.ones(answered.shape[0], dtype=bool)
    for trait, k in needed.items():
        ok &= answered[:, traits == trait].sum(axis=1) >= k
    return ok


def _first_of_duplicates(
    codes: np.ndarray, base: int, table: pa.Table, meta: list[str]
) -> np.ndarray:
    """True for the first occurrence of each (item answers, metadata) combination.

    The answers (0 = missing, 1..base-1) are packed 21 to an int64 so the hash-based
    `pandas.DataFrame.duplicated` sees a few integer columns: O(n), a second for 1M rows.
    """
    import pandas as pd

    per_word = int(np.floor(63 / np.log2(base)))
    keys: dict[str, Any] = {}
    for w, start in enumerate(range(0, codes.shape[1], per_word)):
        block = codes[:, start : start + per_word].astype(np.int64)
        keys[f"items{w}"] = block @ (base ** np.arange(block.shape[1], dtype=np.int64))
    for col in meta:
        keys[col] = table.column(col).to_pandas()
    return ~pd.DataFrame(keys).duplicated(keep="first").to_numpy()


def _map_distinct(values: pa.Array | pa.ChunkedArray, func: Any) -> pa.Array:
    """`func` applied to each distinct string once, then spread back over the rows."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values.cast(pa.string()))
    mapped = pa.array([func(v) for v in encoded.dictionary.to_pylist()], pa.string())
    return mapped.take(encoded.indices)


def _clean_meta(column: str, values: pa.ChunkedArray, notes: dict[str, int]) -> pa.Array:
    if column == "country":
        raw = values.cast(pa.string())
        clean = _map_distinct(raw, regions.normalize_country)
        given = pc.and_(pc.is_valid(raw), pc.not_equal(pc.utf8_trim_whitespace(raw), ""))
        lost = pc.and_(pc.fill_null(given, False), pc.is_null(clean))
        notes["country_not_a_country_code"] = int(pc.sum(lost).as_py() or 0)
        return clean
    if column == "age":
        ages = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
        lo, hi = AGE_RANGE
        with np.errstate(invalid="ignore"):
            bad = ~np.isnan(ages) & ((ages < lo) | (ages > hi))
        notes["age_out_of_range_set_null"] = int(bad.sum())
        return pa.array(np.where(bad, np.nan, ages), pa.float64(), from_pandas=True)
    if column == "gender":
        codes = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
        labels = [GENDER_CODES.get(int(c)) if not np.isnan(c) else None for c in codes]
        return pa.array(labels, pa.string())
    raise AssertionError(column)


def _header(path: str) -> tuple[list[str], str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            line = handle.readline().rstrip("\r\n")
    except OSError as exc:
        raise PersonagenError(f"cannot read {path}: {exc}") from None
    delimiter = "\t" if "\t" in line else ","
    return [c.strip().strip('"') for c in line.split(delimiter)], delimiter


def _stream(
    path: str, delimiter: str, item_cols: list[str], meta_cols: list[str]
) -> Iterator[pa.RecordBatch]:
    """Only the needed columns, parsed in blocks: memory stays small for the 1M-row file."""
    types: dict[str, pa.DataType] = {c: pa.float64() for c in item_cols}
    for col in meta_cols:
        types[col] = pa.string() if col == "country" else pa.float64()
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=_BATCH_BYTES),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                include_columns=item_cols + meta_cols,
                column_types=types,
                null_values=_NULLS,
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
        yield from reader
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise PersonagenError(f"cannot parse {path}: {exc}") from None


# --------------------------------------------------------------------------- trait tables


def _read_trait_table(path: str) -> tuple[pa.Table, dict[str, Any], str]:
    """A table with the five trait columns (and optional country/region/age/gender/weight)."""
    table = _read_table(path)
    missing = [t for t in TRAITS if t not in table.column_names]
    if missing:
        raise PersonagenError(
            f"reference table {path} lacks trait columns {', '.join(missing)} "
            f"(has: {', '.join(table.column_names[:12])})"
        )
    cleaning = _new_cleaning(table.num_rows)
    columns: dict[str, Any] = {}
    for trait in TRAITS:
        try:
            columns[trait] = table.column(trait).cast(pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise PersonagenError(
                f"reference table {path}: column {trait} is not numeric"
            ) from None
    x = np.column_stack([columns[t].to_numpy(zero_copy_only=False) for t in TRAITS])
    missing_rows = np.isnan(x).any(axis=1)
    with np.errstate(invalid="ignore"):
        out_of_range = ~missing_rows & ((x < 1) | (x > 5)).any(axis=1)
    keep = ~missing_rows & ~out_of_range
    notes: dict[str, int] = {}
    if "weight" in table.column_names:
        w = table.column("weight").cast(pa.float64()).to_numpy(zero_copy_only=False)
        bad_w = keep & ~(np.isfinite(w) & (w >= 0))
        keep &= ~bad_w
        columns["weight"] = pa.array(w)
    else:
        bad_w = np.zeros_like(keep)
    for col in ("country", "age"):
        if col in table.column_names:
            columns[col] = _clean_meta(col, table.column(col), notes)
    for col in ("gender", "region"):
        if col in table.column_names:
            columns[col] = table.column(col).cast(pa.string())
    if "country" in columns and "region" not in columns:
        columns["region"] = _map_distinct(columns["country"], regions.region_of)
    out = pa.table(columns).filter(pa.array(keep))
    _record(
        cleaning, "missing_traits", int(missing_rows.sum()), "row dropped if a trait is null/NaN"
    )
    _record(
        cleaning, "out_of_range", int(out_of_range.sum()), "row dropped if a trait is outside 1-5"
    )
    if "weight" in columns:
        _record(
            cleaning,
            "bad_weight",
            int(bad_w.sum()),
            "row dropped if its weight is negative or not finite",
        )
    cleaning["rules"]["duplicates"] = (
        "not applied: a trait table has no item answers to tell a repeated submission "
        "from two people with equal scores"
    )
    cleaning["notes"] = notes
    return out, cleaning, f"trait table {path}"


def _read_table(path: str) -> pa.Table:
    p = Path(path)
    try:
        if p.is_dir() or p.suffix.lower() in (".parquet", ".pq"):
            return pq.read_table(p)
        header, delimiter = _header(path)
        del header
        return pacsv.read_csv(
            p,
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(null_values=_NULLS, strings_can_be_null=True),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise PersonagenError(
            f"cannot read the reference table {path}: {exc}: give a Parquet or CSV file of "
            "trait columns"
        ) from None


def trait_summary(x: np.ndarray) -> dict[str, Any]:
    """Per-trait mean and SD and the Pearson correlation matrix (for `reference show`)."""
    return {
        "n": int(x.shape[0]),
        "mean": dict(zip(TRAITS, np.mean(x, axis=0).tolist(), strict=True)),
        "sd": dict(zip(TRAITS, np.std(x, axis=0, ddof=1).tolist(), strict=True)),
        "corr": np.corrcoef(x, rowvar=False).tolist(),
    }
