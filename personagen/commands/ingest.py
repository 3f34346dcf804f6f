"""`personagen ingest SRC --out DIR`: input files -> cleaned, windowed, redacted histories Parquet.

    file paths -> read -> [group posts by user] -> window + redact -> OUT/histories/
Every input file ends as rows or as a line in OUT/errors.jsonl; the summary (printed and written
to OUT/summary.json) carries the counts, and they add up: files found = read + failed, and every
post read is in a window, outside the token budget, empty, or of a skipped user.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa

from personagen.config import Config
from personagen.io.histories import HISTORIES_DIR
from personagen.runtime.context import RunContext
from personagen.runtime.ingest import ingest_rows
from personagen.runtime.sinks import PartSink
from personagen.runtime.summary import Summary
from personagen.stages.ingest import metadata_schema, resolve_inputs, split_for_sink

ROWS = [
    ("files found", "files_found"),
    ("files read", "files_read"),
    ("files failed", "files_failed"),
    ("records failed (bad lines)", "records_failed"),
    ("users with a history", "users_with_history"),
    ("users skipped (too few posts)", "users_skipped"),
    ("posts read", "posts_read"),
    ("  empty posts skipped", "posts_empty"),
    ("  posts in windows", "posts_in_windows"),
    ("  posts outside the token budget", "posts_outside_windows"),
    ("  posts of skipped users", "posts_of_skipped_users"),
    ("posts truncated to the budget", "posts_truncated"),
    ("history rows (windows) written", "windows"),
]
EQUATIONS = [
    (("files_found",), ("files_read", "files_failed")),
    (
        ("posts_read",),
        ("posts_empty", "posts_in_windows", "posts_outside_windows", "posts_of_skipped_users"),
    ),
]


def ingest(cfg: Config, src: str | Path, out: str | Path) -> Summary:
    """Ingest `src` (format `ingest.format`) into `out/histories`, replacing an earlier ingest
    there. The summary's `outputs["errors"]` lists the files and records that failed."""
    ctx = RunContext(cfg, out, "ingest")
    files, fmt = resolve_inputs(src, cfg.ingest.format)
    out = ctx.bank.path
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".{HISTORIES_DIR}.staging"
    shutil.rmtree(staging, ignore_errors=True)

    ctx.start_ray()
    metadata = metadata_schema(fmt)

    def split(table: pa.Table) -> tuple[dict[str, pa.Table], Counter[str], list[dict]]:
        rows, counts, records = split_for_sink(table, metadata)
        return ({"": rows} if rows is not None else {}), counts, records

    sink = PartSink(staging, split, HISTORIES_DIR)
    ingest_rows(files, fmt, cfg.ingest).write_datasink(sink)

    final = out / HISTORIES_DIR
    shutil.rmtree(final, ignore_errors=True)
    if staging.exists():
        staging.rename(final)
    counts = sink.counts
    counts["files_found"] = len(files)
    errors = sorted(sink.records, key=lambda e: (e["path"], e["reason"]))
    summary = Summary("ingest", counts, equations=EQUATIONS, rows=ROWS)
    summary.outputs = {"out": str(out), "errors": errors}
    if errors:
        summary.lines.append(f"{len(errors)} problems recorded in {out / 'errors.jsonl'}")
    ctx.finish(summary, record=False)
    write_reports(out, summary, cfg)
    return summary


def write_errors(path: Path, errors: list[dict[str, str]]) -> None:
    """One JSON line per file or record that failed: its path and the reason."""
    with path.open("w", encoding="utf-8") as fh:
        for error in errors:
            line = {"path": error["path"], "reason": error["reason"]}
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")


def write_reports(out: Path, summary: Summary, cfg: Config) -> None:
    write_errors(out / "errors.jsonl", summary.outputs["errors"])
    report = {
        "out": str(out),
        "wall_s": round(summary.wall_s, 3),
        "counts": {key: summary.counts[key] for _, key in ROWS}
        | dict(sorted(summary.counts.items())),
        "errors": len(summary.outputs["errors"]),
        "config": {"ingest": cfg.masked()["ingest"]},
    }
    (out / "summary.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
