"""Run summaries that must add up, usage and cost, and the progress line."""

from __future__ import annotations

from collections import Counter

import pytest

from personagen.errors import PersonagenError
from personagen.llm.usage import Price, Usage
from personagen.runtime.progress import progress_line
from personagen.runtime.summary import Summary


def test_a_summary_whose_counts_do_not_add_up_is_an_error():
    good = Counter({"mine:todo": 5, "mine:in": 5, "mine:out": 4, "mine:failed": 1})
    Summary("mine", good, ["mine"]).check()
    lost = good | {"mine:out": 3}
    with pytest.raises(PersonagenError, match="in 5 != out 3 \\+ failed 1"):
        Summary("mine", Counter(lost), ["mine"]).check()
    unprocessed = good | {"mine:todo": 6}
    with pytest.raises(PersonagenError, match="6 to do, 5 done"):
        Summary("mine", Counter(unprocessed), ["mine"]).check()


def test_usage_round_trips_through_counters_and_prices_tokens():
    usage = Usage(
        requests=3,
        retries=1,
        repairs=1,
        cache_hits=2,
        prompt_tokens=2_000_000,
        completion_tokens=500_000,
    )
    assert Usage.from_counts(usage.counts("judge"), "judge") == usage
    assert Usage.from_counts(usage.counts("judge"), "mine") == Usage()
    assert usage.cost_usd(Price(prompt=0.5, completion=2.0)) == pytest.approx(2.0)
    assert usage.cost_usd(None) is None


def test_progress_line_shows_rate_tokens_and_eta():
    counts = {
        "mine:rows": 50,
        "mine:failed": 2,
        "mine:prompt_tokens": 900,
        "mine:completion_tokens": 100,
        "mine:requests": 60,
        "mine:cache_hits": 5,
    }
    line = progress_line("mine", counts, total=150, elapsed=10.0)
    assert line == (
        "mine: 50/150 rows (33%), 2 failed, 5.00 rows/s, 1,000 tokens (100/s), 60 requests,"
        " 5 cached, ETA 0m20s"
    )
    # rows failed or filtered upstream count as done; the rate is that of processed rows
    passed_over = progress_line("judge", counts | {"judge:rows": 20, "judge:skipped": 10}, 40, 10)
    assert passed_over.startswith("judge: 30/40 rows (75%), 0 failed, 10 passed over, 2.00 rows/s")
    assert passed_over.endswith("ETA 0m05s")
    finished = progress_line("judge", {"judge:rows": 20, "judge:skipped": 10}, 30, 10)
    assert finished.endswith("ETA 0m00s")
    assert progress_line("judge", {}, total=10, elapsed=3.0).endswith("ETA ?")
    assert progress_line("mine", {}, total=0, elapsed=3.0) == "mine: waiting for input rows"
