"""Live progress of a distributed stage: rows/s, tokens and ETA, from counters the workers send.

Workers add to a `ProgressCounter` Ray actor (fire-and-forget calls, no waiting); a thread on the
driver reads it every few seconds and logs one line. Ray Data's own progress bars show the
operators; this line adds what only the stage knows (failures, tokens, requests, cache hits).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)


class ProgressCounter:
    """Sums named counters; made a Ray actor by `progress_counter()`."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, counts: dict[str, int]) -> None:
        self.counts.update(counts)

    def get(self) -> dict[str, int]:
        return dict(self.counts)


def progress_line(stage: str, counts: dict[str, int], total: int, elapsed: float) -> str:
    done = counts.get(f"{stage}:rows", 0)
    failed = counts.get(f"{stage}:failed", 0)
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else None
    tokens = counts.get(f"{stage}:prompt_tokens", 0) + counts.get(f"{stage}:completion_tokens", 0)
    parts = [
        f"{stage}: {done:,}/{total:,} rows ({100 * done / total if total else 100:.0f}%)",
        f"{failed:,} failed",
        f"{rate:.2f} rows/s",
        f"{tokens:,} tokens",
        f"{counts.get(f'{stage}:requests', 0):,} requests",
        f"{counts.get(f'{stage}:cache_hits', 0):,} cached",
        f"ETA {_duration(eta)}",
    ]
    return ", ".join(parts)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


@contextlib.contextmanager
def progress_counter(stages: list[str], totals: dict[str, int], interval_s: float) -> Iterator[Any]:
    """A counter actor for the workers, and a driver thread that logs it every `interval_s`."""
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
                log.info(progress_line(stage, counts, totals[stage], time.monotonic() - start))

    thread = threading.Thread(target=report, name="progress", daemon=True)
    thread.start()
    try:
        yield actor
    finally:
        stop.set()
        thread.join(timeout=interval_s)
        ray.kill(actor)
