"""Scale of `personagen build`: wall time per stage, rows/s and peak memory at 10k-100k users.

Inputs: synthetic users resampled from the real Blog Authorship Corpus (../shared/data/blogs):
the corpus is parsed once with personagen's blogs reader into a pool of posts; user i gets 15-40
posts drawn from the pool (seeded) and the metadata (gender, age, industry, sign) of a random
blogger, written as Parquet files of 1,000 users (one row per user with a `posts` list), cached
under the work dir (`--workdir`, not the repository) once per N.

LLM: a fast zero-latency stub (`benchmarks/_llm_stub.py`, its own process) answers every request
with valid JSON (200-word narratives); first measured against the test server
(`tests/llm_test_server.py`) with the same `openai` load generator, to show it is not the
bottleneck. Scoring runs in batch mode (one request per persona, all 50 IPIP items in one JSON
answer); logprob mode sends 50 one-token requests per persona (figures derived in the summary).

The build: `personagen.commands.build.build` in a subprocess (its own fresh local Ray: 2 CPUs,
512 MB object store), with timers wrapped around its phases (input fingerprint, the stream, the
bank-wide steps, the FAISS index, alignment) and the progress lines (`progress_s=1`) recorded,
so each stream stage gets a first-row -> last-row interval. The parent samples every 0.5 s: RSS
of the driver (the build process) and of its `ray::*` worker processes (largest single worker
and largest sum; RSS counts shared pages such as the object store in every process, so
"private" = RSS - shared is given too), the stub's CPU time and the load average.

    python benchmarks/bench_build_scale.py [--users 10000 30000] [--workdir DIR]
        [--stub-check 3000] [--keep-banks] [--label NAME] [--set build.embed=false ...]
        [--reprint]

Each run's raw measurements go to WORKDIR/result-LABEL-N.json; `--reprint` prints the tables
of saved runs again. Results and their reading: benchmarks/RESULTS.md, "Build at scale".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BLOGS = ROOT.parent / "shared" / "data" / "blogs" / "blogs"
USERS_PER_FILE = 1000
POSTS_PER_USER = (15, 40)
STAGES = ("mine", "judge", "score", "embed")
LLM_STAGES = ("mine", "judge", "score")
IPIP_ITEMS = 50

# ------------------------------------------------------------------------------ inputs


def post_pool(workdir: Path) -> tuple[pa.Table, pa.Table]:
    """(posts, bloggers) of the real corpus, parsed once with personagen's reader and cached."""
    posts_file, bloggers_file = workdir / "pool-posts.parquet", workdir / "pool-bloggers.parquet"
    if posts_file.exists() and bloggers_file.exists():
        return pq.read_table(posts_file), pq.read_table(bloggers_file)
    from personagen.io.blogs import read_blog_file

    if not BLOGS.is_dir():
        sys.exit(f"needs the shared blog data at {BLOGS} (absent on this machine)")
    dates, texts, meta = [], [], []
    for path in sorted(BLOGS.glob("*.xml")):
        blog = read_blog_file(path)
        meta.append(
            {"gender": blog.gender, "age": blog.age, "industry": blog.industry, "sign": blog.sign}
        )
        for post in blog.posts:
            dates.append(post["date"])
            texts.append(post["text"])
    posts = pa.table({"date": pa.array(dates, pa.string()), "text": pa.array(texts, pa.string())})
    bloggers = pa.Table.from_pylist(meta)
    workdir.mkdir(parents=True, exist_ok=True)
    pq.write_table(posts, posts_file)
    pq.write_table(bloggers, bloggers_file)
    return posts, bloggers


def synthetic_users(workdir: Path, n: int, seed: int) -> Path:
    """N users resampled from the pool, as Parquet files of `USERS_PER_FILE` users (cached)."""
    folder = workdir / f"users-{n}-seed{seed}"
    if (folder / "DONE").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    posts, bloggers = post_pool(workdir)
    post_struct = pa.StructArray.from_arrays(
        [posts.column("date").combine_chunks(), posts.column("text").combine_chunks()],
        names=["date", "text"],
    )
    rng = np.random.default_rng(seed)
    for first in range(0, n, USERS_PER_FILE):
        users = min(USERS_PER_FILE, n - first)
        counts = rng.integers(POSTS_PER_USER[0], POSTS_PER_USER[1] + 1, size=users)
        picks = rng.integers(0, len(post_struct), size=int(counts.sum()))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        who = bloggers.take(rng.integers(0, bloggers.num_rows, size=users))
        table = pa.table(
            {
                "user_id": [f"s{i:07d}" for i in range(first, first + users)],
                "posts": pa.ListArray.from_arrays(offsets, post_struct.take(picks)),
                **{name: who.column(name) for name in who.column_names},
            }
        )
        pq.write_table(table, folder / f"users-{first // USERS_PER_FILE:05d}.parquet")
    (folder / "DONE").write_text(str(n))
    return folder


