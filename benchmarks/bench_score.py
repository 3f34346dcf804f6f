"""Scoring throughput: per-item (logprob) vs batch answers, against a stub and the embedded model.

1. Stub endpoint (`tests/llm_test_server.py` in its own process, fixed latency per request):
   the real `personagen.commands.score.score` (Ray Data actor pool, bank sink; response cache
   off) on a fresh bank per mode. Per-item mode sends 50 one-token requests per persona
   (IPIP-50), batch mode one JSON request. Compared, in the same run, with the bound
   (concurrency / latency requests per second) and the peer: a plain `openai.AsyncOpenAI` loop
   sending the same one-token logprob requests with a semaphore of the same concurrency (no
   Ray, no bank). The stub answers every request after the same latency whatever its length,
   which flatters batch mode: a real server takes about as long per generated token, and a
   batch answer is ~50 times longer than a one-token answer (see part 2 for a real model).

2. Embedded llama.cpp server (SmolLM2-135M, one request at a time): seconds per persona of the
   stage's row function in each mode (no Ray: the model is the bottleneck), and what putting the
   persona first buys: the same 50 requests with the persona before the statement (llama.cpp
   reuses the cached persona prefix) and with the statement before the persona (no reuse).

    python benchmarks/bench_score.py [--latency 0.2] [--concurrency 32] [--actors 1 2]
        [--personas 40] [--batch-personas 400] [--embedded 3] [--no-stub] [--no-embedded]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import openai
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_mine_throughput import stage_rate, start_stub, stub  # noqa: E402

from personagen.commands.score import score  # noqa: E402
from personagen.config import RayConfig, load_config  # noqa: E402
from personagen.io.bank import KEY, write_group  # noqa: E402
from personagen.llm.client import LLMClient  # noqa: E402
from personagen.llm.options import EmbeddedServerOptions  # noqa: E402
from personagen.llm.prompts import encode_data  # noqa: E402
from personagen.llm.server import EmbeddedServer  # noqa: E402
from personagen.llm.structured import OutputError  # noqa: E402
from personagen.llm.usage import Usage  # noqa: E402
from personagen.psychometrics.instruments import IPIP_50  # noqa: E402
from personagen.runtime.cluster import init_ray  # noqa: E402
from personagen.stages.base import ask  # noqa: E402
from personagen.stages.score import item_messages, scale_text, score_stage  # noqa: E402

NARRATIVES = [
    "This person is a retired librarian in a small coastal town who lives alone with two cats. "
    "She avoids crowds and parties, prefers long walks and quiet evenings with a book, and "
    "worries a great deal about her health and about money.",
    "This person is a sales manager in his thirties who organises a party almost every weekend, "
    "talks to everyone he meets and loves being the centre of attention. He is relaxed, often "
    "late and a little disorganised, and curious about new places and ideas.",
    "This person is a nursing student who works night shifts at a care home, keeps meticulous "
    "notes, volunteers at an animal shelter on weekends and gets anxious before every exam, "
    "though friends describe her as warm and patient.",
    "This person is a software developer who moved abroad for work, plays chess online, argues "
    "about politics on forums, cooks elaborate dinners for a few close friends and rarely "
    "plans more than a day ahead.",
]


def write_bank(bank: Path, n: int) -> None:
    ids = [f"user{i}/0" for i in range(n)]
    write_group(
        bank,
        "personas",
        pa.table(
            {
                KEY: ids,
                "user_id": [i.split("/")[0] for i in ids],
                "window_id": pa.array([0] * n, pa.int32()),
                "narrative": [f"{NARRATIVES[i % 4]} (persona {i})" for i in range(n)],
                "attributes": pa.nulls(n),
                "source_meta": ["{}"] * n,
                "model": ["bench"] * n,
                "prompt_version": ["bench"] * n,
            }
        ),
    )


# ------------------------------------------------------------------------------ part 1: stub


def run_score(
    base_url: str,
    workdir: Path,
    mode: str,
    personas: int,
    concurrency: int,
    actors: int,
    latency: float,
    batch_size: int | None = None,
):
    """(stage req/s as the stub saw them, requests, wall seconds) of one `score` run."""
    bank = workdir / f"bank-{mode}-{actors}-{batch_size}"
    write_bank(bank, personas)
    cfg = load_config(
        None,
        [
            f"llm.base_url={base_url}",
            f"llm.concurrency={concurrency // actors}",
            f"pools.score.actors={actors}",
            f"pools.score.batch_size={batch_size if batch_size else 'null'}",
            "llm.cache=false",
            "progress_s=60",
            f"score.mode={mode}",
        ],
    )
    stub(base_url, "/_reset", "POST")
    start = time.perf_counter()
    summary = score(cfg, bank)
    wall = time.perf_counter() - start
    assert summary.counts["score:out"] == personas, summary.counts
    stats = stub(base_url, "/_stats")
    return stage_rate(stats, latency), stats["answered"], wall


def plain_async(base_url: str, n: int, concurrency: int) -> float:
    """The peer: one-token logprob requests with a persona prompt, a semaphore, no Ray."""
    cfg = load_config(None, [f"llm.base_url={base_url}"])
    stage = score_stage(cfg, IPIP_50, "logprob")
    messages = [
        item_messages(stage.params, NARRATIVES[k % 4], IPIP_50.items[k % 50]) for k in range(n)
    ]

    async def run() -> float:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
        slots = asyncio.Semaphore(concurrency)

        async def one(m) -> None:
            async with slots:
                await client.chat.completions.create(
                    model="m", messages=m, max_tokens=1, logprobs=True, top_logprobs=20
                )

        start = time.perf_counter()
        await asyncio.gather(*(one(m) for m in messages))
        elapsed = time.perf_counter() - start
        await client.close()
        return n / elapsed

    return asyncio.run(run())


def stub_part(args: argparse.Namespace, workdir: Path) -> None:
    process, base_url = start_stub(args.latency, workdir)
    try:
        init_ray(RayConfig(num_cpus=2, object_store_mb=512))
        c, latency = args.concurrency, args.latency
        bound = c / latency
        print(f"stub latency {latency * 1000:.0f} ms, concurrency {c}: bound {bound:.0f} req/s")
        print(
            f"{'mode':>8} {'actors':>6} {'personas':>8} {'requests':>8} {'stage req/s':>11} "
            f"{'% bound':>7} {'items/s':>8} {'personas/s':>10} {'wall s':>7}"
        )
        for mode, n in (("logprob", args.personas), ("batch", args.batch_personas)):
            for actors in args.actors:
                rate, requests, wall = run_score(base_url, workdir, mode, n, c, actors, latency)
                items_rate = n * len(IPIP_50.items) / wall
                print(
                    f"{mode:>8} {actors:>6} {n:>8} {requests:>8} {rate:>11.1f} "
                    f"{100 * rate / bound:>6.0f}% {items_rate:>8.1f} {n / wall:>10.2f} "
                    f"{wall:>7.1f}",
                    flush=True,
                )
        peer = plain_async(base_url, args.personas * len(IPIP_50.items), c)
        print(f"peer: plain asyncio openai loop, same one-token requests: {peer:.1f} req/s")
    finally:
        process.terminate()
        process.wait(10)


# ------------------------------------------------------------------------------ part 2: model


async def persona_seconds(
    base_url: str, endpoint, mode: str, n: int
) -> tuple[float, Usage, list[str]]:
    """(seconds per persona, usage, failure reasons) of the row function on `n` personas."""
    cfg = load_config(None, [f"llm.base_url={base_url}", "llm.timeout_s=300"])
    llm = cfg.stage_llm("score")
    stage = score_stage(cfg, IPIP_50, mode)
    client = LLMClient(llm, endpoint, concurrency=1)
    usage = Usage()
    failures = []
    start = time.perf_counter()
    for i in range(n):
        row = {KEY: f"bench{i}/0", "narrative": NARRATIVES[i % 4]}
        try:
            await ask(stage, client, row, usage)
        except OutputError as exc:
            failures.append(str(exc))
    await client.aclose()
    return (time.perf_counter() - start) / n, usage, failures


def prefix_order_seconds(base_url: str, persona_first: bool) -> float:
    """50 one-token logprob requests for one persona, persona before or after the statement."""
    stage = score_stage(load_config(), IPIP_50, "logprob")
    client = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=300)
    narrative = " ".join(NARRATIVES) + (" (first)" if persona_first else " (second)")
    start = time.perf_counter()
    for item in IPIP_50.items:
        messages = item_messages(stage.params, narrative, item)
        if not persona_first:
            data = {
                "statement": item.text,
                "scale": scale_text(IPIP_50.scale),
                "persona": narrative,
            }
            user = messages[1]["content"]
            block = user.split("<data>\n", 1)[1].split("\n</data>", 1)[0]
            messages[1]["content"] = user.replace(block, encode_data(data))
        client.chat.completions.create(
            model="m",
            messages=messages,
            max_tokens=1,
            temperature=0,
            logprobs=True,
            top_logprobs=20,
        )
    client.close()
    return time.perf_counter() - start


def embedded_part(args: argparse.Namespace) -> None:
    with EmbeddedServer(EmbeddedServerOptions(n_ctx=2048), "smollm2-135m-instruct") as server:
        print(f"embedded SmolLM2-135M, {args.embedded} personas per mode, IPIP-50")
        print(
            f"{'mode':>8} {'s/persona':>9} {'failed':>6} {'requests':>8} {'repairs':>7} "
            f"{'prompt tok':>10} {'compl tok':>9}"
        )
        for mode in ("logprob", "text", "batch"):
            seconds, usage, failures = asyncio.run(
                persona_seconds(server.base_url, server.endpoint, mode, args.embedded)
            )
            print(
                f"{mode:>8} {seconds:>9.1f} {len(failures):>6} {usage.requests:>8} "
                f"{usage.repairs:>7} {usage.prompt_tokens:>10} {usage.completion_tokens:>9}",
                flush=True,
            )
            for reason in failures:
                print(f"    failed: {reason[:150]}")
        first = prefix_order_seconds(server.base_url, persona_first=True)
        last = prefix_order_seconds(server.base_url, persona_first=False)
        print(
            f"50 items, persona first (prefix reused): {first:.1f} s; statement first: "
            f"{last:.1f} s; x{last / first:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2], help="LLM actors")
    parser.add_argument("--personas", type=int, default=40, help="per-item mode, stub")
    parser.add_argument("--batch-personas", type=int, default=400, help="batch mode, stub")
    parser.add_argument("--embedded", type=int, default=3, help="personas per mode, real model")
    parser.add_argument("--no-stub", action="store_true")
    parser.add_argument("--no-embedded", action="store_true")
    args = parser.parse_args()
    if not args.no_stub:
        with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
            stub_part(args, Path(tmp))
    if not args.no_embedded:
        embedded_part(args)


if __name__ == "__main__":
    main()
