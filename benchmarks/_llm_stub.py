"""A fast zero-latency OpenAI-compatible stub for scale benchmarks, in its own process.

`tests/llm_test_server.py` (uvicorn + starlette, a log record and a SHA-256 digest per request)
is built for fault injection; this stub only answers, on a bare asyncio HTTP/1.1 server, so that
the build under test and not the endpoint sets the pace. Answers are valid under the request's
JSON schema (`instance()` of the test server), with a long narrative for mining, so the judge,
the scorer and the embedder see realistic text. It never injects faults or delays.

Counts per stage (requests, prompt and completion tokens, requests per wall-clock second) are
written as JSON to `--stats` every second and on SIGTERM. The stage of a request is told from
its answer schema: `narrative` = mine, `overall` = judge, anything else = score.

    python benchmarks/_llm_stub.py --port-file F --stats S [--narrative-words 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from llm_test_server import WORDS, instance, request_schema  # noqa: E402

STRING_WORDS = 20
"""Words of every string but the narrative (judge rationales, attributes)."""


class Stats:
    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.per_second: dict[str, Counter[int]] = defaultdict(Counter)

    def add(self, stage: str, prompt_tokens: int, completion_tokens: int) -> None:
        counts = self.counts[stage]
        counts["requests"] += 1
        counts["prompt_tokens"] += prompt_tokens
        counts["completion_tokens"] += completion_tokens
        self.per_second[stage][int(time.time())] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            stage: {**counts, "per_second": dict(self.per_second[stage])}
            for stage, counts in self.counts.items()
        }


def stage_of(schema: dict[str, Any] | None) -> str:
    properties = (schema or {}).get("properties", {})
    if "narrative" in properties:
        return "mine"
    if "overall" in properties:
        return "judge"
    return "score"


def answer(body: dict[str, Any], rng: random.Random, narrative_words: int) -> tuple[str, str]:
    """(stage, answer text) of one chat request."""
    schema = request_schema(body)
    stage = stage_of(schema)
    if schema is None:
        return stage, str(rng.randint(1, 5))
    value = instance(schema, rng, STRING_WORDS)
    if stage == "mine":
        value["narrative"] = " ".join(rng.choices(WORDS, k=narrative_words))
    return stage, json.dumps(value)


def completion(body: dict[str, Any], content: str, prompt_tokens: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "stub"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": max(1, len(content) // 4),
            "total_tokens": prompt_tokens + max(1, len(content) // 4),
        },
    }


MODELS = {"object": "list", "data": [{"id": "stub", "object": "model", "owned_by": "bench"}]}


async def handle(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    stats: Stats,
    rng: random.Random,
    narrative_words: int,
) -> None:
    """One keep-alive connection: requests with a Content-Length body, answered in order."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, path = request_line.split(" ")[:2]
            headers = dict(line.lower().split(": ", 1) for line in header_lines if ": " in line)
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if method == "POST" and path.endswith("/chat/completions"):
                request = json.loads(body)
                stage, content = answer(request, rng, narrative_words)
                prompt_tokens = len(body) // 4
                payload = completion(request, content, prompt_tokens)
                stats.add(stage, prompt_tokens, payload["usage"]["completion_tokens"])
                status = "200 OK"
            elif path.endswith("/models"):
                payload, status = MODELS, "200 OK"
            else:
                payload, status = {"error": {"message": f"no route {path}"}}, "404 Not Found"
            data = json.dumps(payload).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(data)}\r\n\r\n".encode()
                + data
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(args: argparse.Namespace) -> None:
    stats = Stats()
    rng = random.Random(args.seed)
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, stats, rng, args.narrative_words),
        "127.0.0.1",
        args.port,
        backlog=4096,
        limit=1 << 24,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = server.sockets[0].getsockname()[1]
    if args.port_file:
        args.port_file.write_text(str(port))
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        if args.stats:
            args.stats.write_text(json.dumps(stats.as_dict()))
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, help="write the port here once serving")
    parser.add_argument("--stats", type=Path, help="write the per-stage counts here (JSON)")
    parser.add_argument("--narrative-words", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
