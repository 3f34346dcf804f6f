"""Progress of distributed stages, two ways.

- `progress_counter`: workers add counters (rows, failures, tokens, requests, cache hits) to a
  `ProgressCounter` Ray actor with fire-and-forget calls, and set their levels (requests in
  flight, their limit, latency, the oldest one's wait); a driver thread logs one line per stage
  every few seconds with rows/s, ETA and, while requests are out, how they fare (so that a run
  whose requests queue or time out shows it while it happens). For the LLM stages, whose costs
  only they know.
- `run_with_progress`: runs a Ray Data write in a worker thread and polls the Parquet footers of
  the part files that appeared since it started: rows safely on disk, rows/s and ETA in a bar.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

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

log = logging.getLogger(__name__)
T = TypeVar("T")


class ProgressCounter:
    """Sums named counters, keeps records (e.g. errors) and each worker's latest levels; made a
    Ray actor by `progress_counter()`."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.kept: list[dict[str, Any]] = []
        self.levels: dict[tuple[str, str], dict[str, float]] = {}

    def add(self, counts: dict[str, int], records: list[dict[str, Any]] | None = None) -> None:
        self.counts.update(counts)
        self.kept.extend(records or [])

    def level(self, stage: str, worker: str, values: dict[str, float]) -> None:
        """A worker's levels of `stage` now (see `AdaptiveLimit.snapshot`): replaced, not added."""
        self.levels[stage, worker] = values

    def get(self) -> dict[str, float]:
        """The counters, and per stage its workers' levels: requests in flight, their limits
        and ceilings summed, the latency averaged, the oldest request's wait at most."""
        out: dict[str, float] = dict(self.counts)
        stages = {stage for stage, _ in self.levels}
        for stage in stages:
            levels = [v for (s, _), v in self.levels.items() if s == stage]
            for name in ("in_flight", "limit", "ceiling"):
                out[f"{stage}:{name}"] = sum(v[name] for v in levels)
            latencies = [v["latency_s"] for v in levels if v["latency_s"] > 0]
            out[f"{stage}:latency_s"] = sum(latencies) / len(latencies) if latencies else 0.0
            out[f"{stage}:oldest_s"] = max(v["oldest_s"] for v in levels)
        return out

    def records(self) -> tuple[dict[str, int], list[dict[str, Any]]]:
        return dict(self.counts), list(self.kept)


def progress_line(stage: str, counts: dict[str, float], total: int, elapsed: float) -> str:
    """One stage's progress. Rows the stage passes over (failed or filtered by an earlier
    stage) count as done; the rate and the ETA are those of the rows it processes. With the
    workers' levels (endpoint stages): the requests in flight, their limit (adaptive, up to the
    configured concurrency), the recent answers' latency and the oldest request's wait."""
    processed = counts.get(f"{stage}:rows", 0)
    skipped = counts.get(f"{stage}:skipped", 0)
    done = processed + skipped
    if not total and not done:
        return f"{stage}: waiting for input rows"
    failed = counts.get(f"{stage}:failed", 0)
    rate = processed / elapsed if elapsed > 0 else 0.0
    eta = 0.0 if done >= total else (total - done) / rate if rate > 0 else None
    tokens = counts.get(f"{stage}:prompt_tokens", 0) + counts.get(f"{stage}:completion_tokens", 0)
    parts = [
        f"{stage}: {done:,}/{total:,} rows ({100 * done / max(total, done):.0f}%)",
        f"{failed:,} failed",
        *([f"{skipped:,} passed over"] if skipped else []),
        f"{rate:.2f} rows/s",
        f"{tokens:,} tokens ({tokens / elapsed if elapsed > 0 else 0:,.0f}/s)",
        f"{counts.get(f'{stage}:requests', 0):,} requests",
        *_flight(stage, counts),
        f"{counts.get(f'{stage}:cache_hits', 0):,} cached",
        f"ETA {_duration(eta)}",
    ]
    return ", ".join(parts)


def _flight(stage: str, counts: dict[str, float]) -> list[str]:
    """The parts of a progress line about the requests in flight (none without levels)."""
    if f"{stage}:limit" not in counts:
        return []
    flying, limit, ceiling = (counts[f"{stage}:{k}"] for k in ("in_flight", "limit", "ceiling"))
    return [
        f"{flying:.0f} in flight (limit {limit:.0f} of {ceiling:.0f})",
        f"latency {counts[f'{stage}:latency_s']:.1f}s",
        f"oldest waiting {counts[f'{stage}:oldest_s']:.0f}s",
    ]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


@contextlib.contextmanager
def progress_counter(
    stages: list[str], totals: dict[str, int] | None, interval_s: float
) -> Iterator[Any]:
    """A counter actor for the workers, and a driver thread that logs it every `interval_s`.

    Without `totals` (a stream whose size is known only as its input is read), a stage's total
    is the rows that have entered the stream so far (`build:todo`).
    """
    import ray

    actor = ray.remote(num_cpus=0)(ProgressCounter).remote()
    stop = threading.Event()
    start = time.monotonic()

    def report() -> None:
        while not stop.wait(interval_s):
            try:
                counts = ray.get(actor.get.remote(), timeout=interval_s)
            except Exception:  # progress is best effort; never fail the stage over it
                continue
            for stage in stages:
                total = totals[stage] if totals else counts.get("build:todo", 0)
                log.info(progress_line(stage, counts, total, time.monotonic() - start))

    thread = threading.Thread(target=report, name="progress", daemon=True)
    thread.start()
    try:
        yield actor
    finally:
        stop.set()
        thread.join(timeout=interval_s)
        ray.kill(actor)


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
