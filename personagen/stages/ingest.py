"""The ingest stage: input files -> cleaned, windowed, redacted history rows.

Batch functions over the stream (the Ray Data wiring is `personagen.runtime.ingest`). The input
files are cut into read tasks (runs of consecutive files); a read task groups its users' posts
itself, so a user whose posts all lie in one read task needs no shuffle:

    read task -> read_histories: history rows of the users it holds whole
    read task -> read_parts: parts of the users that span read tasks
              -> group by user (one shuffle) -> finish_parts: history rows

Which users span read tasks is found before reading, from the user ids alone (`user_keys`,
`spanning_keys`: file names for the blog corpus, the `user_id` column of Parquet). A part is a
user's posts from one read task; `merge_parts` joins parts in input order, so a user's history
is the same whichever path made it, and never two partial histories. Rows carry a `kind`
(history | part | counts | error), so that counts and errors travel with the data instead of
through side channels, and every input file ends as rows or as an error record.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from personagen.config import IngestConfig
from personagen.io.blogs import chronological, clean_post_text, parse_file_name
from personagen.io.histories import (
    BLOG_METADATA,
    HISTORY_COLUMNS,
    FileRead,
    check_parquet_inputs,
    detect_format,
    history_id,
    list_inputs,
    read_file,
)
from personagen.text.redact import redact
from personagen.text.windowing import POST_OVERHEAD, count_tokens, window_posts

NO_USER = ""
"""User id of rows that belong to no user (counts, errors); real ids are never empty."""

INGEST_ROWS = pa.schema(
    [
        ("kind", pa.string()),
        *HISTORY_COLUMNS,
        ("meta", pa.string()),
        ("payload", pa.string()),
    ]
)
"""The ingest's blocks: history rows (the history columns, metadata as JSON in `meta`), and
rows of another kind with their JSON `payload` (counts, an error record, a part)."""

NO_KEYS = np.zeros(0, np.uint64)
USERS_PER_BLOCK = 128
"""Users per block a read task yields (a 1,000-user Parquet file is one read task)."""

# ---------------------------------------------------------------------------- who spans


def user_key(user_id: str) -> int:
    """A user id as a 64-bit key, the same in every process (Python's `hash` is not)."""
    return int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest(), "little")


def user_keys(paths: list[str], fmt: str) -> np.ndarray:
    """The keys of the users in these files (unique, sorted), from as little of them as tells
    who is in them: blog file names, Parquet's `user_id` column, JSONL fully parsed. A file
    that cannot be read contributes nothing (the read records it)."""
    ids: set[str] = set()
    for path in paths:
        try:
            if fmt == "blogs-xml":
                ids.add(str(parse_file_name(Path(path).name)["user_id"]))
            elif fmt == "parquet":
                column = pq.read_table(path, columns=["user_id"]).column("user_id")
                ids.update(str(u) for u in column.to_pylist() if u is not None)
            else:
                ids.update(post["user_id"] for post in read_file(Path(path), fmt).posts)
        except Exception:  # the read task records why
            continue
    return np.unique(np.fromiter((user_key(u) for u in ids), np.uint64, len(ids)))


def spanning_keys(per_task: list[np.ndarray]) -> np.ndarray | None:
    """Keys found in more than one read task (each task's keys unique): the users whose posts
    only a group-by can bring together; None when they are more than half the users, for whom
    one group-by of everything is cheaper than reading their files twice. A key collision
    only sends a user through the group-by needlessly."""
    if not per_task:
        return NO_KEYS
    keys, tasks = np.unique(np.concatenate(per_task), return_counts=True)
    spanning = keys[tasks > 1]
    return None if 2 * len(spanning) > len(keys) else spanning


# ---------------------------------------------------------------------------- user parts


@dataclass
class Part:
    """A user's posts from some input files: cleaned, empty ones dropped (counted), in file
    order; `order` is its first file's place among the inputs."""

    user_id: str
    order: int
    posts: list[dict[str, Any]]
    n_posts_raw: int
    n_empty: int
    meta: dict[str, Any]
    sources: list[str]


