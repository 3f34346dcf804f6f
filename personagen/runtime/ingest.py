"""The ingest operators on Ray Data: input files -> (kind, user_id, payload) rows -> histories.

    file paths -> read_files [-> group_posts by user, one shuffle] -> prepare_users
The batch functions are `personagen.stages.ingest`; this module decides how the files are cut
into read tasks and when posts must be grouped across files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from personagen.config import IngestConfig
from personagen.io.histories import HISTORY_COLUMNS
from personagen.runtime.cluster import available_cpus
from personagen.stages.ingest import (
    group_posts,
    grouped_by_user,
    metadata_schema,
    prepare_users,
    read_files,
    split_for_sink,
)

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
    """The ingest operators as a Ray dataset of (kind, user_id, payload) rows (see
    `read_files`): read files -> [group posts by user] -> window and redact."""
    import ray

    cpus = available_cpus()
    blocks = read_blocks([p.stat().st_size for p in files], cpus)
    ds = ray.data.from_items([{"path": str(p)} for p in files], override_num_blocks=blocks)
    ds = ds.map_batches(read_files, fn_kwargs={"fmt": fmt}, batch_format="numpy", batch_size=None)
    if not grouped_by_user(fmt):
        # Posts of one user may sit in several files: group them (one shuffle, one read).
        grouped = ds.groupby("user_id", num_partitions=max(1, min(len(files), 4 * cpus)))
        ds = grouped.map_groups(group_posts, batch_format="numpy")
    return ds.map_batches(
        prepare_users, fn_kwargs={"cfg": cfg}, batch_format="numpy", batch_size=None
    )


def parquet_rows(files: list[str], schema: pa.Schema, columns: list[str] | None = None) -> Any:
    """Histories Parquet files as a Ray dataset (all `schema`'s columns, or `columns`)."""
    import ray

    ds = ray.data.read_parquet(files, schema=schema)
    return ds if columns is None else ds.select_columns(columns)


def history_rows(
    table: pa.Table, metadata: pa.Schema | None, done: pa.Array, ledger: Any
) -> pa.Table:
    """Ingest rows (kind, user_id, payload) -> the history rows not finished yet.

    The ingest's counts and errors go to the `ledger` actor, beside the data rather than
    through it (one call per block, waited for, so none is outstanding when the stream ends);
    the driver writes them out at the end.
    """
    import ray

    histories, counts, errors = split_for_sink(table, metadata)
    if histories is None:
        histories = HISTORY_COLUMNS.empty_table()
    todo = histories.filter(pc.invert(pc.is_in(histories.column("history_id"), value_set=done)))
    counts["build:already_done"] += histories.num_rows - todo.num_rows
    counts["build:todo"] += todo.num_rows
    ray.get(ledger.add.remote(dict(counts), errors))  # waited for: these counts must all land
    return todo


def ingested(
    files: list[Path], fmt: str, cfg: IngestConfig, fn: Callable[[pa.Table], pa.Table]
) -> pa.Table:
    """`fn` over the history rows the ingest makes of `files`, its tables collected here."""
    import ray

    metadata = metadata_schema(fmt)

    def histories(table: pa.Table) -> pa.Table:
        rows, _, _ = split_for_sink(table, metadata)
        return fn(rows if rows is not None else HISTORY_COLUMNS.empty_table())

    ds = ingest_rows(files, fmt, cfg).map_batches(
        histories, batch_format="pyarrow", batch_size=None
    )
    tables = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    return pa.concat_tables(tables) if tables else fn(HISTORY_COLUMNS.empty_table())
