"""The ingest operators on Ray Data: input files -> history rows (with counts and errors).

    read tasks -> read_histories                            users held whole by one read task
    read tasks -> read_parts -> group by user -> finish_parts   users spanning read tasks
The batch functions are `personagen.stages.ingest`; this module cuts the files into read tasks,
finds the users that span them (`ingest.grouped`) and sends only those through the group-by.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from personagen.config import IngestConfig
from personagen.io.histories import HISTORY_COLUMNS
from personagen.runtime.cluster import available_cpus, ray_map
from personagen.stages.ingest import (
    finish_parts,
    metadata_schema,
    read_histories,
    read_parts,
    spanning_keys,
    split_for_sink,
    user_keys,
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


def read_tasks(sizes: list[int], cpus: int) -> list[range]:
    """The input files (by place) cut into `read_blocks` runs of consecutive files: a user
    whose files are neighbours (sorted names of an export sharded by user) stays in one task."""
    bounds = np.linspace(0, len(sizes), read_blocks(sizes, cpus) + 1).round().astype(int)
    return [range(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def ingest_rows(files: list[Path], fmt: str, cfg: IngestConfig) -> Any:
    """The ingest as a Ray dataset of `INGEST_ROWS` blocks (history rows, counts, errors).

    Users held whole by one read task are finished in it; only the users found in several
    (`ingest.grouped: auto`), or every user (`false`), go through the group-by; with `true`
    the input is trusted to hold each user in one file (see `spanning_keys`).
    """
    cpus = available_cpus()
    tasks = [
        {"paths": [str(files[i]) for i in run], "first": run.start}
        for run in read_tasks([p.stat().st_size for p in files], cpus)
    ]
    partitions = max(1, min(len(files), 4 * cpus))
    if cfg.grouped is True:
        return _read(tasks, read_histories, fmt=fmt, cfg=cfg)
    keys = [] if cfg.grouped is False else ray_map(lambda t: user_keys(t["paths"], fmt), tasks)
    spanning = None if cfg.grouped is False else spanning_keys(keys)
    if spanning is None:
        return _group(_read(tasks, read_parts, fmt=fmt, records=True), cfg, partitions)
    histories = _read(tasks, read_histories, fmt=fmt, cfg=cfg, spanning=spanning)
    if not len(spanning):
        return histories
    mixed = [t for t, k in zip(tasks, keys, strict=True) if np.isin(k, spanning).any()]
    parts = _read(mixed, read_parts, fmt=fmt, spanning=spanning)
    return histories.union(_group(parts, cfg, partitions))


def _read(tasks: list[dict[str, Any]], fn: Callable[..., pa.Table], **kwargs: Any) -> Any:
    """`fn` over the read tasks, one Ray task each."""
    import ray

    ds = ray.data.from_items(tasks, override_num_blocks=len(tasks))
    return ds.map_batches(fn, fn_kwargs=kwargs, batch_format="pyarrow", batch_size=None)


def _group(parts: Any, cfg: IngestConfig, partitions: int) -> Any:
    """Parts grouped by user (one shuffle) -> history rows."""
    grouped = parts.groupby("user_id", num_partitions=partitions)
    return grouped.map_groups(finish_parts, fn_kwargs={"cfg": cfg}, batch_format="pyarrow")


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
