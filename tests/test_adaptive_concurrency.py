"""Adaptive concurrency (AIMD): the limit's rules on a clock the test sets, and a slow one-slot
server at concurrency 8 that gets every row answered without a storm of timeouts."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from llm_test_server import Faults, LLMTestServer
from starlette.requests import Request
from starlette.responses import Response
from synthetic import write_histories
from waiting import wait_until

from personagen.commands.mine import mine
from personagen.config import load_config
from personagen.llm.client import Endpoint, LLMClient
from personagen.llm.limit import AdaptiveLimit, Flight
from personagen.llm.options import ClientOptions
from personagen.llm.usage import Usage


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def flights(limit: AdaptiveLimit, n: int) -> list[Flight]:
    return [asyncio.run(limit.acquire()) for _ in range(n)]


def end(limit: AdaptiveLimit, flight: Flight, outcome: str) -> None:
    asyncio.run(limit.release(flight, outcome))  # type: ignore[arg-type]


def test_slow_start_raises_by_one_per_answer_that_used_up_the_limit():
    clock = Clock()
    limit = AdaptiveLimit(ceiling=8, timeout_s=10.0, clock=clock)
    assert limit.limit == 1
    (first,) = flights(limit, 1)
    clock.now = 1.0
    end(limit, first, "answered")  # within a quarter of the timeout: +1
    assert limit.limit == 2
    spare, full = flights(limit, 2)  # only the second one used up the limit
    clock.now = 2.0
    end(limit, spare, "answered")
    assert limit.limit == 2
    end(limit, full, "answered")
    assert limit.limit == 3
    for _ in range(10):
        for flight in flights(limit, limit.limit):
            end(limit, flight, "answered")
    assert limit.limit == 8, "never above the configured concurrency"


def raised_to_8(clock: Clock) -> AdaptiveLimit:
    """A limit of ceiling 8 (timeout 10 s), raised to it by rounds of instant answers (+1 each:
    only the last request of a round used up the limit)."""
    limit = AdaptiveLimit(ceiling=8, timeout_s=10.0, clock=clock)
    for _ in range(7):
        for flight in flights(limit, limit.limit):
            end(limit, flight, "answered")
    assert limit.limit == 8
    return limit


def test_overload_halves_once_per_round_and_never_below_one():
    limit = raised_to_8(Clock())
    burst = flights(limit, 8)
    for flight in burst:  # one burst of timeouts (or 429s): one decrease
        end(limit, flight, "overloaded")
    assert limit.limit == 4
    later = flights(limit, 4)
    end(limit, later[0], "overloaded")
    end(limit, later[1], "overloaded")
    assert limit.limit == 2
    for flight in later[2:]:
        end(limit, flight, "failed")  # a failure that says nothing of load changes nothing
    assert limit.limit == 2
    for _ in range(3):
        (flight,) = flights(limit, 1)
        end(limit, flight, "overloaded")
    assert limit.limit == 1


def steady(
    limit: AdaptiveLimit, clock: Clock, latency_s: float, answers: int, pool: list[Flight]
) -> None:
    """`answers` answers of `latency_s` each to the oldest requests of `pool`, each answer
    letting in the requests the limit allows then (as a client with rows to spare does: every
    request let in after an answer uses up the limit)."""
    for _ in range(answers):
        pool += flights(limit, limit.limit - len(pool))
        flight = pool.pop(0)
        clock.now = flight.started + latency_s
        end(limit, flight, "answered")


def test_after_a_decrease_answers_raise_by_one_per_round_and_queued_ones_not_at_all():
    clock = Clock()
    limit = raised_to_8(clock)
    for flight in flights(limit, 8):
        end(limit, flight, "overloaded")
    assert limit.limit == 4
    pool: list[Flight] = []
    # the fastest answer took 0 s, so these waited in a queue, over half the timeout: no rise
    steady(limit, clock, 6.0, 8, pool)
    assert limit.limit == 4
    # within half the timeout: +1/limit per answer, one more request per round of answers
    steady(limit, clock, 4.0, 4, pool)
    assert limit.limit == 4
    steady(limit, clock, 4.0, 1, pool)
    assert limit.limit == 5


def test_the_snapshot_tells_what_is_in_flight():
    clock = Clock()
    limit = AdaptiveLimit(ceiling=8, timeout_s=10.0, clock=clock)
    (first,) = flights(limit, 1)
    clock.now = 2.0
    end(limit, first, "answered")
    clock.now = 3.0
    waiting = flights(limit, 2)
    clock.now = 7.0
    end(limit, waiting[0], "answered")  # latency 4: the average moves by a fifth towards it
    clock.now = 8.0
    assert limit.snapshot() == {
        "in_flight": 1.0,
        "limit": 2.0,
        "ceiling": 8.0,
        "latency_s": pytest.approx(0.8 * 2.0 + 0.2 * 4.0),
        "oldest_s": 5.0,
    }


class OneSlotServer(LLMTestServer):
    """Answers one request at a time, `latency_s` each, in arrival order, and finishes a request
    whose client has gone (as llama.cpp's server does). `max_held` is the most requests it held
    at once, waiting and answering."""

    def __init__(self, latency_s: float) -> None:
        super().__init__(Faults(latency_s=latency_s))
        self.held = 0
        self.max_held = 0
        self._slot: asyncio.Lock | None = None

    async def _chat(self, request: Request) -> Response:
        if self._slot is None:  # made on the server's event loop
            self._slot = asyncio.Lock()
        await request.body()  # received before it waits (kept for the handler to read)
        self.held += 1
        self.max_held = max(self.max_held, self.held)
        try:
            async with self._slot:
                return await super()._chat(request)
        finally:
            self.held -= 1

    def settled(self) -> int:
        """The requests it answered, once it holds none (requests whose client gave up are
        still answered, and logged, after the client has moved on)."""
        wait_until(lambda: not self.held, "requests still held by the server")
        return len(self.records())


ROWS = 30
LATENCY_S = 0.3
"""One answer at a time, 0.3 s each, against a 2 s timeout: 8 requests at once would wait up to
2.4 s, so a fixed concurrency of 8 times out on every round; the limit settles where answers
come back within half the timeout (4 in flight, 1.2 s)."""


def test_a_one_slot_server_at_concurrency_8_answers_every_request_without_a_storm():
    cfg = ClientOptions(
        model="m", concurrency=8, timeout_s=2.0, max_retries=4, backoff_s=0.1, max_tokens=16
    )
    with OneSlotServer(LATENCY_S) as server:

        async def run() -> tuple[list[Any], Usage]:
            client = LLMClient(cfg, Endpoint.remote(server.base_url))
            usage = Usage()
            try:
                answers = await asyncio.gather(
                    *(
                        client.chat(
                            [{"role": "user", "content": f"q{i}"}], prompt_version="t", usage=usage
                        )
                        for i in range(ROWS)
                    )
                )
            finally:
                await client.aclose()
            return answers, usage

        answers, usage = asyncio.run(run())
        sent = server.settled()
    assert len(answers) == ROWS and all(a.text for a in answers)
    assert sent == usage.requests == ROWS + usage.retries
    assert sent <= 1.2 * ROWS, f"{sent} requests for {ROWS} rows"
    assert server.max_held <= 5, "the limit came down from the concurrency of 8"


@pytest.mark.slow  # a run of mine on the session's Ray
def test_mine_against_a_slow_one_slot_server_finishes_every_row(ray_local, tmp_path, caplog):
    rows = 12
    histories = write_histories(tmp_path, rows) / "histories"
    with OneSlotServer(LATENCY_S) as server:
        cfg = load_config(
            None,
            [
                f"llm.base_url={server.base_url}",
                "llm.concurrency=8",
                "llm.timeout_s=2",
                "llm.backoff_s=0.1",
                "pools.mine.actors=1",
                "mine.judge=false",
                "mine.min_words=10",
                "progress_s=1",
            ],
        )
        with caplog.at_level(logging.INFO, logger="personagen.runtime.progress"):
            summary = mine(cfg, histories, tmp_path / "bank")
        sent = server.settled()
    counts = summary.counts
    assert (counts["mine:in"], counts["mine:out"], counts["mine:failed"]) == (rows, rows, 0)
    # the requests of the rows, and the structured-output probe of the endpoint
    assert sent == counts["mine:requests"] + 1
    assert sent <= 1.2 * rows, f"{sent} requests for {rows} rows"
    lines = [r.getMessage() for r in caplog.records if "in flight (limit" in r.getMessage()]
    assert lines, "the progress lines show the requests in flight"
    assert all("of 8), latency" in line and "oldest waiting" in line for line in lines)
