"""The whole build as one Ray Data stream: every row accounted for, resume after a kill, dry run."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from llm_test_server import Faults, LLMTestServer, request_schema, schema_responder
from test_mine import _grep_tree, kill_when_cached, raw_ids, set_args

from personagen import TRAITS
from personagen.commands.build import build
from personagen.commands.estimate import ASSUMED_ATTRIBUTES, NARRATIVE_WORDS, estimate
from personagen.config import load_config
from personagen.io.bank import read_bank, read_failures, read_group, read_manifest
from personagen.io.histories import read_histories
from personagen.stages.judge import CRITERIA, judge_prompt
from personagen.stages.mine import mine_prompt
from personagen.stages.score import item_prompt
from personagen.text.windowing import count_tokens

pytestmark = pytest.mark.slow  # real Ray Data pipelines, 20-90 s each

ROOT = Path(__file__).resolve().parents[1]


def write_users(path: Path, n: int, special: dict[int, str] | None = None) -> Path:
    """`n` users with three posts each, one row per post (JSONL); `special` adds text."""
    special = special or {}
    with path.open("w") as fh:
        for i in range(n):
            for day in (1, 2, 3):
                text = f"Day {day} of user {i}: tea, work and a long walk with the dog."
                if day == 3 and i in special:
                    text += " " + special[i]
                row = {"user_id": f"u{i:03d}", "date": f"2021-03-0{day}", "text": text,
                       "country": ["JP", "DE", "US"][i % 3]}  # fmt: skip
                fh.write(json.dumps(row) + "\n")
    return path


def build_settings(server: LLMTestServer, *extra: str) -> list[str]:
    return [
        f"llm.base_url={server.base_url}",
        "llm.model=stub",
        "llm.api_key_env=PG_BUILD_TEST_KEY",
        "llm.timeout_s=5",
        "llm.backoff_s=0.01",
        "llm.max_retries=2",
        "mine.min_words=10",
        "progress_s=2",
        "build.align.enabled=true",
        "build.align.n=5",
        "ray.num_cpus=2",
        "ray.object_store_mb=512",
        *extra,
    ]


def ids(n: int) -> list[str]:
    return [f"u{i:03d}/0" for i in range(n)]


def failed_in(bank: Path, stage: str) -> set[str]:
    failures = read_failures(bank, stage)
    return set(failures.column("input_id").to_pylist())


def test_build_streams_every_stage_into_the_bank(ray_local, tmp_path):
    n = 24
    src = write_users(tmp_path / "users.jsonl", n, {3: "FAIL-MINE", 5: "FAIL-JUDGE"})
    judge_system = judge_prompt().system

    def decide(body):
        user = body["messages"][-1]["content"]
        if "FAIL-MINE" in user and body["messages"][0]["content"] != judge_system:
            return "400"
        if "FAIL-JUDGE" in user and body["messages"][0]["content"] == judge_system:
            return "400"
        return None

    bank = tmp_path / "bank"
    with LLMTestServer(Faults(seed=3), decide=decide) as server:
        adapted = [
            "build.adapt.enabled=true",
            "build.adapt.query=tea and a long walk",
            "build.adapt.reference=builtin:europe",
            "build.adapt.n=3",
            "build.adapt.k=8",
        ]
        cfg = load_config(overrides=build_settings(server, *adapted, f"build.input={src}"))
        summary = build(cfg, bank)
        requests_first = len(server.records())
        again = build(cfg, bank)
        assert len(server.records()) == requests_first, "a finished build asked the LLM again"
    assert again.counts["build:already_done"] == n and again.counts["build:todo"] == 0

    c = summary.counts
    assert c["build:todo"] == n == c["mine:in"]
    for stage in ("mine", "judge", "score", "embed"):
        assert c[f"{stage}:in"] == c[f"{stage}:out"] + c[f"{stage}:failed"]
    for group in ("personas", "quality", "scores", "embeddings", "histories"):
        column = raw_ids(bank, group) if group != "histories" else read_histories(
            bank / "histories").column("history_id").to_pylist()  # fmt: skip
        assert len(column) == len(set(column)), f"a row was written twice to {group}"

    assert failed_in(bank, "mine") == {"u003/0"}
    assert failed_in(bank, "judge") == {"u005/0"}
    embedded = set(raw_ids(bank, "embeddings"))
    assert embedded | {"u003/0"} == set(ids(n))  # embedding needs mining only
    table = read_bank(bank)
    kept = set(table.filter(pc.fill_null(table.column("kept"), False)).column("persona_id")
               .to_pylist())  # fmt: skip
    assert set(raw_ids(bank, "scores")) <= kept and "u005/0" not in raw_ids(bank, "scores")
    assert read_histories(bank / "histories").num_rows == n
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)

    manifest = read_manifest(bank)
    assert manifest["inputs"]["files"] == 1 and len(manifest["inputs"]["sha256"]) == 64
    assert manifest["packages"]["ray"].startswith("2.60")
    assert manifest["seeds"]["seed"] == 0
    for stage in ("mine", "judge", "score"):
        assert manifest[stage]["prompt_version"]
    assert manifest["embed"]["model_id"].startswith("all-MiniLM-L6-v2@")
    assert manifest["config"]["llm"]["api_key_env"] == "PG_BUILD_TEST_KEY"
    assert manifest["build"]["finished"] and manifest["index"]
    assert summary.outputs["adapted"] == str(bank / "adapted")
    assert c["adapt:retrieved"] == 8 and c["adapt:chosen"] == 3
    chosen = pq.read_table(bank / "adapted" / "personas.parquet").column("persona_id").to_pylist()
    assert len(set(chosen)) == 3 and set(chosen) <= kept
    assert (bank / "adapted" / "report.html").is_file()
    aligned = pa.parquet.read_table(bank / "aligned" / "personas.parquet")
    assert aligned.num_rows == 5 and (bank / "aligned" / "report.html").is_file()


def test_a_killed_build_resumes_without_losing_or_repeating_rows(ray_local, tmp_path):
    n = 100
    key = "sk-test-BUILDLEAK-41d2e8"
    src = write_users(tmp_path / "users.jsonl", n)
    bank = tmp_path / "bank"
    address = ray_local.get_runtime_context().gcs_address
    env = {**os.environ, "PG_BUILD_TEST_KEY": key, "PYTHONPATH": str(ROOT)}
    with LLMTestServer(Faults(latency_s=0.05, api_key=key, seed=4)) as server:
        settings = build_settings(
            server, f"ray.address={address}", "build.align.enabled=false", "build.rows_per_block=4"
        )
        args = [sys.executable, "-m", "personagen", "build", "--input", str(src),
                "--out", str(bank), "-v", *set_args(settings)]  # fmt: skip
        logs = tmp_path / "logs"
        logs.mkdir()
        with (logs / "run1.out").open("w") as out, (logs / "run1.err").open("w") as err:
            first = subprocess.Popen(args, stdout=out, stderr=err, env=env)
            deadline = time.monotonic() + 180
            while not list((bank / "scores").glob("*.parquet")):  # the first rows are in
                assert first.poll() is None, (logs / "run1.err").read_text()[-3000:]
                assert time.monotonic() < deadline, "the build wrote nothing"
                time.sleep(0.05)
            answered_before = kill_when_cached(server, first, bank)
        finished_before = set(raw_ids(bank, "embeddings"))
        assert 0 < len(finished_before) < n, "the kill should land mid-build"
        server.reset_hold()
        server.phase = 2
        second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
        (logs / "run2.err").write_text(second.stderr)
        assert second.returncode == 0, second.stderr[-3000:]
        asked_again = answered_before & server.requested(phase=2)
        assert not asked_again, f"{len(asked_again)} answered requests were asked again"

    embedded = raw_ids(bank, "embeddings")
    mine_failed = failed_in(bank, "mine")
    assert len(embedded) == len(set(embedded)), "a row was embedded twice"
    assert set(embedded) | mine_failed == set(ids(n)) and not set(embedded) & mine_failed
    manifest = read_manifest(bank)
    assert manifest["counts"]["build:already_done"] >= len(finished_before)
    assert "streamed this run" in second.stdout
    leaks = _grep_tree(bank, key.encode()) + _grep_tree(logs, key.encode())
    assert not leaks, f"the API key leaked into {leaks}"


PERSONA_PROSE = (
    "Maya is a nurse in her late thirties who lives in a small town in Ohio. She works night "
    "shifts at the county hospital, raises two teenagers on her own, and spends her Sundays "
    "gardening, singing in the church choir and cooking for her parents. She writes about long "
    "walks with her dog, worries about money and her children's schooling, and jokes that "
    "coffee is the only thing keeping her awake."
)


def assumed_answers(body: dict, rng: random.Random) -> str:
    """Answers as the dry run assumes them: a persona of NARRATIVE_WORDS words (the prose
    above, shuffled: no two alike) with the assumed attributes, and a judge that keeps every
    persona; the inventory items get the stub's digit."""
    properties = (request_schema(body) or {}).get("properties", {})
    if "narrative" in properties:
        words = (PERSONA_PROSE.split() * 10)[:NARRATIVE_WORDS]
        rng.shuffle(words)
        return json.dumps({"narrative": " ".join(words), "attributes": ASSUMED_ATTRIBUTES})
    if "faithfulness" in properties:
        criterion = {"rationale": "Every claim is supported by the posts.", "score": 5}
        return json.dumps(dict.fromkeys(CRITERIA, criterion) | {"overall": 5})
    return schema_responder(Faults().string_words)(body, rng)