def file_parts(read: FileRead, path: str, order: int) -> list[Part]:
    """One part per user of a file read, in the order the file first names them."""
    parts = [
        Part(
            user["user_id"],
            order,
            user["posts"],
            user["n_posts_raw"],
            user["n_empty"],
            {k: v for k, v in user["meta"].items() if v is not None},
            [path],
        )
        for user in read.users
    ]
    by_user: dict[str, Part] = {}
    for post in read.posts:
        part = by_user.get(post["user_id"])
        if part is None:
            part = by_user[post["user_id"]] = Part(post["user_id"], order, [], 0, 0, {}, [path])
        part.meta.update({k: v for k, v in post["meta"].items() if v is not None})
        part.n_posts_raw += 1
        text = clean_post_text(post["text"] or "")
        if text:
            part.posts.append({"date": post["date"], "text": text})
        else:
            part.n_empty += 1
    return parts + list(by_user.values())


def merge_parts(parts: list[Part]) -> Part:
    """One part of a user's parts, joined in input order (later metadata wins), so that the
    result does not depend on how the parts were cut or in which order they arrived."""
    if len(parts) == 1:
        return parts[0]
    parts = sorted(parts, key=lambda p: p.order)
    merged = Part(parts[0].user_id, parts[0].order, [], 0, 0, {}, [])
    for part in parts:
        merged.posts += part.posts
        merged.n_posts_raw += part.n_posts_raw
        merged.n_empty += part.n_empty
        merged.meta.update(part.meta)
        merged.sources += part.sources
    return merged


# ---------------------------------------------------------------------------- read tasks


def read_histories(
    batch: pa.Table, fmt: str, cfg: IngestConfig, spanning: np.ndarray = NO_KEYS
) -> Iterator[pa.Table]:
    """A read task (rows of `paths` and `first`, the first file's place among the inputs) ->
    history rows of its users, each user's posts from all its files, and the task's counts and
    errors; users in `spanning` are left to `read_parts`. Yielded every USERS_PER_BLOCK users,
    so that the first rows reach the LLM stages before the task's last user is windowed."""
    rows = _Rows()
    skip = {int(k) for k in spanning}
    users = 0
    for user_id, parts in _task_parts(batch, fmt, rows).items():
        if skip and user_key(user_id) in skip:
            continue
        rows.user(merge_parts(parts), cfg)
        users += 1
        if users % USERS_PER_BLOCK == 0:
            yield rows.table()
            rows = _Rows()
    yield rows.table()


def read_parts(
    batch: pa.Table, fmt: str, spanning: np.ndarray | None = None, records: bool = False
) -> pa.Table:
    """A read task -> one part row per user in `spanning` (None: every user), for the group-by;
    with `records`, also the task's per-file counts and errors (else `read_histories` of the
    same files gives them)."""
    rows = _Rows()
    wanted = None if spanning is None else {int(k) for k in spanning}
    for user_id, parts in _task_parts(batch, fmt, rows if records else _Rows()).items():
        if wanted is None or user_key(user_id) in wanted:
            rows.part(merge_parts(parts))
    return rows.table()


def finish_parts(group: pa.Table, cfg: IngestConfig) -> pa.Table:
    """One group of the group-by: a user's parts -> its history rows (counts and errors, the
    group of no user, pass through)."""
    if group.num_rows == 0 or group.column("user_id")[0].as_py() == NO_USER:
        return group
    parts = [Part(**json.loads(p)) for p in group.column("payload").to_pylist()]
    rows = _Rows()
    rows.user(merge_parts(parts), cfg)
    return rows.table()


def _task_parts(batch: pa.Table, fmt: str, rows: _Rows) -> dict[str, list[Part]]:
    """Every user's parts in a read task's files (one per file), in input order; files read,
    failed and bad records are counted and recorded in `rows`."""
    parts: dict[str, list[Part]] = {}
    for task in batch.to_pylist():
        for order, path in enumerate(task["paths"], start=task["first"]):
            try:
                read = read_file(Path(path), fmt)
            except Exception as exc:  # a file that cannot be read is recorded
                rows.error(path, f"{type(exc).__name__}: {exc}", "file")
                continue
            rows.counts["files_read"] += 1
            rows.counts[f"encoding:{read.encoding}"] += 1
            for reason in read.errors:
                rows.error(path, reason, "record")
            for part in file_parts(read, path, order):
                parts.setdefault(part.user_id, []).append(part)
    return parts


