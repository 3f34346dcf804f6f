"""Soak: `personagen build` of N users against a faulty LLM, SIGKILLed three times and resumed.

What it measures (issue 14). N synthetic one-window users (`tests/synthetic.py`'s
`write_histories`, one short post each) go through `personagen build` with mine, judge and score
(`build.embed=false`), against the fault-injecting test server (`tests/llm_test_server.py`,
in-process on loopback):

1. the reference: the same users, no faults, one uninterrupted run, timed;
2. the soak: 25% of the requests get a fault, spread evenly over 429 (with Retry-After), 500,
   hang (no answer until the client gives up), malformed JSON and truncated JSON; the build runs
   as a subprocess in its own process group, is SIGKILLed (the whole group, then any process of
   its tree still alive 3 s later) at `--kills` random moments and started again with the same
   command each time, until it finishes. Attempt i is killed once the server has logged k_i of
   its requests, k_i uniform in 10-30% of the reference's request count (seeded): moments set
   by progress, not seconds, since the pace of a faulty run on a shared machine is not known
   beforehand; the three land at ~10-90% of the work, while the stages run.

Every request waits a random 0-50 ms on the server. Settings: `llm.concurrency=64`,
`llm.timeout_s=3` (60x the longest latency; a hang lasts until the client gives up), the
client's default retries and backoff, a local Ray of 2 CPUs (512 MB object store).

Reported:
- rows: per stage, rows in = bank rows (`read_group`) + failures (`read_failures`), with no id
  both in the bank and failed, none failed twice, and the duplicate ids in the raw part files
  (which `read_group` hides: it keeps the last row of each id). Rows in: every user for mine,
  every mined persona for judge, every persona the judge kept in the stream (its threshold;
  near-duplicate flags come after the stream) for score;
- requests asked again after each kill: the digests the server answered with a 200 in the killed
  attempt before the kill (hangs excluded: their client had given up) that any later attempt
  sent again, split into those whose answer was in the response cache when the next attempt
  started (the cache should have answered them: must be 0) and those whose answer was in flight
  when the process died (never stored: asking again is right);
- wall time of the soak (first start to finish, kills and restarts included) against the
  reference; peak RSS, sampled every 0.5 s over the build's process tree: the driver (the build
  process), the largest Ray worker process (`ray::*`) and all of them together (RSS counts shared
  pages, e.g. the object store, in every process that maps them);
- the load average of the machine during each run.

Run (from the repository root, in the project's virtual environment):

    python benchmarks/soak.py [--users 5000] [--seed 14] [--kills 3] [--score-mode auto]
        [--fault-rate 0.25] [--workdir DIR] [--quick]

`--quick` is a 200-user run with the same protocol (to measure the rate before the full size).
`--score-mode auto` asks 50 one-token logprob requests per kept persona (the test server
returns logprobs); `batch` asks one request per persona with every item. The issue's run was
`--users 5000 --score-mode batch` (benchmarks/RESULTS.md, "Soak"). Raw measurements:
WORKDIR/soak-result.json, the tables: WORKDIR/soak-report.md (also printed), the builds' logs:
WORKDIR/logs/. One run of each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pyarrow.dataset as pds

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from llm_test_server import Faults, LLMTestServer  # noqa: E402
from synthetic import write_histories  # noqa: E402

from personagen.config import load_config  # noqa: E402
from personagen.io.bank import KEY, part_files, read_failures, read_group  # noqa: E402
from personagen.stages.judge import decide  # noqa: E402

FAULT_KINDS = ("429", "500", "hang", "malformed", "truncated")
MAX_LATENCY_S = 0.05
TIMEOUT_S = 3.0
HANG_S = 30.0
SAMPLE_S = 0.5
KILL_WINDOW = (0.1, 0.3)
"""An attempt is killed once it has sent this fraction (uniform, seeded) of the reference run's
request count (as the server logs them: answered or failed)."""
ATTEMPT_LIMIT_S = 3600.0


# ------------------------------------------------------------------------------ the server


class JitteredFaults(Faults):
    """`Faults` whose latency is drawn anew for every request, uniform in [0, max_latency_s]."""

    def __init__(self, max_latency_s: float, **kwargs: Any) -> None:
        self.max_latency_s = max_latency_s
        self._latency_rng = random.Random(f"latency:{kwargs.get('seed', 0)}")
        super().__init__(**kwargs)

    @property
    def latency_s(self) -> float:
        return self._latency_rng.uniform(0.0, self.max_latency_s)

    @latency_s.setter
    def latency_s(self, value: float) -> None:
        """The dataclass's `__init__` sets a fixed latency: ignored here."""


