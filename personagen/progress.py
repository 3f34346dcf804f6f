"""Progress of a Ray Data write, measured where it is true: rows already persisted as parts.

Ray Data's own bars count rows through operators, which does not say what is safely on disk (and
they do not show in every console). `run_with_progress` runs the write in a worker thread and polls
the Parquet footers of the part files that appeared since it started, showing rows, rows/s and ETA.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from personagen.io.bank import part_files

T = TypeVar("T")


def run_with_progress(
    write: Callable[[], T], folder: str | Path, total: int, label: str, interval_s: float = 1.0
) -> T:
    """Call `write()` (which adds parts to `folder`), showing the rows written so far."""
    folder = Path(folder)
    before = set(part_files(folder))
    counted: dict[Path, int] = {}
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(write())
        except BaseException as exc:
            error.append(exc)

    worker = threading.Thread(target=target, name=f"write-{label}", daemon=True)
    start = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]} rows/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as progress:
        task = progress.add_task(label, total=total, rate="-")
        worker.start()
        while worker.is_alive():
            worker.join(interval_s)
            done = _rows_written(folder, before, counted)
            rate = done / max(time.perf_counter() - start, 1e-9)
            progress.update(task, completed=done, rate=f"{rate:,.1f}")
        progress.update(task, completed=_rows_written(folder, before, counted))
    if error:
        raise error[0]
    return result[0]


def _rows_written(folder: Path, before: set[Path], counted: dict[Path, int]) -> int:
    for path in part_files(folder):
        if path not in before and path not in counted:
            counted[path] = pq.read_metadata(path).num_rows
    return sum(counted.values())
