"""A fault-injecting OpenAI-compatible server on loopback, for tests and benchmarks.

It serves `POST /v1/chat/completions` (JSON answers generated from the request's JSON schema,
logprobs when asked) and `GET /v1/models`, and answers each request with one outcome:

    ok         a correct answer
    fenced     a correct answer inside a ```json fence, with chatter around it
    malformed  text that is not JSON
    truncated  half an answer, finish_reason "length"
    429        rate limited, with a Retry-After header
    500        server error
    400        bad request (a request that cannot succeed)
    hang       no answer for `hang_s` seconds (past the client's timeout)

Outcomes are drawn from `Faults.rates` (the rest are ok), deterministically from the request
body and how many times that exact body was seen, so runs are reproducible; `Faults.rules` force
an outcome for every request whose body contains a marker, and a `decide(body)` function given to
the server can force one from the parsed body. A `logprobs(body)` function sets the top
alternatives of the first answer token (None: answer without logprobs, like endpoints that lack
them); by default they are drawn at random around the answer. Every request is logged (body digest,
outcome, phase) so tests can tell which requests were answered and whether any was repeated.
`hold()` parks new requests (to freeze a run at a known point), `release()` lets them
go or drops them. With rates all zero and a fixed `latency_s` it is a fast deterministic stub.

In-process: `with LLMTestServer(Faults(...)) as server: server.base_url`.
Out of process (benchmarks): `python tests/llm_test_server.py --latency 0.2 --port-file F`;
`GET /_stats` returns the counts, `POST /_reset` clears them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

OUTCOMES = ("ok", "fenced", "malformed", "truncated", "429", "500", "400", "hang")
_WORD_TEXT = (
    "quiet reader who writes about music school friends weekends coffee work family travel "
    "cooking films politics running garden city rain books late nights jokes worries plans"
)
WORDS = tuple(_WORD_TEXT.split())

Responder = Callable[[dict[str, Any], random.Random], str]
Decider = Callable[[dict[str, Any]], str | None]
Logprober = Callable[[dict[str, Any]], list[tuple[str, float]] | None]


@dataclass
class Faults:
    rates: dict[str, float] = field(default_factory=dict)
    """Outcome -> probability; the remaining probability is "ok"."""
    rules: dict[str, str] = field(default_factory=dict)
    """Marker -> outcome forced for every request whose body contains the marker; "500*2" forces
    it for the first two requests that contain the marker only (later ones are ok)."""
    reject_json_schema: bool = False
    """Answer 400 to `response_format` of type json_schema (like servers without it)."""
    latency_s: float = 0.0
    hang_s: float = 30.0
    retry_after: str = "0.05"
    seed: int = 0
    api_key: str | None = None
    """Bearer token every request must carry (401 otherwise); None accepts any."""
    string_words: int = 70


@dataclass
class Record:
    digest: str
    outcome: str
    phase: int
    status: int
    time: float
    model: str | None = None
    response_format: str | None = None
    answer: dict[str, Any] | None = None
    """The choice sent with a 200 (message and logprobs): what the client caches."""


def instance(schema: dict[str, Any], rng: random.Random, words: int) -> Any:
    """A value valid under a (self-contained) JSON schema."""
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"] or schema["anyOf"]
        return instance(options[0], rng, words)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: instance(sub, rng, words) for name, sub in props.items()}
    if kind == "array":
        return [instance(schema.get("items", {"type": "string"}), rng, 2) for _ in range(2)]
    if kind == "string":
        return " ".join(rng.choice(WORDS) for _ in range(words))
    if kind == "integer":
        return rng.randint(int(schema.get("minimum", 1)), int(schema.get("maximum", 5)))
    if kind == "number":
        return rng.uniform(float(schema.get("minimum", 0)), float(schema.get("maximum", 1)))
    if kind == "boolean":
        return rng.random() < 0.5
    return None


def request_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return fmt.get("json_schema", {}).get("schema")
    return fmt.get("schema")


def schema_responder(words: int) -> Responder:
    """Answers JSON-schema requests with a valid instance, other requests with a short text."""

    def respond(body: dict[str, Any], rng: random.Random) -> str:
        schema = request_schema(body)
        if schema is not None:
            return json.dumps(instance(schema, rng, words))
        if body.get("response_format", {}).get("type") == "json_object":
            return json.dumps({"answer": "ok"})
        return str(rng.randint(1, 5))

    return respond


def body_digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class LLMTestServer:
    def __init__(
        self,
        faults: Faults | None = None,
        responder: Responder | None = None,
        port: int = 0,
        decide: Decider | None = None,
        logprobs: Logprober | None = None,
    ) -> None:
        self.faults = faults or Faults()
        self.responder = responder or schema_responder(self.faults.string_words)
        self.decide = decide
        self.logprober = logprobs
        self.port = port
        self.phase = 1
        self.log: list[Record] = []
        self._seen: Counter[str] = Counter()
        self._marker_hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._holding = False
        self._dropping = False
        self.in_flight = 0
        self.max_in_flight = 0
        self.parked = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control (any thread)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LLMTestServer:
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/_stats", self._stats, methods=["GET"]),
                Route("/_reset", self._reset, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
            timeout_keep_alive=30,
            backlog=4096,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("test LLM server did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.release(drop=True)
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> LLMTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def hold(self) -> None:
        """Park every request not yet in flight; once `in_flight` is 0, nothing more is answered
        (a request is in flight from its admission until it is logged)."""
        with self._lock:
            self._holding = True

    def release(self, drop: bool = False) -> None:
        """Let parked requests go on (or answer them 503 and log them as dropped)."""
        self._dropping = drop
        self._holding = False

    def reset_hold(self) -> None:
        self._dropping = False
        self._holding = False

    @property
    def holding(self) -> bool:
        return self._holding

    def records(self, phase: int | None = None) -> list[Record]:
        with self._lock:
            return [r for r in self.log if phase is None or r.phase == phase]

    def requested(self, phase: int | None = None) -> set[str]:
        return {r.digest for r in self.records(phase)}

    def answered(self, phase: int | None = None) -> set[str]:
        """Digests of requests that got a 200 answer (correct or not)."""
        return {r.digest for r in self.records(phase) if r.status == 200}

    def outcomes(self, phase: int | None = None) -> Counter[str]:
        return Counter(r.outcome for r in self.records(phase))

    # ------------------------------------------------------------------ serving (server loop)

    async def _models(self, request: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": "test-model", "object": "model", "owned_by": "t"}]}
        )

    async def _stats(self, request: Request) -> Response:
        return JSONResponse(self.stats())

    async def _reset(self, request: Request) -> Response:
        with self._lock:
            self.log.clear()
            self._seen.clear()
        return JSONResponse({"reset": True})

    def stats(self) -> dict[str, Any]:
        """Request counts, and the span between the first and the last answer (for rates)."""
        records = self.records()
        times = [r.time for r in records if r.status == 200]
        return {
            "requests": len(records),
            "answered": len(times),
            "outcomes": dict(Counter(r.outcome for r in records)),
            "first": min(times, default=None),
            "last": max(times, default=None),
        }

    async def _chat(self, request: Request) -> Response:
        faults = self.faults
        expected = f"Bearer {faults.api_key}"
        if faults.api_key is not None and request.headers.get("authorization") != expected:
            return JSONResponse({"error": {"message": "invalid API key"}}, status_code=401)
        raw = await request.body()
        body = json.loads(raw)
        digest = body_digest(body)
        with self._lock:
            self._seen[digest] += 1
            seen = self._seen[digest]
        if not self._admit():
            self.parked += 1
            while not self._admit():
                await asyncio.sleep(0.01)
            self.parked -= 1
        try:
            if self._dropping:
                self._log(digest, "dropped", 503, body)
                return JSONResponse({"error": {"message": "dropped by the test"}}, status_code=503)
            rng = random.Random(f"{faults.seed}:{digest}:{seen}")
            outcome = self._outcome(raw.decode("utf-8", "replace"), rng)
            forced = self.decide(body) if self.decide is not None else None
            outcome = forced or outcome
            if (
                faults.reject_json_schema
                and body.get("response_format", {}).get("type") == "json_schema"
            ):
                outcome = "no_json_schema"
            if faults.latency_s:
                await asyncio.sleep(faults.latency_s)
            if outcome == "hang":
                await _hang(request, faults.hang_s)
            status, payload, headers = self._answer(body, outcome, rng)
            self._log(digest, outcome, status, body, payload)
        finally:
            with self._lock:
                self.in_flight -= 1
        return JSONResponse(payload, status_code=status, headers=headers)

    def _admit(self) -> bool:
        """Count a request in flight, unless the server holds (atomic with `hold`)."""
        with self._lock:
            if self._holding:
                return False
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return True

    def _outcome(self, text: str, rng: random.Random) -> str:
        for marker, rule in self.faults.rules.items():
            if marker in text:
                outcome, _, times = rule.partition("*")
                with self._lock:
                    self._marker_hits[marker] += 1
                    hits = self._marker_hits[marker]
                return outcome if not times or hits <= int(times) else "ok"
        draw = rng.random()
        total = 0.0
        for outcome in OUTCOMES:
            total += self.faults.rates.get(outcome, 0.0)
            if draw < total:
                return outcome
        return "ok"

    def _log(
        self,
        digest: str,
        outcome: str,
        status: int,
        body: dict[str, Any],
        payload: dict[str, Any] | None = None,
    ) -> None:
        fmt = (body.get("response_format") or {}).get("type")
        answer = payload["choices"][0] if status == 200 and payload else None
        record = Record(
            digest, outcome, self.phase, status, time.time(), body.get("model"), fmt, answer
        )
        with self._lock:
            self.log.append(record)

    def _answer(
        self, body: dict[str, Any], outcome: str, rng: random.Random
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if outcome == "429":
            error = {"error": {"message": "rate limited (test)", "type": "rate_limit"}}
            return 429, error, {"Retry-After": self.faults.retry_after}
        if outcome == "500":
            return 500, {"error": {"message": "internal error (test)"}}, {}
        if outcome == "400":
            return 400, {"error": {"message": "bad request (test)"}}, {}
        if outcome == "no_json_schema":
            message = "response_format type json_schema is not supported (test)"
            return 400, {"error": {"message": message}}, {}
        content = self.responder(body, rng)
        finish = "stop"
        if outcome == "fenced":
            content = f"Here is the JSON:\n```json\n{content}\n```\nLet me know if that helps."
        elif outcome == "malformed":
            content = "Sure! {narrative: this is not JSON at all"
        elif outcome == "truncated":
            content, finish = content[: len(content) // 2], "length"
        return 200, self._completion(body, content, finish, rng), {}

    def _completion(
        self, body: dict[str, Any], content: str, finish: str, rng: random.Random
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": finish,
            "logprobs": None,
        }
        if body.get("logprobs"):
            k = body.get("top_logprobs") or 1
            if self.logprober is None:
                choice["logprobs"] = {"content": _logprobs(content, k, rng)}
            else:
                top = self.logprober(body)
                choice["logprobs"] = None if top is None else {"content": _given(top[:k])}
        prompt_tokens = len(json.dumps(body.get("messages", []))) // 4
        completion_tokens = max(1, len(content) // 4)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "test-model"),
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


async def _hang(request: Request, seconds: float) -> None:
    """Sleep `seconds`, or until the client gives up waiting (so shutdown finds nothing hung)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not await request.is_disconnected():
        await asyncio.sleep(0.05)