class _Rows:
    """The rows one batch function makes, column by column, and its counts (one counts row)."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in INGEST_ROWS.names}
        self.counts: Counter[str] = Counter()

    def add(self, kind: str, user_id: str, payload: dict[str, Any] | None, **values: Any) -> None:
        values |= {"kind": kind, "user_id": user_id}
        values["payload"] = None if payload is None else json.dumps(payload, ensure_ascii=False)
        for name, column in self.columns.items():
            column.append(values.get(name))

    def error(self, path: str, reason: str, scope: str) -> None:
        self.counts["files_failed" if scope == "file" else "records_failed"] += 1
        self.add("error", NO_USER, {"path": path, "reason": reason, "scope": scope})

    def part(self, part: Part) -> None:
        self.add("part", part.user_id, asdict(part))

    def user(self, part: Part, cfg: IngestConfig) -> None:
        """A user's history rows: windowed, then redacted (tokens recounted only where
        redaction changed a post); a user with too few posts is counted as skipped."""
        counts = self.counts
        counts["posts_read"] += part.n_posts_raw
        counts["posts_empty"] += part.n_empty
        posts = chronological(part.posts)
        if len(posts) < cfg.min_posts or not posts:
            counts["users_skipped"] += 1
            counts["posts_of_skipped_users"] += len(posts)
            return
        win = cfg.window
        windowing = window_posts(posts, win.strategy, win.max_tokens, win.max_windows)
        counts["posts_outside_windows"] += windowing.n_posts_dropped
        counts["posts_truncated"] += windowing.n_posts_truncated
        counts["users_with_history"] += 1
        sources = sorted(set(part.sources))
        source = sources[0] if len(sources) == 1 else f"{sources[0]} (+{len(sources) - 1})"
        meta = json.dumps(part.meta, ensure_ascii=False)
        for window in windowing.windows:
            redacted, n_tokens = [], 0
            for post, tokens in zip(window.posts, window.post_tokens, strict=True):
                text = post["text"] or ""
                if cfg.redact.enabled:
                    text, found = redact(text, cfg.redact.types)
                    if found:
                        counts.update({f"redacted_{k}": v for k, v in found.items()})
                        tokens = count_tokens(text) + POST_OVERHEAD
                redacted.append({"date": post["date"], "text": text})
                n_tokens += tokens - POST_OVERHEAD
            counts["windows"] += 1
            counts["posts_in_windows"] += len(redacted)
            self.add(
                "history",
                part.user_id,
                None,
                history_id=history_id(part.user_id, window.window_id),
                window_id=window.window_id,
                posts=redacted,
                n_posts=len(redacted),
                n_tokens=n_tokens,
                source=source,
                meta=meta,
            )

    def table(self) -> pa.Table:
        self.add("counts", NO_USER, dict(self.counts))
        return pa.table(self.columns, schema=INGEST_ROWS)


# ------------------------------------------------------------------------------ the sink


def split_for_sink(
    table: pa.Table, metadata: pa.Schema | None
) -> tuple[pa.Table | None, Counter[str], list[dict[str, Any]]]:
    """Route one block: history rows -> the histories table; counts rows -> counters; error
    rows -> records."""
    kinds = table.column("kind")
    counts: Counter[str] = Counter()
    for payload in table.filter(pc.equal(kinds, "counts")).column("payload").to_pylist():
        counts.update(json.loads(payload))
    errors = table.filter(pc.equal(kinds, "error")).column("payload").to_pylist()
    histories = table.filter(pc.equal(kinds, "history"))
    rows = _history_table(histories, metadata) if histories.num_rows else None
    return rows, counts, [json.loads(e) for e in errors]


def _history_table(rows: pa.Table, metadata: pa.Schema | None) -> pa.Table:
    """History rows with their metadata as columns: typed (`metadata`), else one string column
    per key the rows have."""
    table = rows.select(HISTORY_COLUMNS.names)
    metas = [json.loads(m) for m in rows.column("meta").to_pylist()]
    keys = metadata.names if metadata is not None else sorted({k for m in metas for k in m})
    for key in keys:
        if key in HISTORY_COLUMNS.names:
            continue
        field_type = metadata.field(key).type if metadata is not None else pa.string()
        values = pa.array([m.get(key) for m in metas], field_type)
        table = table.append_column(pa.field(key, field_type), values)
    return table


# ------------------------------------------------------------------------------ inputs


def resolve_inputs(src: str | Path, fmt: str) -> tuple[list[Path], str]:
    """The input files under `src` and their format (`auto` detected from the extensions)."""
    files = list_inputs(src, fmt)
    fmt = detect_format(files) if fmt == "auto" else fmt
    if fmt == "parquet":
        check_parquet_inputs(files)
    return files, fmt


def metadata_schema(fmt: str) -> pa.Schema | None:
    """Typed metadata columns of a format (blogs); None = free columns carried as strings."""
    return BLOG_METADATA if fmt == "blogs-xml" else None
