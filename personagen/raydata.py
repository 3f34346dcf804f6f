"""Thin Ray Data glue shared by the stages: an atomic Parquet part sink that also counts.

Stages stream their rows into `CountingPartSink`: each write task writes its rows as one Parquet
part (temp name, then rename, via `personagen.io.bank.write_part`) and returns counters, which the
driver sums. Counting in the sink is what lets every run summary say rows in = out + failed
without a second pass over the data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
from ray.data import Datasink
from ray.data.block import BlockAccessor

from personagen.io.bank import write_part

Splitter = Callable[[pa.Table], tuple[pa.Table | None, Counter[str], list[dict[str, Any]]]]
"""Turns one block into (rows to write, counters, side records such as errors)."""


class CountingPartSink(Datasink[dict[str, Any]]):
    def __init__(self, folder: str | Path, split: Splitter) -> None:
        self.folder = str(folder)
        self.split = split
        self.counts: Counter[str] = Counter()
        self.records: list[dict[str, Any]] = []

    def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, Any]:
        counts: Counter[str] = Counter()
        records: list[dict[str, Any]] = []
        tables = []
        for block in blocks:
            table = BlockAccessor.for_block(block).to_arrow()
            if table.num_rows == 0:
                continue  # e.g. empty partitions of a shuffle, which carry no columns
            rows, block_counts, block_records = self.split(table)
            counts.update(block_counts)
            records.extend(block_records)
            if rows is not None and rows.num_rows:
                tables.append(rows)
        if tables:
            write_part(self.folder, pa.concat_tables(tables, promote_options="permissive"))
        return {"counts": dict(counts), "records": records}

    def on_write_complete(self, write_result: Any) -> None:
        for result in write_result.write_returns:
            self.counts.update(result["counts"])
            self.records.extend(result["records"])

    def get_name(self) -> str:
        return f"Write({Path(self.folder).name})"