def _logprobs(content: str, k: int, rng: random.Random) -> list[dict[str, Any]]:
    """Per answer character (up to 8): the character itself with probability 0.6 on top, the
    other digits "1".."5" sharing the rest at random."""
    items = []
    for char in content[:8]:
        others = [d for d in "12345" if d != char]
        weights = [rng.random() + 1e-3 for _ in others]
        scale = 0.4 / sum(weights)
        rest = sorted(
            ((d, math.log(w * scale)) for d, w in zip(others, weights, strict=True)),
            key=lambda x: -x[1],
        )
        ranked = [(char, math.log(0.6)), *rest][:k]
        items.append(
            {
                "token": char,
                "logprob": math.log(0.6),
                "bytes": None,
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in ranked],
            }
        )
    return items


def _given(top: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """One answer token: the first of `top`, with `top` as its alternatives."""
    alternatives = [{"token": t, "logprob": lp, "bytes": None} for t, lp in top]
    return [{"token": top[0][0], "logprob": top[0][1], "bytes": None, "top_logprobs": alternatives}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, help="write the port here once serving")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--rates", default="", help="e.g. 429=0.1,500=0.05,malformed=0.1")
    parser.add_argument("--words", type=int, default=70, help="words per generated string")
    args = parser.parse_args()
    rates = {k: float(v) for k, v in (p.split("=") for p in args.rates.split(",") if p)}
    faults = Faults(rates=rates, latency_s=args.latency, string_words=args.words)
    server = LLMTestServer(faults, port=args.port).start()
    if args.port_file:
        args.port_file.write_text(str(server.port))
    print(server.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
