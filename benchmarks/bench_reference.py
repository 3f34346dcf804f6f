"""Loading the full-size IPIP-FFM file (1,015,341 rows x 110 columns, ~400 MB): time and memory.

The public `data-final.csv` is not in ../shared (only its first 1,000 rows), so by default this
builds a stand-in of the same shape: the 1,000 real rows tiled to 1,015,341, each copy's item
columns rotated so rows stay distinct. Pass `--path` to time the real file instead.

Compared in the same run, each in a fresh process (peak RSS from getrusage):
- ours:  `load_reference("ipip-ffm:PATH")` (pyarrow streamed column batches, then scoring and
         de-duplication);
- peer:  `pandas.read_csv(PATH, sep="\\t", usecols=<50 items + country>)`, the usual way, which
         only reads the columns (no scoring).

    python benchmarks/bench_reference.py [--path data-final.csv] [--rows 1015341]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
FIRST_1000 = ROOT.parent / "shared" / "data" / "ipip" / "ipip-ffm" / "data-final-first1000.csv"
FULL_ROWS = 1_015_341

_OURS = """
import json, resource, sys, time
from personagen.io.reference import load_reference
t = time.perf_counter()
ref = load_reference("ipip-ffm:" + sys.argv[1])
wall = time.perf_counter() - t
print(json.dumps({"wall_s": wall, "rows_read": ref.cleaning["rows_read"], "rows": ref.n_rows,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
_PEER = """
import json, resource, sys, time
import pandas as pd
from personagen.psychometrics.instruments import IPIP_FFM_COLUMNS
t = time.perf_counter()
frame = pd.read_csv(sys.argv[1], sep="\\t", usecols=[*IPIP_FFM_COLUMNS, "country"])
wall = time.perf_counter() - t
print(json.dumps({"wall_s": wall, "rows_read": len(frame), "rows": len(frame),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def build_stand_in(target: Path, rows: int) -> None:
    """The real first 1,000 rows, tiled; item column j of copy c rotated by c * (j + 1), so no
    two rows repeat (a common shift would only permute the rows)."""
    base = pacsv.read_csv(
        FIRST_1000,
        parse_options=pacsv.ParseOptions(delimiter="\t"),
        convert_options=pacsv.ConvertOptions(strings_can_be_null=False),
    )
    items = [c for c in base.column_names if c[:3] in ("EXT", "EST", "AGR", "CSN", "OPN")]
    items = [c for c in items if not c.endswith("_E")]
    copies = -(-rows // base.num_rows)
    with pacsv.CSVWriter(
        target,
        base.schema,
        write_options=pacsv.WriteOptions(delimiter="\t", quoting_style="none"),
    ) as writer:
        written = 0
        for c in range(copies):
            table = base
            for j, name in enumerate(items):
                column = base.column(name).to_numpy()
                shift = (c * (j + 1) + (c // base.num_rows) * j * j) % base.num_rows
                rotated = pa.array(np.roll(column, shift))
                table = table.set_column(table.column_names.index(name), name, rotated)
            take = min(base.num_rows, rows - written)
            writer.write_table(table.slice(0, take))
            written += take


def run(code: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=None, help="a real data-final.csv")
    parser.add_argument("--rows", type=int, default=FULL_ROWS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/personagen-bench"))
    args = parser.parse_args()
    path = args.path
    if path is None:
        args.work.mkdir(parents=True, exist_ok=True)
        path = args.work / f"ipip-ffm-standin-{args.rows}.csv"
        if not path.exists():
            t = time.perf_counter()
            build_stand_in(path, args.rows)
            print(f"built {path} in {time.perf_counter() - t:.0f} s")
    size_mb = path.stat().st_size / 1e6
    ours, peer = run(_OURS, path), run(_PEER, path)
    print(f"file: {path} ({size_mb:,.0f} MB)")
    print("| loader | rows read | rows kept | wall s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    for name, r in (
        ("personagen load_reference (stream + score + dedup)", ours),
        ("pandas.read_csv usecols (read only)", peer),
    ):
        print(
            f"| {name} | {r['rows_read']:,} | {r['rows']:,} | {r['wall_s']:.1f} "
            f"| {r['peak_mb']:,.0f} |"
        )
    print(
        f"ratio pandas/ours: wall {peer['wall_s'] / ours['wall_s']:.2f}x, "
        f"peak memory {peer['peak_mb'] / ours['peak_mb']:.2f}x"
    )


if __name__ == "__main__":
    main()
