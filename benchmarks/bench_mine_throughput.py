"""Throughput of the mining stage against an OpenAI-compatible stub with a fixed latency.

For each concurrency C (requests in flight in all: `pools.mine.actors` = A LLM actors with
`llm.concurrency` = C / A each) it runs the real `personagen.commands.mine.mine` (Ray Data,
actor pool, bank sink; judge off, response cache off so every row is a request) and compares,
in the same run:

- the ideal bound: C / latency requests per second;
- a plain sequential loop of `openai` calls (what a naive script does): 1 / latency;
- a plain asyncio loop of `openai.AsyncOpenAI` calls with a semaphore of C (no Ray, no bank):
  the client library's own ceiling on this machine.

"stage req/s" is the stub's view: answers / (last answer - first answer + latency), i.e. the
rate while the stage runs. "end-to-end" adds Ray Data start-up (actors), reading and writing.

    python benchmarks/bench_mine_throughput.py [--latency 0.2] [--concurrency 8 32 128]
        [--actors 1 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import openai
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from personagen.commands.mine import mine  # noqa: E402
from personagen.config import RayConfig, load_config  # noqa: E402
from personagen.io.histories import HISTORY_COLUMNS  # noqa: E402
from personagen.runtime.cluster import init_ray  # noqa: E402


def write_histories(folder: Path, rows: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "history_id": [f"user{i}/0" for i in range(rows)],
            "user_id": [f"user{i}" for i in range(rows)],
            "window_id": [0] * rows,
            "posts": [
                [{"date": "1,May,2004", "text": f"User {i} writes about a day at work."}]
                for i in range(rows)
            ],
            "n_posts": [1] * rows,
            "n_tokens": [12] * rows,
            "source": ["bench"] * rows,
        },
        schema=HISTORY_COLUMNS,
    )
    pq.write_table(table, folder / "part-0.parquet")
    return folder


def start_stub(latency: float, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port_file = workdir / "port"
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "llm_test_server.py"),
            "--latency",
            str(latency),
            "--port-file",
            str(port_file),
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError("stub server did not start")
        time.sleep(0.05)
    return process, f"http://127.0.0.1:{port_file.read_text()}/v1"


def stub(base_url: str, path: str, method: str = "GET") -> dict:
    url = base_url.removesuffix("/v1") + path
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def stage_rate(stats: dict, latency: float) -> float:
    if not stats["answered"]:
        return 0.0
    return stats["answered"] / (stats["last"] - stats["first"] + latency)


MESSAGES = [{"role": "user", "content": "Describe a person who likes tea."}]


def sequential(base_url: str, n: int) -> float:
    client = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0)
    start = time.perf_counter()
    for _ in range(n):
        client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=16)
    client.close()
    return n / (time.perf_counter() - start)


def plain_async(base_url: str, n: int, concurrency: int) -> float:
    async def run() -> float:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
        slots = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with slots:
                await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=16)

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        elapsed = time.perf_counter() - start
        await client.close()
        return n / elapsed

    return asyncio.run(run())


def run_mine(
    base_url: str, workdir: Path, concurrency: int, actors: int, rows: int, latency: float
) -> tuple[float, float]:
    """(stage requests/s as the stub saw them, rows/s end to end) of one `mine` run."""
    name = f"{concurrency}x{actors}"
    histories = write_histories(workdir / f"h{name}" / "histories", rows)
    cfg = load_config(
        None,
        [
            f"llm.base_url={base_url}",
            f"llm.concurrency={concurrency // actors}",
            "llm.cache=false",
            "mine.judge=false",
            f"pools.mine.actors={actors}",
            "mine.min_words=5",
            "progress_s=60",
        ],
    )
    stub(base_url, "/_reset", "POST")
    start = time.perf_counter()
    summary = mine(cfg, histories.parent, workdir / f"bank{name}")
    wall = time.perf_counter() - start
    assert summary.counts["mine:out"] == rows, summary.counts
    return stage_rate(stub(base_url, "/_stats"), latency), rows / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=12.0, help="target stage duration")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mine-") as tmp:
        workdir = Path(tmp)
        process, base_url = start_stub(args.latency, workdir)
        try:
            init_ray(RayConfig(num_cpus=2, object_store_mb=512))
            seq = sequential(base_url, 20)
            latency_ms = args.latency * 1000
            print(f"stub latency {latency_ms:.0f} ms; sequential openai loop: {seq:.2f} req/s")
            header = (
                f"{'conc':>5} {'actors':>6} {'bound':>8} {'stage req/s':>12} {'% bound':>8} "
                f"{'end-to-end':>11} {'asyncio':>9} {'x seq':>7}"
            )
            print(header)
            for c in args.concurrency:
                bound = c / args.latency
                rows = max(200, int(bound * args.seconds))
                peer = plain_async(base_url, rows, c)
                for actors in args.actors:
                    rate, end_to_end = run_mine(base_url, workdir, c, actors, rows, args.latency)
                    print(
                        f"{c:>5} {actors:>6} {bound:>8.1f} {rate:>12.1f} "
                        f"{100 * rate / bound:>7.0f}% {end_to_end:>11.1f} {peer:>9.1f} "
                        f"{rate / seq:>7.1f}",
                        flush=True,
                    )
        finally:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