def test_dry_run_is_within_ten_percent_of_what_the_build_sends(ray_local, tmp_path):
    """The estimate's requests and prompt tokens per stage against the bodies a build sends to
    the stub (counted as the estimate counts a message); then it knows the build is done."""
    n = 9
    src = write_users(tmp_path / "users.jsonl", n)
    bank = tmp_path / "bank"
    bodies: list[dict] = []
    with LLMTestServer(Faults(), assumed_answers, decide=lambda b: bodies.append(b)) as server:
        settings = build_settings(
            server,
            "build.align.enabled=false",
            f"build.input={src}",
            "llm.prices.stub.prompt=1.0",
            "llm.prices.stub.completion=2.0",
        )
        cfg = load_config(overrides=settings)
        before = estimate(cfg, bank)
        summary = build(cfg, bank)
        after = estimate(cfg, bank)
    stages = {s.stage: s for s in before.stages}
    assert (before.histories, before.already_done) == (n, 0)
    assert summary.counts["score:out"] == n, "every persona kept and scored, as assumed"

    systems = {
        mine_prompt().system: "mine",
        judge_prompt().system: "judge",
        item_prompt().system: "score",
    }
    sent: dict[str, list[int]] = {"mine": [], "judge": [], "score": []}
    for body in bodies:  # the endpoint probes (format, logprobs) belong to no stage
        stage = systems.get(body["messages"][0]["content"])
        if stage is not None:
            sent[stage].append(sum(count_tokens(m["content"]) + 4 for m in body["messages"]))
    assert {stage: len(tokens) for stage, tokens in sent.items()} == {
        "mine": n,
        "judge": n,
        "score": n * 50,
    }
    for stage, tokens in sent.items():
        assert stages[stage].requests == len(tokens)
        assert stages[stage].prompt_tokens == pytest.approx(sum(tokens), rel=0.10), stage
    mine = stages["mine"]
    assert mine.cost_usd == pytest.approx((mine.prompt_tokens + 2 * mine.completion_tokens) / 1e6)

    assert (after.histories, after.already_done) == (n, n)
    assert [(s.stage, s.requests, s.prompt_tokens) for s in after.stages] == [
        ("mine", 0, 0),
        ("judge", 0, 0),
        ("score", 0, 0),
    ]