# ------------------------------------------------------------------------------ the stub


def start_llm_stub(workdir: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """The fast stub in its own process: (process, base URL, its stats file)."""
    port_file, stats = workdir / "stub.port", workdir / "stub-stats.json"
    port_file.unlink(missing_ok=True)
    stats.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "_llm_stub.py"),
        "--port-file",
        str(port_file),
        "--stats",
        str(stats),
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _wait_for_port(process, port_file)
    return process, f"http://127.0.0.1:{port_file.read_text()}/v1", stats


def _wait_for_port(process: subprocess.Popen[bytes], port_file: Path) -> None:
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError("stub server did not start")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def mine_like_request(posts: pa.Table) -> dict[str, Any]:
    """A request the size of a real mining request: ~3,000 tokens of posts and the schema."""
    from personagen.llm.structured import json_schema
    from personagen.stages.persona import PersonaAnswer

    text = "\n\n".join(posts.column("text").to_pylist()[:12])[:12000]
    return {
        "messages": [
            {"role": "system", "content": "Describe the author."},
            {"role": "user", "content": text},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "schema": json_schema(PersonaAnswer),
                "strict": False,
            },
        },
        "max_tokens": 768,
    }


def endpoint_cost(
    process: subprocess.Popen[bytes], base_url: str, request: dict[str, Any], n: int
) -> tuple[float, float]:
    """(requests/s seen by an `openai.AsyncOpenAI` loop with 32 in flight, CPU ms the server
    spent per request). The client shares the 2 cores, so the CPU cost is the figure that
    says how many requests/s one server core can answer."""
    import openai

    server = psutil.Process(process.pid)

    async def run() -> float:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
        slots = asyncio.Semaphore(32)

        async def one() -> None:
            async with slots:
                await client.chat.completions.create(model="stub", **request)

        await asyncio.gather(*(one() for _ in range(min(50, n))))  # warm the connections
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        elapsed = time.perf_counter() - start
        await client.close()
        return n / elapsed

    cpu = sum(server.cpu_times()[:2])
    rate = asyncio.run(run())
    return rate, 1000 * (sum(server.cpu_times()[:2]) - cpu) / n


def stub_check(workdir: Path, n: int) -> dict[str, tuple[float, float]]:
    """`endpoint_cost` of the test server and of the fast stub on mine-sized requests."""
    from bench_mine_throughput import start_stub

    posts, _ = post_pool(workdir)
    request = mine_like_request(posts)
    costs = {}
    with tempfile.TemporaryDirectory(dir=workdir) as fresh:  # start_stub's port file is fixed
        process, url = start_stub(0.0, Path(fresh))
    try:
        costs["test server"] = endpoint_cost(process, url, request, n)
    finally:
        stop(process)
    process, url, _ = start_llm_stub(workdir)
    try:
        costs["fast stub"] = endpoint_cost(process, url, request, n)
    finally:
        stop(process)
    return costs


# ------------------------------------------------------------------------------ the driver

PROGRESS = re.compile(
    r"^(\w+): ([\d,]+)/([\d,]+) rows .*?, ([\d,]+) tokens(?: \([\d,]+/s\))?, ([\d,]+) requests"
)
"""A progress line of `personagen.runtime.progress.progress_line` (tokens/s optional: lines
before it was added had none)."""


