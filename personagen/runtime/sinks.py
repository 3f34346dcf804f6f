"""The one Ray Datasink of personagen: atomic Parquet parts under a folder, with counters.

Every stream ends in a `PartSink`: each write task routes its blocks with a `Split` (rows per
sub-folder, counters, side records such as errors), writes each sub-folder's rows as one Parquet
part (temp name, then rename, via `personagen.io.bank.write_part`), and returns the counters,
which the driver sums. Counting in the sink is what lets every run summary say rows in = out +
failed without a second pass over the data.

`stage_split` is the Split of the LLM (and embed) stages: each stage's successful rows go to its
bank group, failed rows to `failures` (see `split_stage_rows`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from ray.data import Datasink
from ray.data.block import BlockAccessor

from personagen.io.bank import GROUPS, conform_group, failure_rows, write_part
from personagen.io.histories import HISTORY_COLUMNS
from personagen.llm.usage import USAGE_FIELDS

Split = Callable[[pa.Table], tuple[dict[str, pa.Table], Counter[str], list[dict[str, Any]]]]
"""One block -> (rows per sub-folder of the sink's root; "" = the root), counters, records."""


class PartSink(Datasink[dict[str, Any]]):
    """Writes each write task's rows as one part per sub-folder; `counts` and `records` add up
    every task's on the driver. `min_rows`: rows a write task waits for (blocks bundled), so
    that small blocks do not each cost a task and a file per sub-folder."""

    def __init__(
        self, root: str | Path, split: Split, name: str, min_rows: int | None = None
    ) -> None:
        self.root = str(root)
        self.split = split
        self.name = name
        self.min_rows = min_rows
        self.counts: Counter[str] = Counter()
        self.records: list[dict[str, Any]] = []

    @property
    def min_rows_per_write(self) -> int | None:
        return self.min_rows

    def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, Any]:
        counts: Counter[str] = Counter()
        records: list[dict[str, Any]] = []
        parts: dict[str, list[pa.Table]] = {}
        for block in blocks:
            table = BlockAccessor.for_block(block).to_arrow()
            if table.num_rows == 0:
                continue  # e.g. empty partitions of a shuffle, which carry no columns
            routed, block_counts, block_records = self.split(table)
            counts.update(block_counts)
            records.extend(block_records)
            for folder, rows in routed.items():
                if rows is not None and rows.num_rows:
                    parts.setdefault(folder, []).append(rows)
        for folder, tables in parts.items():
            table = pa.concat_tables(tables, promote_options="permissive")
            write_part(Path(self.root) / folder, table)
        return {"counts": dict(counts), "records": records}

    def on_write_complete(self, write_result: Any) -> None:
        for result in write_result.write_returns:
            self.counts.update(result["counts"])
            self.records.extend(result["records"])

    def get_name(self) -> str:
        return f"Write({self.name})"


# ---------------------------------------------------------------------------- stage rows

Plan = list[tuple[str, ...]]
"""(stage, bank group, id column[, after]) in stage order: where each stage's rows go, which
column names a failed row in `failures`, and which earlier stage a row must have passed to reach
this one (default: the stage before it; `None` as the fourth element: every row)."""


def split_stage_rows(
    table: pa.Table, plan: Plan, instruments: dict[str, str] | None = None
) -> tuple[dict[str, pa.Table], pa.Table | None, Counter[str]]:
    """Route one block: for each stage in order, rows that reached the stage go to its group
    (success) or to failures (with the stage's reason and attempts, and for a stage in
    `instruments` the instrument it scored with)."""
    counts: Counter[str] = Counter()
    everyone = pa.array([True] * table.num_rows)
    passed: dict[str | None, pa.Array] = {None: everyone}
    groups: dict[str, pa.Table] = {}
    failures = []
    previous: str | None = None
    for stage, group, id_column, *gate in plan:
        alive = passed[gate[0] if gate else previous]
        errors = table.column(f"{stage}__error")
        taken = pc.and_(alive, pc.is_valid(table.column(f"{stage}__attempts")))
        ok = pc.and_(taken, pc.is_null(errors))
        failed = pc.and_(taken, pc.is_valid(errors))
        counts[f"{stage}:in"] += pc.sum(taken).as_py() or 0
        counts[f"{stage}:out"] += pc.sum(ok).as_py() or 0
        counts[f"{stage}:failed"] += pc.sum(failed).as_py() or 0
        skipped = pc.sum(pc.and_(alive, pc.invert(taken))).as_py() or 0
        if skipped:
            counts[f"{stage}:skipped"] += skipped
        reached = table.filter(taken)
        for name in USAGE_FIELDS:
            counts[f"{stage}:{name}"] += pc.sum(reached.column(f"{stage}__{name}")).as_py() or 0
        bad = table.filter(failed)
        for reason in bad.column(f"{stage}__error").to_pylist():
            counts[f"{stage}:failed:{_reason_kind(reason)}"] += 1
        if bad.num_rows:
            failures.append(
                failure_rows(
                    bad.column(id_column).to_pylist(),
                    stage,
                    bad.column(f"{stage}__error").to_pylist(),
                    bad.column(f"{stage}__attempts").to_pylist(),
                    (instruments or {}).get(stage),
                )
            )
        groups[group] = conform_group(table.filter(ok), group)
        passed[stage] = ok
        previous = stage
    failed_table = pa.concat_tables(failures) if failures else None
    return groups, failed_table, counts


def history_part(table: pa.Table, plan: Plan) -> pa.Table:
    """The columns of `table` that came in with the history rows (no stage's output)."""
    added = {name for _, group, *_ in plan for name in GROUPS[group].names}
    added -= set(HISTORY_COLUMNS.names)
    prefixes = tuple(f"{step[0]}__" for step in plan)
    return table.select(
        [n for n in table.column_names if n not in added and not n.startswith(prefixes)]
    )


def stage_split(
    plan: Plan, history_columns: bool = False, instruments: dict[str, str] | None = None
) -> Split:
    """The Split of a chain of stages into a bank: each stage's group, `failures` (see
    `split_stage_rows`), and with `history_columns` every row's history columns into
    `histories` (so the bank keeps the posts its personas were mined from)."""

    def split(table: pa.Table) -> tuple[dict[str, pa.Table], Counter[str], list[dict[str, Any]]]:
        groups, failed, counts = split_stage_rows(table, plan, instruments)
        if history_columns:
            groups["histories"] = history_part(table, plan)
        if failed is not None:
            groups["failures"] = failed
        return groups, counts, []

    return split


def _reason_kind(reason: str) -> str:
    """A short class of a failure reason, for the summary (e.g. 'HTTP 400', 'timeout')."""
    for kind in ("invalid answer", "timeout", "connection error"):
        if reason.startswith(kind):
            return kind
    if reason.startswith("HTTP "):
        return reason.split(":", 1)[0]
    return reason.split(":", 1)[0][:40]
