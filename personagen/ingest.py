"""The ingest stage: input files -> cleaned, windowed, redacted histories Parquet, through Ray Data.

Pipeline (all streaming):
    file paths -> read files (map_batches) [-> group posts by user] -> window + redact
               -> CountingPartSink into OUT/histories/
Every input file ends as rows or as a line in OUT/errors.jsonl; the summary (printed and written
to OUT/summary.json) carries the counts, and `IngestSummary.check()` proves they add up.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from personagen.config import Config, IngestConfig
from personagen.errors import PersonagenError
from personagen.io.histories import (
    BLOG_METADATA,
    HISTORY_COLUMNS,
    assemble_user,
    detect_format,
    history_id,
    list_inputs,
    read_file,
)
from personagen.redact import redact
from personagen.windowing import count_tokens, window_posts

log = logging.getLogger(__name__)

HISTORIES_DIR = "histories"


# ------------------------------------------------------------------------ batch functions

NO_USER = ""
"""User id of rows that belong to no user (per-file counts, errors); real ids are never empty."""


def read_files(batch: dict[str, Any], fmt: str) -> dict[str, list[Any]]:
    """One row per input file in, one row per user (or per post) out; failures become rows too.

    Output rows have `kind` = user | post | error | file, so that errors and per-file counts
    travel with the data instead of through side channels.
    """
    out: dict[str, list[Any]] = {k: [] for k in ("kind", "user_id", "payload")}

    def emit(kind: str, user_id: str, payload: dict[str, Any]) -> None:
        out["kind"].append(kind)
        out["user_id"].append(user_id)
        out["payload"].append(json.dumps(payload, ensure_ascii=False))

    for path in batch["path"]:
        try:
            read = read_file(Path(path), fmt)
        except Exception as exc:
            emit(
                "error",
                NO_USER,
                {"path": path, "reason": f"{type(exc).__name__}: {exc}", "scope": "file"},
            )
            continue
        emit("file", NO_USER, {"path": path, "encoding": read.encoding})
        for reason in read.errors:
            emit("error", NO_USER, {"path": path, "reason": reason, "scope": "record"})
        for user in read.users:
            emit("user", user["user_id"], {**user, "source": path})
        for post in read.posts:
            emit("post", post["user_id"], {**post, "source": path})
    return out


def group_posts(rows: dict[str, Any]) -> dict[str, list[Any]]:
    """All post rows of one user (a Ray `map_groups` group) -> one user row.

    The rows of no user (per-file counts and errors) form one group of their own and pass through.
    """
    if rows["user_id"][0] == NO_USER:
        return rows
    payloads = [json.loads(p) for p in rows["payload"]]
    user_id = str(rows["user_id"][0])
    meta: dict[str, Any] = {}
    for p in payloads:
        meta.update({k: v for k, v in p["meta"].items() if v is not None})
    user = assemble_user(user_id, payloads, meta)
    sources = sorted({p["source"] for p in payloads})
    user["source"] = sources[0] if len(sources) == 1 else f"{sources[0]} (+{len(sources) - 1})"
    return {
        "kind": ["user"],
        "user_id": [user_id],
        "payload": [json.dumps(user, ensure_ascii=False)],
    }


def prepare_users(batch: dict[str, Any], cfg: IngestConfig) -> dict[str, list[Any]]:
    """Window, then redact, each user; one row per window. Other kinds pass through."""
    out: dict[str, list[Any]] = {"kind": [], "user_id": [], "payload": []}
    for kind, user_id, payload in zip(
        batch["kind"], batch["user_id"], batch["payload"], strict=True
    ):
        if kind != "user":
            out["kind"].append(kind)
            out["user_id"].append(user_id)
            out["payload"].append(payload)
            continue
        for row in _user_windows(json.loads(payload), cfg):
            out["kind"].append(row.pop("kind"))
            out["user_id"].append(user_id)
            out["payload"].append(json.dumps(row, ensure_ascii=False))
    return out


def _user_windows(user: dict[str, Any], cfg: IngestConfig) -> list[dict[str, Any]]:
    counts = {"posts_read": user["n_posts_raw"], "posts_empty": user["n_empty"]}
    posts = user["posts"]
    if len(posts) < cfg.min_posts or not posts:
        return [{"kind": "skip", "counts": {**counts, "posts_of_skipped_users": len(posts)}}]
    win = cfg.window
    windowing = window_posts(posts, win.strategy, win.max_tokens, win.max_windows)
    counts |= {
        "posts_outside_windows": windowing.n_posts_dropped,
        "posts_truncated": windowing.n_posts_truncated,
    }
    rows = []
    redactions: Counter[str] = Counter()
    for window in windowing.windows:
        redacted_posts = []
        for post in window.posts:
            text = post["text"] or ""
            if cfg.redact.enabled:
                text, found = redact(text, cfg.redact.types)
                redactions.update(found)
            redacted_posts.append({"date": post["date"], "text": text})
        rows.append(
            {
                "kind": "history",
                "window_id": window.window_id,
                "posts": redacted_posts,
                "n_tokens": sum(count_tokens(p["text"]) for p in redacted_posts),
                "source": user["source"],
                "meta": user["meta"],
                "counts": {"posts_in_windows": len(redacted_posts)},
            }
        )
    rows[0]["counts"] |= counts | {f"redacted_{k}": v for k, v in redactions.items()}
    return rows


# ------------------------------------------------------------------------------ the sink


def split_for_sink(
    table: pa.Table, metadata: pa.Schema | None
) -> tuple[pa.Table | None, Counter[str], list[dict[str, Any]]]:
    """Route one block: history rows -> Parquet rows; errors -> records; counts -> counters."""
    counts: Counter[str] = Counter()
    records: list[dict[str, Any]] = []
    histories: list[dict[str, Any]] = []
    for kind, user_id, payload in zip(
        table.column("kind").to_pylist(),
        table.column("user_id").to_pylist(),
        table.column("payload").to_pylist(),
        strict=True,
    ):
        data = json.loads(payload)
        counts.update(data.pop("counts", {}))
        if kind == "history":
            counts["windows"] += 1
            counts["users_with_history"] += data["window_id"] == 0
            histories.append({"user_id": user_id, **data})
        elif kind == "skip":
            counts["users_skipped"] += 1
        elif kind == "file":
            counts["files_read"] += 1
            counts[f"encoding:{data['encoding']}"] += 1
        elif kind == "error":
            counts["files_failed" if data["scope"] == "file" else "records_failed"] += 1
            records.append(data)
    return (_history_table(histories, metadata) if histories else None), counts, records


def _history_table(rows: list[dict[str, Any]], metadata: pa.Schema | None) -> pa.Table:
    columns: dict[str, Any] = {
        "history_id": [history_id(r["user_id"], r["window_id"]) for r in rows],
        "user_id": [r["user_id"] for r in rows],
        "window_id": [r["window_id"] for r in rows],
        "posts": [r["posts"] for r in rows],
        "n_posts": [len(r["posts"]) for r in rows],
        "n_tokens": [r["n_tokens"] for r in rows],
        "source": [r["source"] for r in rows],
    }
    table = pa.table(columns, schema=HISTORY_COLUMNS)
    keys = metadata.names if metadata is not None else sorted({k for r in rows for k in r["meta"]})
    for key in keys:
        if key in HISTORY_COLUMNS.names:
            continue
        values = [r["meta"].get(key) for r in rows]
        field_type = metadata.field(key).type if metadata is not None else pa.string()
        table = table.append_column(pa.field(key, field_type), pa.array(values, field_type))
    return table


# ------------------------------------------------------------------------------ summary


@dataclass
class IngestSummary:
    """Counts of one ingest run; `check()` raises if they do not add up."""

    counts: Counter[str]
    errors: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    out: str = ""

    @property
    def files_found(self) -> int:
        return self.counts["files_found"]

    def check(self) -> None:
        c = self.counts
        problems = []
        if c["files_read"] + c["files_failed"] != c["files_found"]:
            problems.append("files found != read + failed")
        posts_accounted = (
            c["posts_empty"]
            + c["posts_in_windows"]
            + c["posts_outside_windows"]
            + c["posts_of_skipped_users"]
        )
        if posts_accounted != c["posts_read"]:
            problems.append(f"posts read {c['posts_read']} != accounted {posts_accounted}")
        if problems:
            raise PersonagenError("ingest counts do not add up: " + "; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "wall_s": round(self.wall_s, 3),
            "counts": {key: self.counts[key] for _, key in SUMMARY_ROWS}
            | dict(sorted(self.counts.items())),
            "errors": len(self.errors),
        }


SUMMARY_ROWS = [
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


# ------------------------------------------------------------------------------ the stage


def resolve_inputs(src: str | Path, fmt: str) -> tuple[list[Path], str]:
    """The input files under `src` and their format (`auto` detected from the extensions)."""
    files = list_inputs(src, fmt)
    return files, detect_format(files) if fmt == "auto" else fmt


def metadata_schema(fmt: str) -> pa.Schema | None:
    """Typed metadata columns of a format (blogs); None = free columns carried as strings."""
    return BLOG_METADATA if fmt == "blogs-xml" else None


READ_TASK_BYTES = 16 * 2**20
"""Input bytes one read task takes on (one file may exceed it). A task holds its files' posts
as Python rows, ~40 times the size of compressed Parquet input (bench_build_scale)."""


def read_blocks(sizes: list[int], cpus: int) -> int:
    """Read tasks for input files of these sizes: four per CPU, or more for a large input, so
    that a task's memory follows READ_TASK_BYTES rather than the input's size (with a fixed
    count each task took 1/8 of the files on 2 CPUs: 125 Parquet files of 1,000 users at 1M
    users); at most one per file."""
    by_size = math.ceil(sum(sizes) / READ_TASK_BYTES)
    return max(1, min(len(sizes), max(4 * cpus, by_size)))


def ingest_rows(files: list[Path], fmt: str, cfg: IngestConfig) -> Any:
    """The ingest operators as a Ray dataset of (kind, user_id, payload) rows (see `read_files`):
    read files -> [group posts by user] -> window and redact. Local Ray or a cluster."""
    import ray

    from personagen.cluster import available_cpus

    cpus = available_cpus()
    blocks = read_blocks([p.stat().st_size for p in files], cpus)
    ds = ray.data.from_items([{"path": str(p)} for p in files], override_num_blocks=blocks)
    ds = ds.map_batches(read_files, fn_kwargs={"fmt": fmt}, batch_format="numpy", batch_size=None)
    if fmt != "blogs-xml":
        ds = _group_post_rows(ds, partitions=max(1, min(len(files), 4 * cpus)))
    return ds.map_batches(
        prepare_users, fn_kwargs={"cfg": cfg}, batch_format="numpy", batch_size=None
    )


def ingest(src: str | Path, out: str | Path, cfg: Config, fmt: str | None = None) -> IngestSummary:
    """Ingest `src` into `out/histories` (replacing an earlier ingest there)."""
    from personagen.cluster import init_ray
    from personagen.raydata import CountingPartSink

    start = time.perf_counter()
    files, fmt = resolve_inputs(src, fmt or cfg.ingest.format)
    out = Path(out).resolve()  # workers write there, and their working folder is not ours
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".{HISTORIES_DIR}.staging"
    shutil.rmtree(staging, ignore_errors=True)

    init_ray(cfg.ray)
    metadata = metadata_schema(fmt)
    sink = CountingPartSink(staging, lambda table: split_for_sink(table, metadata))
    ingest_rows(files, fmt, cfg.ingest).write_datasink(sink)

    final = out / HISTORIES_DIR
    shutil.rmtree(final, ignore_errors=True)
    if staging.exists():
        staging.rename(final)
    counts = sink.counts
    counts["files_found"] = len(files)
    errors = sorted(sink.records, key=lambda e: (e["path"], e["reason"]))
    summary = IngestSummary(counts, errors, time.perf_counter() - start, str(out))
    write_reports(out, summary, cfg)
    summary.check()
    return summary


def _group_post_rows(ds: Any, partitions: int) -> Any:
    """Posts of one user may sit in several files: group them (one shuffle, one read)."""
    grouped = ds.groupby("user_id", num_partitions=partitions)
    return grouped.map_groups(group_posts, batch_format="numpy")


def write_reports(out: Path, summary: IngestSummary, cfg: Config) -> None:
    with (out / "errors.jsonl").open("w", encoding="utf-8") as fh:
        for error in summary.errors:
            fh.write(
                json.dumps({"path": error["path"], "reason": error["reason"]}, ensure_ascii=False)
                + "\n"
            )
    report = summary.as_dict() | {"config": {"ingest": cfg.masked()["ingest"]}}
    (out / "summary.json").write_text(json.dumps(report, indent=2), encoding="utf-8")


def read_histories(folder: str | Path) -> pa.Table:
    """An ingest output folder (or its histories/ subfolder) as one table (for tests and tools)."""
    import pyarrow.dataset as pds

    folder = Path(folder)
    if (folder / HISTORIES_DIR).is_dir():
        folder = folder / HISTORIES_DIR
    files = sorted(str(p) for p in folder.glob("*.parquet"))
    if not files:
        raise PersonagenError(f"no histories in {folder} (run `personagen ingest` first)")
    schemas = [pds.dataset(f).schema for f in files]
    return pds.dataset(files, schema=pa.unify_schemas(schemas)).to_table()