class SoakServer(LLMTestServer):
    """The test server with every malformed answer made unique (a nonce after the broken JSON),
    so that each answer it sent can be found in the response cache by its content."""

    def _answer(self, body: dict, outcome: str, rng: random.Random) -> tuple[int, dict, dict]:
        status, payload, headers = super()._answer(body, outcome, rng)
        if outcome == "malformed":
            payload["choices"][0]["message"]["content"] += f" #{rng.getrandbits(48):012x}"
        return status, payload, headers


def fingerprint(text: str, tokens: list) -> str:
    """An answer as the client caches it: its text and each token's alternatives."""
    return json.dumps([text, tokens])


def sent_fingerprint(answer: dict) -> str:
    content = (answer["logprobs"] or {}).get("content") or []
    tokens = [
        [t["token"], t["logprob"], [[a["token"], a["logprob"]] for a in t["top_logprobs"]]]
        for t in content
    ]
    return fingerprint(answer["message"]["content"], tokens)


def cached_fingerprints(cache_dir: Path) -> set[str]:
    """Fingerprints of every answer in the response cache (read after the writer died)."""
    found = set()
    for path in cache_dir.glob("*.sqlite"):
        conn = sqlite3.connect(path, timeout=60)
        try:
            rows = conn.execute("SELECT value FROM answers").fetchall()
        except sqlite3.OperationalError:
            rows = []
        finally:
            conn.close()
        for (value,) in rows:
            answer = json.loads(value)
            tokens = [[t["token"], t["logprob"], t["top"]] for t in answer["logprobs"] or []]
            found.add(fingerprint(answer["text"], tokens))
    return found


# ------------------------------------------------------------------------------ processes


@dataclass
class Memory:
    """Peak RSS (MB) of a build's process tree, over every sample of every attempt."""

    driver_mb: float = 0.0
    largest_worker_mb: float = 0.0
    largest_worker: str = ""
    workers_mb: float = 0.0
    tree_mb: float = 0.0
    samples: int = 0
    load: list[float] = field(default_factory=list)


class Sampler(threading.Thread):
    """Samples a process tree every `SAMPLE_S`: RSS peaks, and every process seen (so that the
    ones a kill leaves behind can be found)."""

    def __init__(self, root: int, memory: Memory) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.memory = memory
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.root)
        except psutil.Error:
            return
        while not self.stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                procs = []
            driver = workers = total = 0.0
            for proc in procs:
                try:
                    with proc.oneshot():
                        self.seen.setdefault(proc.pid, proc.create_time())
                        rss = proc.memory_info().rss / 2**20
                        title = (proc.cmdline() or [proc.name()])[0]
                except psutil.Error:
                    continue
                total += rss
                if proc.pid == self.root:
                    driver = rss
                elif title.startswith("ray::"):
                    workers += rss
                    if rss > self.memory.largest_worker_mb:
                        self.memory.largest_worker_mb = rss
                        self.memory.largest_worker = title[:60]
            m = self.memory
            m.driver_mb = max(m.driver_mb, driver)
            m.workers_mb = max(m.workers_mb, workers)
            m.tree_mb = max(m.tree_mb, total)
            m.samples += 1
            m.load.append(os.getloadavg()[0])
            self.stop.wait(SAMPLE_S)

    def survivors(self) -> list[psutil.Process]:
        alive = []
        for pid, created in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.Error:
                continue
        return alive