def test_demo_command_runs_the_whole_build_and_says_where_everything_is(tmp_path):
    """`personagen demo` end to end with a stub in place of the embedded LLM (the real model
    is exercised by the mining and scoring tests): bank, index, aligned set, report."""
    out = tmp_path / "demo"
    with LLMTestServer(Faults(seed=3)) as server:
        settings = [s for s in build_settings(server) if not s.startswith("build.align")]
        result = subprocess.run(
            [sys.executable, "-m", "personagen", "demo", "--out", str(out), *set_args(settings)],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "PG_BUILD_TEST_KEY": "k"},
        )
        records = server.records()
    assert result.returncode == 0, result.stderr[-3000:]
    aligned = pq.read_table(out / "aligned" / "personas.parquet")
    assert aligned.num_rows == 12 and len(set(aligned.column("persona_id").to_pylist())) == 12
    for path in ["aligned/report.html", "aligned/personas.parquet", "manifest.json", "index"]:
        assert (out / path).exists() and str(out / path) in result.stdout, (path, result.stdout)
    manifest = read_manifest(out)
    assert manifest["build"]["input"].endswith("histories.jsonl")
    histories = manifest["counts"]["windows"]
    assert histories >= 24
    assert len(raw_ids(out, "personas")) + len(failed_in(out, "mine")) == histories
    # scored zero-shot (no LLM request), every kept persona, and the scorer checked on the
    # known-answer set, its numbers printed as the report has them
    scores = read_group(out, "scores")
    assert set(scores.column("answer_mode").to_pylist()) == {"embedding"}
    assert scores.num_rows == manifest["counts"]["bank:scored"] > 0
    assert all(r.response_format is not None for r in records)  # no per-item inventory request
    check = json.loads((out / "scorer-check" / "report.json").read_text())
    r = [check["traits"][t]["r"] for t in TRAITS]
    assert ", ".join(f"{t} {v:.2f}" for t, v in zip(TRAITS, r, strict=True)) in result.stdout
    assert check["verdict"]["text"] in result.stdout
    assert ("In plain words" in result.stdout) == (sum(r) / 5 < 0.3)