class ProgressLines(logging.Handler):
    """Keeps (time, stage, rows done, rows entered, tokens, requests) of each progress line."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: list[tuple[float, str, int, int, int, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = PROGRESS.match(record.getMessage())
        if match:
            stage, *numbers = match.groups()
            values = [int(x.replace(",", "")) for x in numbers]
            self.samples.append((record.created, stage, *values))


def driver(spec_file: Path) -> None:
    """Run one build (in this process: it is the driver the parent measures), timing its phases."""
    from personagen.commands import build as build_module
    from personagen.config import load_config
    from personagen.logs import setup_logging

    spec = json.loads(spec_file.read_text())
    setup_logging()
    lines = ProgressLines()
    logging.getLogger("personagen.runtime.progress").addHandler(lines)
    phases: dict[str, tuple[float, float]] = {}

    def timed(module: Any, name: str, label: str) -> None:
        """Time calls of `module.name` as the phase `label`; a phase timed through several
        functions spans from the first one's start to the last one's end."""
        function = getattr(module, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.time()
            try:
                return function(*args, **kwargs)
            finally:
                first = phases[label][0] if label in phases else start
                phases[label] = (min(first, start), time.time())

        setattr(module, name, wrapper)

    # The build's alignment step is the reference load, the persona read and the align command
    # (once one `run_align` call): together the "align" phase (with build.adapt on, it also
    # spans the adapted set's reference load, which follows).
    for module, name, label in [
        (build_module, "input_fingerprint", "fingerprint"),
        (build_module, "_stream", "stream"),
        (build_module, "_bank_steps", "bank steps"),
        (build_module, "index", "index"),
        (build_module, "load", "align"),
        (build_module, "read_personas", "align"),
        (build_module, "align", "align"),
        (build_module, "_finish", "finish"),
    ]:
        timed(module, name, label)
    cfg = load_config(overrides=spec["settings"]).updated({"build.input": spec["input"]})
    start = time.time()
    summary = build_module.build(cfg, spec["bank"])
    result = {
        "start": start,
        "end": time.time(),
        "phases": phases,
        "progress": lines.samples,
        "counts": dict(summary.counts),
    }
    Path(spec["result"]).write_text(json.dumps(result))


# ------------------------------------------------------------------------------ sampling


@dataclass
class Samples:
    """What the sampler saw of one build's process tree."""

    times: list[float] = field(default_factory=list)
    driver_mb: list[float] = field(default_factory=list)
    worker_sum_mb: list[float] = field(default_factory=list)
    worker_max_mb: list[float] = field(default_factory=list)
    worker_private_max_mb: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    cpu_s: dict[int, float] = field(default_factory=dict)
    """Latest user + system CPU seconds seen per process of the tree."""
    kinds: dict[int, str] = field(default_factory=dict)
    """What each process was (its last title other than ray::IDLE)."""
    peak_mb: dict[str, list[float]] = field(default_factory=dict)
    """Largest RSS of one process of each kind, and when (epoch seconds)."""


def process_kind(process: psutil.Process, driver_pid: int) -> str:
    """driver, a Ray worker's title (ray::MapWorker(...), method suffix dropped), or the
    program (raylet, gcs_server, a Python module)."""
    if process.pid == driver_pid:
        return "driver"
    cmdline = process.cmdline() or [process.name()]
    if cmdline[0].startswith("ray::"):
        return re.sub(r"(\)?)\.\w+$", r"\1", cmdline[0].split(" ")[0])
    if Path(cmdline[0]).name.startswith("python") and len(cmdline) > 1:
        return Path(cmdline[1] if cmdline[1] != "-m" else cmdline[2]).name
    return Path(cmdline[0]).name


def sample_tree(pid: int, samples: Samples, done: threading.Event, interval: float) -> None:
    mb = 2**20
    while not done.is_set():
        try:
            root = psutil.Process(pid)
            driver_mb = root.memory_info().rss / mb
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        workers = []
        for process in tree:
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    samples.cpu_s[process.pid] = times.user + times.system
                    kind = process_kind(process, pid)
                    if kind != "ray::IDLE" or process.pid not in samples.kinds:
                        samples.kinds[process.pid] = kind
                    memory = process.memory_info()
                    if memory.rss / mb > samples.peak_mb.get(kind, [0.0])[0]:
                        samples.peak_mb[kind] = [memory.rss / mb, time.time()]
                    if kind.startswith("ray::"):
                        workers.append(memory)
            except (psutil.Error, IndexError):
                continue
        samples.times.append(time.time())
        samples.driver_mb.append(driver_mb)
        samples.worker_sum_mb.append(sum(w.rss for w in workers) / mb)
        samples.worker_max_mb.append(max((w.rss for w in workers), default=0) / mb)
        samples.worker_private_max_mb.append(
            max((w.rss - w.shared for w in workers), default=0) / mb
        )
        samples.load.append(os.getloadavg()[0])
        done.wait(interval)


