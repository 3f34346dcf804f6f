"""`jsonl` and `csv`: one persona per row, for any tool that reads a table.

JSONL rows are the export rows as JSON objects (`attributes` nested). CSV has no nesting: the
attribute fields become columns of their own (`age_range` ... `values`), lists as JSON arrays,
nulls as empty cells. Floats are written with Python's shortest round-trip repr, so the traits
and weights read back exactly.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from personagen.exports.sets import ExportSource

ATTRIBUTE_FIELDS = ("age_range", "gender", "occupation", "location", "interests", "values")


def write_jsonl(rows: pa.Table, path: Path, source: ExportSource) -> None:
    """One JSON object per line, in the set's order."""
    with path.open("w", encoding="utf-8") as fh:
        for row in rows.to_pylist():
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_csv(rows: pa.Table, path: Path, source: ExportSource) -> None:
    """A header and one record per persona; attributes spread into columns."""
    names = rows.column_names
    at = names.index("attributes")
    header = [*names[:at], *ATTRIBUTE_FIELDS, *names[at + 1 :]]
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows.to_pylist():
            attributes = row.pop("attributes") or {}
            flat = {**row, **{f: attributes.get(f) for f in ATTRIBUTE_FIELDS}}
            writer.writerow([_cell(flat[name]) for name in header])


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False)
    return value