def kill_tree(proc: subprocess.Popen, sampler: Sampler) -> int:
    """SIGKILL the build's process group, then whatever of its tree (or its session) is still
    alive 3 s later (a process that left the group); returns how many had to be killed so."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    tree = {p.pid: p for p in sampler.survivors()}
    for other in psutil.process_iter():  # started after the last sample
        with contextlib.suppress(OSError, psutil.Error):
            if other.pid not in tree and os.getsid(other.pid) == proc.pid:
                tree[other.pid] = other
    _, alive = psutil.wait_procs(list(tree.values()), timeout=3)
    left = []
    for other in alive:
        with contextlib.suppress(psutil.Error):
            if other.status() != psutil.STATUS_ZOMBIE:
                other.kill()
                left.append(other)
    psutil.wait_procs(left, timeout=30)
    return len(left)


# ------------------------------------------------------------------------------ the runs


@dataclass
class Attempt:
    started_s: float
    wall_s: float
    returncode: int | None
    first_request_s: float | None = None
    killed_at_s: float | None = None
    requests: int = 0
    killed_by_pid: int = 0
    rows_at_kill: dict[str, int] = field(default_factory=dict)
    answered: int = 0
    answered_cached: int = 0
    asked_again: int = 0
    asked_again_cached: int = 0
    asked_again_in_flight: int = 0


@dataclass
class Run:
    name: str
    users: int
    wall_s: float = 0.0
    traffic_s: float = 0.0
    """From the first to the last LLM request the server logged."""
    attempts: list[Attempt] = field(default_factory=list)
    memory: Memory = field(default_factory=Memory)
    outcomes: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    resent_within_attempt: int = 0
    limits: dict[str, float] = field(default_factory=dict)
    """Mean adaptive concurrency limit per stage, over the progress lines of every attempt."""
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    uptime: list[str] = field(default_factory=list)


@dataclass
class Answered:
    """The digests of the requests a killed attempt got a 200 for before the kill, and those
    of them whose answer was in the response cache after the kill."""

    sent: set[str]
    cached: set[str]


def settings(server: LLMTestServer, score_mode: str, seed: int) -> list[str]:
    items = [
        f"llm.base_url={server.base_url}",
        "llm.model=stub",
        "llm.concurrency=64",
        f"llm.timeout_s={TIMEOUT_S}",
        "build.embed=false",
        f"score.mode={score_mode}",
        "ray.num_cpus=2",
        "ray.object_store_mb=512",
        "progress_s=10",
    ]
    load_config(overrides=items)  # every key exists and validates
    return [arg for item in items for arg in ("--set", item)] + ["--seed", str(seed)]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def bank_rows(bank: Path) -> dict[str, int]:
    return {
        group: read_group(bank, group, [KEY]).num_rows
        for group in ("personas", "quality", "scores")
    } | {"failures": read_failures(bank).num_rows}


def run_build(
    run: Run,
    server: LLMTestServer,
    command: list[str],
    bank: Path,
    logs: Path,
    kill_after: list[int],
) -> dict[int, Answered]:
    """Start the build, kill attempt i once the server has logged `kill_after[i]` of its
    requests and start it again, until an attempt ends by itself; records each attempt and its
    kill. Returns the answers each killed attempt (by number) was sent before its kill."""
    evidence: dict[int, Answered] = {}
    begin = time.monotonic()
    run.uptime.append(uptime())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for number in range(1, len(kill_after) + 2):
        server.phase = number
        kill_at = kill_after[number - 1] if number <= len(kill_after) else None
        out = (logs / f"{run.name}-{number}.out").open("w")
        err = (logs / f"{run.name}-{number}.err").open("w")
        started = time.monotonic()
        proc = subprocess.Popen(
            command, stdout=out, stderr=err, env=env, cwd=ROOT, start_new_session=True
        )
        sampler = Sampler(proc.pid, run.memory)
        sampler.start()
        attempt = Attempt(started_s=round(started - begin, 1), wall_s=0.0, returncode=None)
        run.attempts.append(attempt)
        logged, deadline = len(server.log), started + ATTEMPT_LIMIT_S
        while proc.poll() is None and time.monotonic() < deadline:
            attempt.requests = len(server.log) - logged
            if attempt.first_request_s is None and attempt.requests:
                attempt.first_request_s = round(time.monotonic() - started, 1)
            if kill_at is not None and attempt.requests >= kill_at:
                break
            time.sleep(0.05)
        if proc.poll() is None:
            killed_at = time.time()
            attempt.killed_at_s = round(time.monotonic() - started, 1)
            attempt.killed_by_pid = kill_tree(proc, sampler)
            attempt.wall_s = round(time.monotonic() - started, 1)
            sampler.stop.set()
            sampler.join()
            out.close()
            err.close()
            if kill_at is None or attempt.requests < kill_at:
                raise RuntimeError(f"{run.name} attempt {number} ran past {ATTEMPT_LIMIT_S} s")
            while server.in_flight:  # the dead client's requests end (hangs see it hang up)
                time.sleep(0.05)
            attempt.requests = len(server.records(number))
            attempt.rows_at_kill = bank_rows(bank)
            evidence[number] = answered_before(server, number, killed_at, bank / "llm-cache")
            attempt.answered = len(evidence[number].sent)
            attempt.answered_cached = len(evidence[number].cached)
            print(
                f"  {run.name}: attempt {number} killed at {attempt.killed_at_s} s, "
                f"bank {attempt.rows_at_kill}",
                flush=True,
            )
            continue
        attempt.wall_s = round(time.monotonic() - started, 1)
        attempt.returncode = proc.returncode
        attempt.requests = len(server.records(number))
        sampler.stop.set()
        sampler.join()
        out.close()
        err.close()
        if kill_at is not None:
            print(f"  {run.name}: attempt {number} finished before its kill", flush=True)
        if proc.returncode != 0:
            tail = (logs / f"{run.name}-{number}.err").read_text()[-3000:]
            raise RuntimeError(f"{run.name} attempt {number} failed:\n{tail}")
        break
    run.wall_s = round(time.monotonic() - begin, 1)
    run.uptime.append(uptime())
    return evidence


PROGRESS = re.compile(r"progress: (\w+): .*\(limit (\d+) of \d+\)")


def mean_limits(logs: Path, name: str) -> dict[str, float]:
    """The adaptive limit of requests in flight per stage, averaged over the progress lines."""
    seen: dict[str, list[int]] = {}
    for path in sorted(logs.glob(f"{name}-*.err")):
        for match in PROGRESS.finditer(path.read_text(errors="replace")):
            seen.setdefault(match[1], []).append(int(match[2]))
    return {stage: round(sum(v) / len(v), 1) for stage, v in seen.items()}


def answered_before(server: LLMTestServer, phase: int, killed_at: float, cache: Path) -> Answered:
    """The 200s the killed attempt (`phase`) was sent before `killed_at` (hangs excluded: the
    client had given up on them), and which of them reached the response cache."""
    in_cache = cached_fingerprints(cache)
    sent = {
        r.digest: sent_fingerprint(r.answer)
        for r in server.records(phase)
        if r.status == 200 and r.outcome != "hang" and r.time < killed_at and r.answer
    }
    return Answered(set(sent), {d for d, fp in sent.items() if fp in in_cache})


def asked_again(run: Run, server: LLMTestServer, evidence: dict[int, Answered]) -> None:
    """For each kill: which answered requests any later attempt sent again."""
    records = server.records()
    for phase, answered in evidence.items():
        attempt = run.attempts[phase - 1]
        again = answered.sent & {r.digest for r in records if r.phase > phase}
        attempt.asked_again = len(again)
        attempt.asked_again_cached = len(again & answered.cached)
        attempt.asked_again_in_flight = attempt.asked_again - attempt.asked_again_cached
    within = 0
    for phase in range(1, len(run.attempts) + 1):
        seen: Counter[str] = Counter()
        for r in records:
            if r.phase == phase and r.status == 200 and r.outcome != "hang":
                seen[r.digest] += 1
        within += sum(n - 1 for n in seen.values() if n > 1)
    run.resent_within_attempt = within
    run.outcomes = dict(Counter(r.outcome for r in records))
    run.requests = len(records)


# ------------------------------------------------------------------------------ accounting


def raw_duplicates(bank: Path, group: str, column: str = KEY) -> int:
    files = part_files(bank / group)
    if not files:
        return 0
    ids = pds.dataset([str(f) for f in files]).to_table(columns=[column]).column(0).to_pylist()
    return len(ids) - len(set(ids))


def account(bank: Path, users: list[str]) -> dict[str, dict[str, int]]:
    """Per stage: rows in, bank rows, failures, and every way the two could disagree."""
    judge = load_config().judge
    quality = read_group(bank, "quality", [KEY, "quality"])
    ids, verdicts = quality.column(KEY).to_pylist(), quality.column("quality").to_pylist()
    kept = [
        pid
        for pid, q in zip(ids, verdicts, strict=True)
        if decide(q, judge.threshold, dict(judge.min_scores))[0]
    ]
    personas = read_group(bank, "personas", [KEY]).column(KEY).to_pylist()
    stages = {
        "mine": (users, personas, "personas"),
        "judge": (personas, ids, "quality"),
        "score": (kept, read_group(bank, "scores", [KEY]).column(KEY).to_pylist(), "scores"),
    }
    out = {}
    for stage, (rows_in, rows, group) in stages.items():
        failed = read_failures(bank, stage).column("input_id").to_pylist()
        done = set(rows) | set(failed)
        out[stage] = {
            "in": len(rows_in),
            "bank": len(rows),
            "failed": len(failed),
            "missing": len(set(rows_in) - done),
            "extra": len(done - set(rows_in)),
            "bank_and_failed": len(set(rows) & set(failed)),
            "failed_twice": len(failed) - len(set(failed)),
            "raw_duplicates": raw_duplicates(bank, group),
        }
    return out


# ------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=None, help="users (default 5000)")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--fault-rate", type=float, default=0.25)
    parser.add_argument("--score-mode", default="auto", choices=["auto", "logprob", "batch"])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="200 users (the rate check)")
    args = parser.parse_args()
    users = args.users or (200 if args.quick else 5000)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"soak-{users}-"))
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    inputs = write_histories(
        workdir / "in", users, lambda i: f"Day {i % 7} of user {i}: tea, work and a walk."
    )
    histories = inputs / "histories"
    user_ids = [f"u{i:04d}/0" for i in range(users)]  # as write_histories names them
    print(f"soak: {users} users, score.mode={args.score_mode}, seed {args.seed}, in {workdir}")

    runs: list[Run] = []
    for name, rate in (("reference", 0.0), ("soak", args.fault_rate)):
        faults = JitteredFaults(
            MAX_LATENCY_S,
            rates={kind: rate / len(FAULT_KINDS) for kind in FAULT_KINDS},
            hang_s=HANG_S,
            seed=args.seed,
        )
        bank = workdir / f"bank-{name}"
        run = Run(name, users)
        with SoakServer(faults) as server:
            command = [
                *(sys.executable, "-m", "personagen", "build"),
                *("--input", str(histories), "--out", str(bank)),
                *settings(server, args.score_mode, args.seed),
            ]
            if name == "reference":
                kills: list[int] = []
            else:
                total = runs[0].requests
                rng = random.Random(args.seed)
                kills = [round(rng.uniform(*KILL_WINDOW) * total) for _ in range(args.kills)]
                print(
                    f"  kills after {kills} requests of each attempt (the reference: {total})",
                    flush=True,
                )
            evidence = run_build(run, server, command, bank, logs, kills)
            asked_again(run, server, evidence)
            times = [r.time for r in server.records()]
            run.traffic_s = round(max(times) - min(times), 1)
        run.rows = account(bank, user_ids)
        run.limits = mean_limits(logs, name)
        runs.append(run)
        print(f"  {name}: {run.wall_s} s, {run.requests} requests", flush=True)
        result = {
            "users": users,
            "seed": args.seed,
            "score_mode": args.score_mode,
            "fault_rate": args.fault_rate,
            "runs": [asdict(r) for r in runs],
        }
        (workdir / "soak-result.json").write_text(json.dumps(result, indent=1))
    text = report(runs)
    (workdir / "soak-report.md").write_text(text + "\n")
    print("\n" + text)


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report(runs: list[Run]) -> str:
    """The tables of the runs, as Markdown."""
    overview = []
    for run in runs:
        m = run.memory
        faults = sum(n for k, n in run.outcomes.items() if k != "ok")
        load = f"{sum(m.load) / max(1, len(m.load)):.1f} / {max(m.load, default=0):.1f}"
        overview.append(
            [
                run.name,
                f"{run.users:,}",
                len(run.attempts),
                f"{run.wall_s:,.1f}",
                f"{run.requests:,}",
                f"{faults:,}",
                f"{m.driver_mb:,.0f}",
                f"{m.largest_worker_mb:,.0f}",
                f"{m.workers_mb:,.0f}",
                f"{m.tree_mb:,.0f}",
                load,
            ]
        )
    rows = [
        [
            run.name,
            stage,
            f"{r['in']:,}",
            f"{r['bank']:,}",
            f"{r['failed']:,}",
            "yes" if r["in"] == r["bank"] + r["failed"] else "**no**",
            r["missing"],
            r["extra"],
            r["bank_and_failed"],
            r["failed_twice"],
            r["raw_duplicates"],
        ]
        for run in runs
        for stage, r in run.rows.items()
    ]
    soak = runs[-1]
    kills = [
        [
            number,
            a.killed_at_s,
            f"{a.requests:,}",
            "/".join(str(a.rows_at_kill[g]) for g in ("personas", "quality", "scores", "failures")),
            f"{a.answered:,}",
            f"{a.answered_cached:,}",
            a.asked_again,
            a.asked_again_cached,
            a.asked_again_in_flight,
        ]
        for number, a in enumerate((a for a in soak.attempts if a.killed_at_s is not None), 1)
    ]
    parts = [
        table(
            [
                "run",
                "users",
                "attempts",
                "wall s",
                "requests",
                "faults injected",
                "driver MB",
                "largest worker MB",
                "all workers MB",
                "whole tree MB",
                "load mean / max",
            ],
            overview,
        ),
        table(
            [
                "run",
                "stage",
                "rows in",
                "bank rows",
                "failures",
                "in = bank + failures",
                "missing",
                "extra",
                "in bank and failed",
                "failed twice",
                "raw duplicate ids",
            ],
            rows,
        ),
        table(
            [
                "kill",
                "at s (of its attempt)",
                "requests of the attempt",
                "bank at kill: personas/quality/scores/failures",
                "200s before the kill",
                "of them in the cache",
                "asked again after",
                "of them cached (must be 0)",
                "of them in flight at the kill",
            ],
            kills,
        ),
        f"Outcomes sent in the soak: {dict(sorted(soak.outcomes.items()))}",
    ]
    for run in runs:
        parts.append(
            f"{run.name}: mean concurrency limit per stage {run.limits}; 200s asked again "
            f"within one attempt: {run.resent_within_attempt}; uptime: {' -> '.join(run.uptime)}"
        )
    return "\n\n".join(parts)


if __name__ == "__main__":
    main()
