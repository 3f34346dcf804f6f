"""`personagen export SET --to FORMAT --out PATH`: a persona set where simulations load it.

SET is a bank (its scored personas; `--instrument` where it was scored with several), an
`align` or `adapt` output folder, or a Parquet file of personas; the formats are those of
`personagen.exports`. Every row read is exported or counted as left out for lack of traits.
Nothing here depends on the configuration: an export only reformats what was built.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from personagen.exports.formats import export_set
from personagen.exports.sets import read_source
from personagen.io.lock import check_out
from personagen.runtime.summary import Summary

ROWS = [
    ("persona rows read", "read"),
    ("left out: not scored", "unscored"),
    ("exported", "exported"),
]
EQUATIONS = [(("read",), ("unscored", "exported"))]


def export(
    personas: str | Path,
    fmt: str,
    out: str | Path,
    *,
    instrument: str | None = None,
    overwrite: bool = False,
    license: str | None = None,
) -> Summary:
    """Write the persona set at `personas` as `fmt` to `out` (a file or a folder, by format),
    atomically; `overwrite` replaces an existing `out`, `license` sets the `hf` card's licence.
    The summary's `outputs` hold the path (`out`) and the set as read (`source`)."""
    started = time.perf_counter()
    check_out(out)
    source = read_source(personas, instrument)
    path, written = export_set(source, fmt, out, overwrite=overwrite, license=license)
    counts = Counter(
        read=source.table.num_rows + source.unscored, unscored=source.unscored, exported=written
    )
    summary = Summary("export", counts, equations=EQUATIONS, rows=ROWS)
    summary.outputs = {"out": path, "source": source}
    summary.lines = [f"wrote {path} ({fmt}, {source.kind} {source.path})"]
    summary.wall_s = time.perf_counter() - started
    summary.check()
    return summary
