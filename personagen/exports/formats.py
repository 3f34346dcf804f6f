"""Write a persona set in one of the formats (`personagen.exports.FORMATS`)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import pyarrow as pa

from personagen.errors import PersonagenError
from personagen.exports import FORMATS, concordia, flat, hf, oasis
from personagen.exports.sets import ExportSource, persona_rows, publish

Writer = Callable[[pa.Table, Path, ExportSource], None]

WRITERS: dict[str, Writer] = {
    "oasis": oasis.write,
    "concordia": concordia.write,
    "hf": hf.write,
    "jsonl": flat.write_jsonl,
    "csv": flat.write_csv,
}


def export_set(
    source: ExportSource,
    fmt: str,
    out: str | Path,
    *,
    overwrite: bool = False,
    license: str | None = None,
) -> tuple[Path, int]:
    """Write `source` as `fmt` to `out` (atomically); returns the path and the rows written.
    `license` (a Hub licence id) overrides the one the `hf` card takes from the source corpus."""
    if fmt not in WRITERS:
        raise PersonagenError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if license is not None and fmt != "hf":
        raise PersonagenError("--license is for --to hf (it goes into the dataset card)")
    rows = persona_rows(source)
    writer = partial(hf.write, license=license) if fmt == "hf" else WRITERS[fmt]
    path = publish(out, lambda tmp: writer(rows, tmp, source), overwrite=overwrite)
    return path, rows.num_rows
