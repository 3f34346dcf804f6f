"""Progress of writes: rows counted from the parts that appear, result and errors passed on."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pyarrow as pa
import pytest

from personagen.io.bank import write_part
from personagen.runtime.progress import _rows_written, run_with_progress


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


def test_an_llm_actor_reports_rows_while_a_slow_batch_runs(monkeypatch):
    """The ledger hears of rows during a batch, not only when it ends; nothing is counted twice;
    the client's requests in flight come with them."""
    import asyncio

    from personagen.config import LLMConfig
    from personagen.llm.client import Endpoint
    from personagen.runtime.executors import endpoint as executor
    from personagen.stages.base import DrivenStage

    reports: list[dict[str, int]] = []
    levels: list[tuple[str, dict[str, float]]] = []
    ledger = SimpleNamespace(  # an actor handle
        add=SimpleNamespace(remote=reports.append),
        level=SimpleNamespace(remote=lambda stage, _, values: levels.append((stage, values))),
    )

    async def slow(client, row, usage, params):
        await asyncio.sleep(0.05 * row["i"])
        usage.requests += 1
        return {"answer": f"a{row['i']}"}

    monkeypatch.setattr(executor, "PROGRESS_EVERY_S", 0.0)
    schema = pa.schema([("answer", pa.string())])
    stage = DrivenStage("test", schema, None, slow, lambda row, _: row["i"] < 5, "v0")
    endpoint = Endpoint.remote("http://127.0.0.1:9/v1")
    actor = executor.StageActor(stage, LLMConfig(), endpoint, None, None, 4, ledger)
    rows = pa.table({"persona_id": ["a", "b", "c", "d", "e"], "i": [1, 2, 3, 4, 5]})
    out = asyncio.run(actor(rows))
    assert out.column("answer").to_pylist() == ["a1", "a2", "a3", "a4", None]
    assert len(reports) == 5  # one per row here (no minimum interval), none empty
    assert sum(r.get("test:rows", 0) for r in reports) == 4
    assert sum(r.get("test:skipped", 0) for r in reports) == 1  # "e" passed over, counted
    assert sum(r.get("test:requests", 0) for r in reports) == 4
    assert levels and {stage for stage, _ in levels} == {"test"}
    assert all(v["ceiling"] == 4 and 1 <= v["limit"] <= 4 for _, v in levels)
    assert levels[-1][1]["in_flight"] == 0  # the batch has ended
