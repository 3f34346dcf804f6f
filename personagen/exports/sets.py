"""What an export is made from: a persona set read from wherever personagen wrote it, the rows
every format writes, and the atomic publishing of the result.

Sets: a bank folder (its scored personas, on one instrument), an `align` or `adapt` output
folder (its `personas.parquet`, with `weights.parquet` and `report.json` beside it), or any
Parquet file of personas. A set aligned with repeats (its report says `replace`) holds a persona
once per copy; the export keeps every row, so the simulation gets the N agents the alignment
chose. Anywhere else a repeated id is an error, as for `align`.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from personagen import TRAITS
from personagen.errors import PersonagenError
from personagen.io.bank import ATTRIBUTES_TYPE, KEY, read_manifest
from personagen.io.personas import persona_set, read_personas

SET_FILE = "personas.parquet"
WEIGHTS_FILE = "weights.parquet"
REPORT_FILE = "report.json"
KINDS = {"align": "aligned", "adapt": "adapted"}
"""The kind of set a report's `info.command` wrote."""


@dataclass(frozen=True)
class ExportSource:
    """A persona set and what is known about where it came from."""

    table: pa.Table
    """Every column the set holds, one row per persona (per copy, in sets with repeats)."""
    kind: str
    """`bank`, `aligned`, `adapted` or `table` (a Parquet file of personas)."""
    path: Path
    unscored: int
    """Rows left out because they have no trait scores."""
    instrument: str | None
    report: dict[str, Any] | None
    """The set's align/adapt report.json (None for a bank or a bare file)."""
    bank: Path | None
    """The bank the set was chosen from, where known."""
    manifest: dict[str, Any]
    """That bank's manifest ({} when unknown)."""


def set_path(path: str | Path) -> Path:
    """Where a set's personas are: a bank folder as given, an output folder's
    personas.parquet, or the file given (an error when there is nothing of the kind)."""
    p = Path(path)
    if p.is_dir() and (p / "personas").is_dir():
        return p
    file = p / SET_FILE if p.is_dir() else p
    if not file.is_file():
        raise PersonagenError(
            f"no persona set at {p}: give a bank folder, an `align`/`adapt` output folder "
            f"(with {SET_FILE}) or a Parquet file of personas"
        )
    return file


def read_source(path: str | Path, instrument: str | None = None) -> ExportSource:
    """Read and check a persona set (see the module docstring for what `path` may be)."""
    p = set_path(path)
    if p.is_dir():
        personas = read_personas(p, instrument=instrument)
        return ExportSource(
            table=personas.table,
            kind="bank",
            path=p,
            unscored=personas.unscored,
            instrument=personas.instrument,
            report=None,
            bank=p,
            manifest=read_manifest(p),
        )
    try:
        table = pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise PersonagenError(
            f"cannot read personas from {p}: {exc}: give a Parquet file or a bank folder"
        ) from None
    folder = p.parent
    report = _report(folder / REPORT_FILE)
    repeats = bool((report or {}).get("info", {}).get("replace"))
    checked = persona_set(_first_copies(table) if repeats else table, p, instrument)
    table = table.filter(pc.is_in(table.column(KEY), value_set=checked.table.column(KEY)))
    table = _with_weights(table, folder / WEIGHTS_FILE)
    bank = _bank_of(folder, report)
    command = (report or {}).get("info", {}).get("command")
    return ExportSource(
        table=table,
        kind=KINDS.get(command, "table"),
        path=p,
        unscored=checked.unscored,
        instrument=checked.instrument,
        report=report,
        bank=bank,
        manifest=read_manifest(bank) if bank else {},
    )


def _first_copies(table: pa.Table) -> pa.Table:
    """The first row of each persona (a set aligned with repeats holds some several times)."""
    first: dict[str, int] = {}
    for i, pid in enumerate(table.column(KEY).to_pylist()):
        first.setdefault(pid, i)
    return table.take(pa.array(sorted(first.values()), pa.int64()))


