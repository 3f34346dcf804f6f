"""Progress of writes: rows counted from the parts that appear, result and errors passed on."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from personagen.io.bank import write_part
from personagen.progress import _rows_written, run_with_progress


def test_counts_new_parts_only_and_returns_the_result(tmp_path):
    write_part(tmp_path, pa.table({"x": [1, 2, 3]}))  # an earlier run's part
    before = set(tmp_path.glob("*.parquet"))

    def write():
        for n in (4, 5):
            write_part(tmp_path, pa.table({"x": list(range(n))}))
            time.sleep(0.05)
        return "done"

    assert run_with_progress(write, tmp_path, total=9, label="test", interval_s=0.01) == "done"
    assert _rows_written(tmp_path, before, {}) == 9


def test_errors_of_the_write_are_raised(tmp_path):
    def write():
        raise ValueError("disk full")

    with pytest.raises(ValueError, match="disk full"):
        run_with_progress(write, tmp_path, total=1, label="test")
