"""A persona set with trait scores, from a bank folder or a Parquet file (`evaluate`, `align`).

Contract: a `persona_id` column, unique, and the five trait columns on 1-5. A bank's personas
that have no scores yet (null traits: the score stage has not reached them, or failed on them)
are not candidates; they are left out and counted. A trait that is present but NaN or outside
1-5, a missing column, or a repeated id is an error, since it means the input is broken.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from personagen import TRAITS
from personagen.errors import PersonagenError
from personagen.io.bank import KEY, instruments, read_bank


@dataclass(frozen=True)
class PersonaSet:
    table: pa.Table
    """Every column read, only rows with all five traits."""
    unscored: int
    """Rows left out because their traits are null (not scored)."""
    path: str
    instrument: str | None = None
    """The instrument the traits were scored with, where the set says."""

    def trait_matrix(self) -> np.ndarray:
        return np.column_stack(
            [self.table.column(t).to_numpy(zero_copy_only=False) for t in TRAITS]
        ).astype(np.float64, copy=False)

    def ids(self) -> list[str]:
        return self.table.column(KEY).to_pylist()


def read_personas(
    path: str | Path, columns: list[str] | None = None, instrument: str | None = None
) -> PersonaSet:
    """Read and check a persona set; `columns` (besides id and traits) narrows what is read.
    A bank's traits are those of `instrument` (None: the one it was scored with; an error when
    it was scored with several); a file's `instrument` column, where it has one, must say the
    same."""
    p = Path(path)
    wanted = None if columns is None else list(dict.fromkeys([KEY, *TRAITS, *columns]))
    if p.is_dir() and (p / "personas").is_dir():
        scored = instruments(p) if instrument is not None else []
        if scored and instrument not in scored:
            raise PersonagenError(
                f"bank {p} is not scored with {instrument} (it is with {', '.join(scored)}): "
                f"choose one of those with --instrument, or run `personagen score --instrument "
                f"{instrument}` on it first"
            )
        table = read_bank(p, instrument=instrument)
        if wanted is not None:
            table = table.select([c for c in wanted if c in table.column_names])
    elif p.exists():
        try:
            table = pq.read_table(p, columns=wanted if wanted else None)
        except (pa.ArrowInvalid, OSError) as exc:
            raise PersonagenError(
                f"cannot read personas from {p}: {exc}: give a Parquet file or a bank folder"
            ) from None
    else:
        raise PersonagenError(f"no persona bank or Parquet file at {p}")
    return persona_set(table, p, instrument)


def persona_set(table: pa.Table, path: str | Path, instrument: str | None = None) -> PersonaSet:
    """A persona table (e.g. already in memory), checked as a file would be: ids present and
    distinct, traits numeric and on 1-5; rows without any trait are counted as unscored."""
    p = Path(path)
    missing = [c for c in (KEY, *TRAITS) if c not in table.column_names]
    if missing:
        raise PersonagenError(
            f"personas {p} lack column(s) {', '.join(missing)} (a bank must have been scored)"
        )
    table = _cast_traits(table, p)
    unscored = _all_null(table)
    table = table.filter(pa.array(~unscored))
    _check(table, p)
    named = _instrument(table, p, instrument)
    return PersonaSet(table=table, unscored=int(unscored.sum()), path=str(p), instrument=named)


def _instrument(table: pa.Table, path: Path, wanted: str | None) -> str | None:
    """The one instrument the set's traits come from (its `instrument` column), checked
    against `wanted`."""
    if "instrument" not in table.column_names:
        return wanted
    present = sorted(v for v in pc.unique(table.column("instrument")).to_pylist() if v)
    if len(present) > 1 or (wanted is not None and present and present != [wanted]):
        raise PersonagenError(
            f"personas {path} hold traits of {', '.join(present)}"
            + (f", not only {wanted}" if wanted else "")
            + ": traits of several instruments are not on one scale"
        )
    return present[0] if present else wanted


def _cast_traits(table: pa.Table, path: Path) -> pa.Table:
    for trait in TRAITS:
        i = table.column_names.index(trait)
        try:
            column = table.column(trait).cast(pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise PersonagenError(f"personas {path}: trait column {trait} is not numeric") from None
        table = table.set_column(i, pa.field(trait, pa.float64()), column)
    return table


def _all_null(table: pa.Table) -> np.ndarray:
    nulls = np.column_stack(
        [table.column(t).is_null().to_numpy(zero_copy_only=False) for t in TRAITS]
    )
    return nulls.all(axis=1) if nulls.size else np.zeros(table.num_rows, dtype=bool)


def _check(table: pa.Table, path: Path) -> None:
    ids = table.column(KEY)
    if ids.null_count:
        raise PersonagenError(
            f"personas {path}: {ids.null_count} rows have no {KEY}: give every row an id"
        )
    if pc.count_distinct(ids).as_py() != table.num_rows:
        counts = pc.value_counts(ids)
        repeated = [v["values"].as_py() for v in counts if v["counts"].as_py() > 1][:3]
        raise PersonagenError(
            f"personas {path}: duplicate {KEY} values, e.g. {repeated}: give each persona one "
            "row with an id of its own"
        )
    x = (
        np.column_stack([table.column(t).to_numpy(zero_copy_only=False) for t in TRAITS]).astype(
            np.float64
        )
        if table.num_rows
        else np.empty((0, len(TRAITS)))
    )
    bad_nan = ~np.isfinite(x)
    if bad_nan.any():
        row = int(np.flatnonzero(bad_nan.any(axis=1))[0])
        raise PersonagenError(
            f"personas {path}: {int(bad_nan.any(axis=1).sum())} rows have a missing or NaN trait "
            f"(first: {ids[row].as_py()}): score them again, or leave those rows out"
        )
    out = (x < 1) | (x > 5)
    if out.any():
        row = int(np.flatnonzero(out.any(axis=1))[0])
        raise PersonagenError(
            f"personas {path}: {int(out.any(axis=1).sum())} rows have a trait outside 1-5 "
            f"(first: {ids[row].as_py()}: {x[row].round(3).tolist()}): traits are means on the "
            "1-5 scale; rescale them or leave those rows out"
        )