def _report(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PersonagenError(f"{path} is not valid JSON ({exc}): write the set again") from None


def _with_weights(table: pa.Table, path: Path) -> pa.Table:
    """The set's alignment weight per persona (from `weights.parquet`), where it has one."""
    if "weight" in table.column_names or not path.is_file():
        return table
    weights = pq.read_table(path, columns=[KEY, "weight"])
    at = pc.index_in(table.column(KEY), value_set=weights.column(KEY))
    return table.append_column("weight", weights.column("weight").take(at).cast(pa.float64()))


def _bank_of(folder: Path, report: dict[str, Any] | None) -> Path | None:
    """The bank a set came from: the report's `bank` (adapt) or `personas` (align), else the
    folder's parent when the set is a build's BANK/aligned or BANK/adapted."""
    info = (report or {}).get("info", {})
    for candidate in (info.get("bank"), info.get("personas"), folder.parent):
        if candidate and (Path(candidate) / "personas").is_dir():
            return Path(candidate)
    return None


# ------------------------------------------------------------------------------ the rows


def persona_rows(source: ExportSource) -> pa.Table:
    """The columns every format writes: persona_id, narrative (the revised one in an adapted
    set, with the bank's as original_narrative), attributes, the five traits, the instrument
    and, where the set has them, the alignment weights."""
    t = source.table
    if t.num_rows == 0:
        raise PersonagenError(
            f"no scored personas in {source.path} ({source.unscored:,} without trait scores): "
            "run `personagen score` on the bank first"
        )
    if "narrative" not in t.column_names:
        raise PersonagenError(
            f"personas {source.path} have no narrative column: export a bank, or the `align` "
            "output of a bank (a table of traits alone gives a simulator nothing to play)"
        )
    narrative = t.column("narrative")
    columns: dict[str, Any] = {KEY: t.column(KEY)}
    revised = t.column("revised_narrative") if "revised_narrative" in t.column_names else None
    if revised is not None and revised.null_count < t.num_rows:
        columns["narrative"] = pc.coalesce(revised, narrative)
        columns["original_narrative"] = narrative
    else:
        columns["narrative"] = narrative
    columns["attributes"] = (
        t.column("attributes").cast(ATTRIBUTES_TYPE)
        if "attributes" in t.column_names
        else pa.nulls(t.num_rows, ATTRIBUTES_TYPE)
    )
    for trait in TRAITS:
        columns[trait] = t.column(trait).cast(pa.float64())
    columns["instrument"] = (
        t.column("instrument")
        if "instrument" in t.column_names
        else pa.array([source.instrument] * t.num_rows, pa.string())
    )
    if "weight" in t.column_names:
        columns["weight"] = t.column("weight").cast(pa.float64())
    return pa.table(columns)


def joinable(row: dict[str, Any]) -> dict[str, Any]:
    """The fields that join an agent back to the bank and the alignment: the id, the traits,
    the instrument and the weight (where the set has one)."""
    return {k: row[k] for k in (KEY, *TRAITS, "instrument", "weight") if k in row}


def agent_names(n: int) -> list[str]:
    """Display names of the agents ("Persona 1" ...): personas carry no names (the miner is
    told not to invent any), and simulators need one per agent, distinct."""
    return [f"Persona {i}" for i in range(1, n + 1)]


# ------------------------------------------------------------------------------ writing


def publish(out: str | Path, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Run `write(tmp)` (it creates a file or a folder at `tmp`), then rename it to `out`: a
    reader never sees half an export, and a failed export leaves nothing behind. An existing
    `out` is refused unless `overwrite`, and then replaced only once the new one is complete."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise PersonagenError(
            f"{out} exists: pass --overwrite to replace it, or choose another --out"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    tmp = out.with_name(f".{out.name}.tmp-{token}")
    try:
        write(tmp)
    except BaseException:
        _remove(tmp)
        raise
    old = out.with_name(f".{out.name}.old-{token}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    _remove(old)
    return out


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
