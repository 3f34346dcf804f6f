"""A stage in which every row failed: the command exits 1 with the dominant reason and the
setting to look at, every row still recorded in the bank's failures."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from click.testing import CliRunner
from llm_test_server import LLMTestServer
from synthetic import write_histories

from personagen.cli import cli
from personagen.io.bank import read_failures
from personagen.llm.server import free_port
from personagen.runtime.context import fix_for
from personagen.runtime.summary import Summary

RAY_WORKER_LINE = re.compile(r"^(\x1b\[\d+m)?\(\w+ pid=\d+")
"""A line Ray streams from a worker's log to the driver's console."""


def test_the_failed_stage_is_the_first_whose_every_row_failed():
    counts = Counter(
        {
            "mine:in": 3,
            "mine:out": 1,
            "mine:failed": 2,
            "judge:in": 1,
            "judge:failed": 1,
            "judge:failed:HTTP 500": 1,
        }
    )
    assert Summary("mine", counts, ["mine", "judge"]).failed_stage() == (
        "judge",
        Counter({"HTTP 500": 1}),
    )
    assert Summary("mine", Counter({"mine:in": 0}), ["mine"]).failed_stage() is None
    assert fix_for("HTTP 404") == "check llm.base_url and llm.model"
    assert fix_for("HTTP 400") == "check llm.model, llm.max_tokens and llm.response_format"
    assert fix_for("HTTP 502") == "check the server's log, llm.base_url and llm.model"


@pytest.mark.slow  # runs of mine on the session's Ray
@pytest.mark.parametrize("endpoint", ["refuses", "absent"])
def test_mine_whose_every_row_failed_exits_1_with_reason_and_setting(ray_local, tmp_path, endpoint):
    histories = write_histories(tmp_path, 3) / "histories"
    bank = tmp_path / "bank"
    with LLMTestServer(decide=lambda body: "400") as server:
        url = server.base_url if endpoint == "refuses" else f"http://127.0.0.1:{free_port()}/v1"
        settings = [f"llm.base_url={url}", "llm.backoff_s=0.01", "llm.max_retries=1"]
        args = ["mine", str(histories), "--out", str(bank), "--no-judge"]
        result = CliRunner().invoke(cli, [*args, *(a for s in settings for a in ("--set", s))])
    reasons = read_failures(bank).column("reason").to_pylist()
    if endpoint == "refuses":
        reason = "HTTP 400: bad request (test)"
        fix = "check llm.model, llm.max_tokens and llm.response_format"
        assert reasons == [reason] * 3
    else:
        reason = "connection error: All connection attempts failed (gave up after 2 attempts)"
        fix = "is the endpoint up? check llm.base_url"
        assert reasons == [reason] * 3
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == (
        f"error: mine: all 3 rows failed, 3 of them with {reason} (every row is in "
        f"{bank.resolve() / 'failures'}); {fix}"
    )
    # personagen prints no traceback (a Ray worker's own log lines, "(ListFiles pid=...)", may
    # hold one when the stream is torn down under load: Ray's, not the command's output)
    ours = [line for line in result.output.splitlines() if not RAY_WORKER_LINE.match(line)]
    assert not [line for line in ours if "Traceback" in line]
    summary = json.loads((bank / "summary-mine.json").read_text())
    assert (summary["counts"]["mine:in"], summary["counts"]["mine:failed"]) == (3, 3)