def run_build(
    tag: str,
    users: Path,
    bank: Path,
    base_url: str,
    stub_pid: int,
    workdir: Path,
    settings: list[str],
) -> dict[str, Any]:
    """One measured build of `users` into `bank` (replaced); `settings` = extra `--set`s."""
    shutil.rmtree(bank, ignore_errors=True)
    spec = {
        "input": str(users),
        "bank": str(bank),
        "result": str(workdir / f"driver-{tag}.json"),
        "settings": [
            f"llm.base_url={base_url}",
            "llm.model=stub",
            "llm.api_key_env=PG_BENCH_SCALE_KEY",
            "score.mode=batch",
            "progress_s=1",
            "build.align.enabled=true",
            "ray.num_cpus=2",
            "ray.object_store_mb=512",
            *settings,
        ],
    }
    spec_file = workdir / f"spec-{tag}.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PG_BENCH_SCALE_KEY": "sk-bench"}
    env.pop("RAY_ADDRESS", None)
    log_file = workdir / f"build-{tag}.log"
    stub = psutil.Process(stub_pid)
    stub_cpu = sum(stub.cpu_times()[:2])
    load_before = os.getloadavg()
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, __file__, "_driver", str(spec_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        samples, done = Samples(), threading.Event()
        sampler = threading.Thread(target=sample_tree, args=(process.pid, samples, done, 0.5))
        sampler.start()
        returncode = process.wait()
        done.set()
        sampler.join()
    if returncode != 0:
        tail = log_file.read_text()[-4000:]
        raise RuntimeError(f"build {tag} failed ({returncode}); {log_file}:\n{tail}")
    result = json.loads(Path(spec["result"]).read_text())
    result["samples"] = asdict(samples)
    result["stub_cpu_s"] = sum(stub.cpu_times()[:2]) - stub_cpu
    result["load_before"] = load_before
    files = [f for f in bank.rglob("*") if f.is_file()]
    result["bank_mb"] = sum(f.stat().st_size for f in files) / 2**20
    result["bank_files"] = len(files)
    return result


# ------------------------------------------------------------------------------ figures


def stage_intervals(progress: list[list[Any]]) -> dict[str, tuple[float, float, int]]:
    """(first, last, rows) per stream stage from the progress lines: first = the first line with
    a row done, last = the first line with the final count; `ingest` from the rows entered (its
    first line shows a whole block, so the caller starts it with the stream)."""
    out = {}
    stages = sorted({p[1] for p in progress})
    for stage in stages:
        lines = [p for p in progress if p[1] == stage]
        final = lines[-1][2]
        if final:
            first = next(p[0] for p in lines if p[2] > 0)
            last = next(p[0] for p in lines if p[2] == final)
            out[stage] = (first, last, final)
    if stages:
        lines = [p for p in progress if p[1] == stages[0]]
        total = lines[-1][3]
        if total:
            out["ingest"] = (
                next(p[0] for p in lines if p[3] > 0),
                next(p[0] for p in lines if p[3] == total),
                total,
            )
    return out


def per_second_peak(stats: dict[str, Any], stage: str) -> float:
    seconds = stats.get(stage, {}).get("per_second", {})
    return max(seconds.values(), default=0)


def figures(n: int, result: dict[str, Any]) -> dict[str, Any]:
    counts, stub_stats = result["counts"], result["stub"]
    samples = Samples(**result["samples"])
    phases = {k: tuple(v) for k, v in result["phases"].items()}
    stream = phases["stream"]
    in_stream = [i for i, t in enumerate(samples.times) if stream[0] <= t <= stream[1]]
    intervals = stage_intervals(result["progress"])
    if "ingest" in intervals:  # the ingest starts with the stream; rows enter in whole blocks
        intervals["ingest"] = (stream[0], *intervals["ingest"][1:])
    stages = {}
    for stage in ("ingest", *STAGES):
        if stage not in intervals:
            continue
        first, last, rows = intervals[stage]
        span = max(last - first, 1.0)
        entry = {
            "first_s": first - result["start"],
            "span_s": span,
            "rows": rows,
            "rows_s": rows / span,
        }
        if stage in LLM_STAGES:
            entry["requests"] = counts.get(f"{stage}:requests", 0)
            entry["prompt_tokens"] = counts.get(f"{stage}:prompt_tokens", 0)
            entry["completion_tokens"] = counts.get(f"{stage}:completion_tokens", 0)
            entry["req_s"] = entry["requests"] / span
            entry["tok_s"] = (entry["prompt_tokens"] + entry["completion_tokens"]) / span
            entry["peak_req_s"] = per_second_peak(stub_stats, stage)
        stages[stage] = entry
    wall = result["end"] - result["start"]
    return {
        "users": n,
        "rows": counts.get("build:todo", 0),
        "wall_s": wall,
        "phases": {k: v[1] - v[0] for k, v in phases.items()},
        "setup_s": stream[0] - result["start"],
        "stages": stages,
        "driver_stream_mb": max((samples.driver_mb[i] for i in in_stream), default=0),
        "driver_peak_mb": max(samples.driver_mb, default=0),
        "worker_max_mb": max(samples.worker_max_mb, default=0),
        "worker_private_max_mb": max(samples.worker_private_max_mb, default=0),
        "worker_sum_mb": max(samples.worker_sum_mb, default=0),
        "load_mean": float(np.mean(samples.load)) if samples.load else 0.0,
        "load_before": result["load_before"][0],
        "tree_cpu_s": sum(samples.cpu_s.values()),
        "cpu_by_kind": cpu_by_kind(samples),
        "peak_mb": {k: (mb, at - result["start"]) for k, (mb, at) in samples.peak_mb.items()},
        "stub_cpu_s": result["stub_cpu_s"],
        "stub_ms_per_request": 1000
        * result["stub_cpu_s"]
        / max(1, sum(counts.get(f"{s}:requests", 0) for s in LLM_STAGES)),
        "bank_mb": result["bank_mb"],
        "bank_files": result["bank_files"],
        "counts": counts,
    }


def cpu_by_kind(samples: Samples) -> dict[str, float]:
    """CPU seconds of the build's processes, summed by kind, largest first."""
    totals: dict[str, float] = {}
    for pid, seconds in samples.cpu_s.items():
        kind = samples.kinds.get(pid, "?")
        totals[kind] = totals.get(kind, 0.0) + seconds
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def print_tables(runs: list[dict[str, Any]]) -> None:
    print("\nwall time (s) per phase; stream stages: first row -> last row (they overlap)")
    phase_names = ["setup", "stream", "bank steps", "index", "align", "finish"]
    print(
        f"{'users':>8} {'rows':>8} {'total':>8} "
        + " ".join(f"{p:>10}" for p in phase_names)
        + f" {'s/1k users':>11} {'load':>5}"
    )
    for r in runs:
        walls = [r["setup_s"], *(r["phases"].get(p, 0.0) for p in phase_names[1:])]
        print(
            f"{r['users']:>8,} {r['rows']:>8,} {r['wall_s']:>8.1f} "
            + " ".join(f"{w:>10.1f}" for w in walls)
            + f" {1000 * r['wall_s'] / r['users']:>11.2f} {r['load_mean']:>5.1f}"
        )

    print("\nstream stages: rows/s over each stage's own span; LLM requests and tokens as sent")
    print(
        f"{'users':>8} {'stage':>7} {'start s':>8} {'span s':>8} {'rows':>8} {'rows/s':>8} "
        f"{'requests':>9} {'req/s':>7} {'peak/s':>7} {'tokens/s':>9}"
    )
    for r in runs:
        for stage, s in r["stages"].items():
            llm = (
                f"{s['requests']:>9,} {s['req_s']:>7.1f} {s['peak_req_s']:>7.0f} "
                f"{s['tok_s']:>9,.0f}"
                if "requests" in s
                else f"{'':>9} {'':>7} {'':>7} {'':>9}"
            )
            print(
                f"{r['users']:>8,} {stage:>7} {s['first_s']:>8.1f} {s['span_s']:>8.1f} "
                f"{s['rows']:>8,} {s['rows_s']:>8.1f} {llm}"
            )

    print("\nmemory (MB RSS; private = RSS - shared) and CPU")
    print(
        f"{'users':>8} {'driver (stream)':>16} {'driver (peak)':>14} {'worker max':>11} "
        f"{'private':>8} {'workers sum':>12} {'CPU s (tree)':>13} {'stub CPU s':>11} "
        f"{'stub ms/req':>12} {'bank MB':>8} {'bank files':>11}"
    )
    for r in runs:
        print(
            f"{r['users']:>8,} {r['driver_stream_mb']:>16.0f} {r['driver_peak_mb']:>14.0f} "
            f"{r['worker_max_mb']:>11.0f} {r['worker_private_max_mb']:>8.0f} "
            f"{r['worker_sum_mb']:>12.0f} {r['tree_cpu_s']:>13.0f} {r['stub_cpu_s']:>11.0f} "
            f"{r['stub_ms_per_request']:>12.2f} {r['bank_mb']:>8.0f} {r['bank_files']:>11,}"
        )
    for r in runs:
        top = list(r["cpu_by_kind"].items())[:6]
        print(f"{r['users']:>8,} CPU s by process: " + ", ".join(f"{k} {v:.0f}" for k, v in top))
        top = sorted(r["peak_mb"].items(), key=lambda kv: -kv[1][0])[:5]
        print(
            f"{r['users']:>8,} peak MB by process (s after start): "
            + ", ".join(f"{k} {mb:.0f} ({at:.0f})" for k, (mb, at) in top)
        )
    print_sizing(runs[-1])


def print_sizing(run: dict[str, Any]) -> None:
    """What an endpoint must supply per 1k users per minute of target wall time."""
    counts, users = run["counts"], run["users"]
    print(f"\nsizing, from the {users:,}-user run: per 1,000 users to finish in one minute")
    print(
        f"{'stage':>16} {'req/user':>9} {'prompt tok/req':>15} {'compl tok/req':>14} "
        f"{'req/s':>7} {'prompt tok/s':>13} {'compl tok/s':>12}"
    )
    for stage in LLM_STAGES:
        requests = counts.get(f"{stage}:requests", 0)
        if not requests:
            continue
        prompt = counts[f"{stage}:prompt_tokens"] / requests
        completion = counts[f"{stage}:completion_tokens"] / requests
        per_user = requests / users
        rate = 1000 * per_user / 60
        rows = [(f"{stage}", per_user, prompt, completion)]
        if stage == "score":
            rows.append(("score (logprob)", per_user * IPIP_ITEMS, logprob_prompt_tokens(), 1.0))
        for label, per, p, c in rows:
            rate = 1000 * per / 60
            print(
                f"{label:>16} {per:>9.2f} {p:>15,.0f} {c:>14,.0f} "
                f"{rate:>7.1f} {rate * p:>13,.0f} {rate * c:>12,.0f}"
            )


def logprob_prompt_tokens() -> float:
    """Mean prompt tokens of one logprob-mode item request for a 200-word persona, counted as
    the stub counts them (request characters / 4)."""
    from personagen.config import ScoreConfig
    from personagen.psychometrics.instruments import get_instrument
    from personagen.stages.score import ScoreParams, item_messages, item_prompt

    instrument = get_instrument("ipip-50")
    params = ScoreParams(instrument, "logprob", item_prompt(), 0, ScoreConfig())
    narrative = " ".join(["word"] * 200)
    sizes = [len(json.dumps(item_messages(params, narrative, i))) for i in instrument.items]
    return float(np.mean(sizes)) / 4


# ------------------------------------------------------------------------------ main


def main() -> None:
    if sys.argv[1:2] == ["_driver"]:
        driver(Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 30_000])
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "personagen-bench-scale"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--stub-check",
        type=int,
        default=3000,
        help="requests per endpoint in the stub comparison (0: skip)",
    )
    parser.add_argument("--keep-banks", action="store_true")
    parser.add_argument(
        "--reprint", action="store_true", help="print the tables of runs already in the workdir"
    )
    parser.add_argument("--label", default="build", help="names the run's files in the workdir")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        help="extra build setting, e.g. build.embed=false (repeatable)",
    )
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"{time.strftime('%Y-%m-%d %H:%M')}; settings: {args.settings or 'defaults'}"
    )
    if args.stub_check and not args.reprint:
        print("endpoints, mine-sized requests, openai.AsyncOpenAI with 32 in flight:")
        for name, (rate, cpu_ms) in stub_check(workdir, args.stub_check).items():
            print(f"  {name}: {rate:,.0f} req/s seen by the client, {cpu_ms:.2f} CPU ms/request")
    runs = []
    for n in args.users:
        tag = f"{args.label}-{n}"
        saved = workdir / f"result-{tag}.json"
        if args.reprint:
            result = json.loads(saved.read_text())
        else:
            result = measured_build(workdir, n, tag, args)
            saved.write_text(json.dumps(result))
        runs.append(figures(n, result))
        print_tables(runs)


def measured_build(workdir: Path, n: int, tag: str, args: argparse.Namespace) -> dict[str, Any]:
    """Inputs (cached), a fresh stub, one measured build; the bank is removed unless kept."""
    t = time.perf_counter()
    users = synthetic_users(workdir, n, args.seed)
    print(f"{n:,} users in {users} ({time.perf_counter() - t:.0f} s)", flush=True)
    process, base_url, stats_file = start_llm_stub(workdir)
    bank = workdir / f"bank-{tag}"
    try:
        result = run_build(tag, users, bank, base_url, process.pid, workdir, args.settings)
    finally:
        stop(process)
    result["stub"] = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    if not args.keep_banks:
        shutil.rmtree(bank, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
