"""The ingest stage: input files -> cleaned, windowed, redacted history rows.

Batch functions over the stream (the Ray Data wiring is `personagen.runtime.ingest`):
    file paths -> read_files [-> group_posts by user] -> prepare_users (window + redact)
               -> split_for_sink (history rows, counts, error records)
Rows carry a `kind` (user | post | history | skip | file | error), so that errors and per-file
counts travel with the data instead of through side channels, and every input file ends as
rows or as an error record.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from personagen.config import IngestConfig
from personagen.io.histories import (
    BLOG_METADATA,
    HISTORY_COLUMNS,
    assemble_user,
    detect_format,
    history_id,
    list_inputs,
    read_file,
)
from personagen.text.redact import redact
from personagen.text.windowing import count_tokens, window_posts

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


# ------------------------------------------------------------------------------ inputs


def resolve_inputs(src: str | Path, fmt: str) -> tuple[list[Path], str]:
    """The input files under `src` and their format (`auto` detected from the extensions)."""
    files = list_inputs(src, fmt)
    return files, detect_format(files) if fmt == "auto" else fmt


def metadata_schema(fmt: str) -> pa.Schema | None:
    """Typed metadata columns of a format (blogs); None = free columns carried as strings."""
    return BLOG_METADATA if fmt == "blogs-xml" else None


def grouped_by_user(fmt: str) -> bool:
    """Whether one input file holds whole users (a blog file is one blogger), so that its rows
    need no grouping across files."""
    return fmt == "blogs-xml"
