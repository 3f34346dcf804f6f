"""Adaptive concurrency: how many requests one client keeps in flight (AIMD).

A fixed `llm.concurrency` suits an endpoint that serves that many requests at once. A one-slot
server (llama.cpp's) answers them one after the other: the last of N waits N answers long, and
once that is longer than `llm.timeout_s` it times out and is sent again while the server, which
does not notice, computes answers nobody reads (seen: concurrency 4, 25 s per answer, a 90 s
timeout; in 14 minutes the server computed 31 answers and the client received 2). So the limit
adapts, as TCP's congestion window and most rate-limited clients do:

- multiplicative decrease: a timeout or a 429 halves it, once per round (a request sent before
  the last decrease does not lower it again: the requests of one burst fail together);
- additive increase: an answer raises it by 1/limit (one more request per round of answers).
  Until the first decrease, an answer that came back within a quarter of the timeout raises it
  by one (slow start: a fast endpoint reaches its concurrency within a few answers). Only
  answers to requests sent while the limit was used up count: the others say nothing of what
  one more request would do;
- an answer that took more than half the timeout, and longer than the fastest answer seen (so
  it waited in the server's queue), does not raise it: one more request would wait longer still;
- never above `llm.concurrency`, never below 1; it starts at 1.

`snapshot()` tells the progress lines the requests in flight, the limit, the recent latency and
how long the oldest request has been waiting, so that a stuck run shows while it happens.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["answered", "overloaded", "failed"]
"""How a request ended, for the limit: an answer, a sign of overload (timeout, 429), or another
failure (which says nothing about load)."""

QUEUED = 1.25
"""An answer slower than this many times the fastest one waited in the server's queue."""
LATENCY_WEIGHT = 0.2
"""Weight of the newest answer in the recent latency (an exponential moving average)."""


@dataclass(eq=False)
class Flight:
    """One request in flight: when it was sent, the round of the limit it was sent in, and
    whether it used up the limit."""

    started: float
    round: int
    full: bool


class AdaptiveLimit:
    """The requests in flight of one client (use from one event loop)."""

    def __init__(
        self, ceiling: int, timeout_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ceiling = ceiling
        self.timeout_s = timeout_s
        self._clock = clock
        self._window = 1.0
        self._round = 0
        self._slow_start = True
        self._fastest = math.inf
        self._latency: float | None = None
        self._flights: set[Flight] = set()
        self._changed = asyncio.Condition()

    @property
    def limit(self) -> int:
        """Requests allowed in flight now."""
        return max(1, min(self.ceiling, math.floor(self._window)))

    async def acquire(self) -> Flight:
        """Wait for room under the limit; the returned flight goes back with `release`."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._flights) < self.limit)
            flight = Flight(self._clock(), self._round, len(self._flights) + 1 == self.limit)
            self._flights.add(flight)
            return flight

    async def release(self, flight: Flight, outcome: Outcome) -> None:
        """The request of `flight` ended with `outcome`: adapt the limit, let waiters in."""
        self._flights.discard(flight)
        if outcome == "answered":
            self._answered(self._clock() - flight.started, flight.full)
        elif outcome == "overloaded":
            self._overloaded(flight)
        async with self._changed:
            self._changed.notify_all()

    def _answered(self, latency: float, full: bool) -> None:
        self._fastest = min(self._fastest, latency)
        self._latency = (
            latency
            if self._latency is None
            else (1 - LATENCY_WEIGHT) * self._latency + LATENCY_WEIGHT * latency
        )
        unqueued = latency <= QUEUED * self._fastest
        if not full or (latency > self.timeout_s / 2 and not unqueued):
            return
        fast = latency <= self.timeout_s / 4 or unqueued
        step = 1.0 if self._slow_start and fast else 1.0 / self._window
        self._window = min(float(self.ceiling), self._window + step)

    def _overloaded(self, flight: Flight) -> None:
        self._slow_start = False
        if flight.round == self._round:
            self._window = max(1.0, self._window / 2)
            self._round += 1

    def snapshot(self) -> dict[str, float]:
        """In flight, limit, ceiling, recent latency and the oldest request's wait (seconds)."""
        now = self._clock()
        oldest = max((now - f.started for f in self._flights), default=0.0)
        return {
            "in_flight": float(len(self._flights)),
            "limit": float(self.limit),
            "ceiling": float(self.ceiling),
            "latency_s": self._latency if self._latency is not None else 0.0,
            "oldest_s": oldest,
        }
