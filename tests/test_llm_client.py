"""The LLM client against the fault-injecting server: retries, timeouts, repair, cache, logprobs."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest
from llm_test_server import Faults, LLMTestServer
from pydantic import BaseModel, SecretStr

from personagen.config import LLMConfig
from personagen.llm.cache import ResponseCache
from personagen.llm.client import Endpoint, LLMClient, LLMRequestError
from personagen.llm.structured import OutputError
from personagen.llm.usage import Usage


class Answer(BaseModel):
    name: str
    score: int


def config(server: LLMTestServer, **overrides) -> LLMConfig:
    """The stub answers in milliseconds: a 30 s timeout never cuts an answer short, so the
    counts below depend on the server's decisions alone."""
    values = {"base_url": server.base_url, "timeout_s": 30.0, "backoff_s": 0.01, "max_retries": 3}
    return LLMConfig(**(values | overrides))


def ask(marker: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{marker}: answer as JSON"}]


def run(coro_factory, cfg: LLMConfig, **client_kwargs):
    """Run `coro_factory(client)` on a fresh event loop with a fresh client."""

    async def main():
        client = LLMClient(cfg, Endpoint.remote(cfg.base_url), **client_kwargs)
        try:
            return await coro_factory(client), client
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_429_is_retried_no_sooner_than_retry_after():
    with LLMTestServer(Faults(rules={"RATE": "429"}, retry_after="0.3")) as server:
        usage = Usage()
        start = time.monotonic()
        with pytest.raises(LLMRequestError, match=r"HTTP 429.*gave up after 3 attempts") as err:
            run(
                lambda c: c.chat(ask("RATE"), prompt_version="t", usage=usage),
                config(server, max_retries=2),
            )
        assert time.monotonic() - start >= 0.6
        assert err.value.retryable
        assert len(server.records()) == 3 and usage.requests == 3 and usage.retries == 2


def test_5xx_are_retried_until_an_answer_comes():
    with LLMTestServer(Faults(rules={"FLAKY": "500*2"})) as server:
        usage = Usage()
        result, _ = run(
            lambda c: c.structured(ask("FLAKY"), Answer, prompt_version="t", usage=usage),
            config(server),
        )
        assert isinstance(result, Answer)
        assert usage.requests == 3 and usage.retries == 2
        assert server.outcomes() == {"500": 2, "ok": 1}


def test_a_hang_is_given_up_after_the_timeout_and_asked_again():
    """The first request hangs for 10 minutes, the retry is answered at once: both far from
    the 5 s timeout, so exactly one retry."""
    hang_s, timeout_s = 600, 5
    with LLMTestServer(Faults(rules={"SLOW": "hang*1"}, hang_s=hang_s)) as server:
        usage = Usage()
        start = time.monotonic()
        result, _ = run(
            lambda c: c.structured(ask("SLOW"), Answer, prompt_version="t", usage=usage),
            config(server, timeout_s=timeout_s),
        )
        assert isinstance(result, Answer)
        assert usage.requests == 2 and usage.retries == 1
        assert timeout_s <= time.monotonic() - start < hang_s / 10
        deadline = time.monotonic() + 10  # the hung request is logged when the server notices
        while server.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.outcomes() == {"hang": 1, "ok": 1}


def test_4xx_that_cannot_succeed_is_not_retried():
    with LLMTestServer(Faults(rules={"BAD": "400"})) as server:
        usage = Usage()
        with pytest.raises(LLMRequestError, match="HTTP 400: bad request") as err:
            run(lambda c: c.chat(ask("BAD"), prompt_version="t", usage=usage), config(server))
        assert not err.value.retryable
        assert usage.requests == 1 and len(server.records()) == 1


def test_connection_refused_is_retried_then_reported():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = LLMConfig(base_url=f"http://127.0.0.1:{port}/v1", backoff_s=0.01, max_retries=1)
    usage = Usage()
    with pytest.raises(LLMRequestError, match=r"connection error.*2 attempts"):
        run(lambda c: c.chat(ask("x"), prompt_version="t", usage=usage), cfg)
    assert usage.requests == 2


@pytest.mark.parametrize("fault", ["malformed", "truncated"])
def test_an_invalid_answer_gets_one_repair_request(fault):
    with LLMTestServer(Faults(rules={"ONCE": f"{fault}*1", "ALWAYS": fault})) as server:
        usage = Usage()
        result, _ = run(
            lambda c: c.structured(ask("ONCE"), Answer, prompt_version="t", usage=usage),
            config(server),
        )
        assert isinstance(result, Answer) and usage.repairs == 1 and usage.requests == 2
        usage = Usage()
        with pytest.raises(OutputError, match="after one repair"):
            run(
                lambda c: c.structured(ask("ALWAYS"), Answer, prompt_version="t", usage=usage),
                config(server),
            )
        assert usage.requests == 2, "exactly one repair request"


def test_fenced_answers_with_chatter_are_accepted():
    with LLMTestServer(Faults(rules={"FENCE": "fenced"})) as server:
        usage = Usage()
        result, _ = run(
            lambda c: c.structured(ask("FENCE"), Answer, prompt_version="t", usage=usage),
            config(server),
        )
        assert isinstance(result, Answer) and usage.repairs == 0


def test_the_cache_answers_repeated_requests_without_asking(tmp_path):
    path = tmp_path / "cache.sqlite"
    with LLMTestServer() as server:
        cfg = config(server)

        async def twice(client):
            first = await client.chat(ask("q"), prompt_version="v1")
            second = await client.chat(ask("q"), prompt_version="v1")
            other_version = await client.chat(ask("q"), prompt_version="v2")
            other_temperature = await client.chat(ask("q"), prompt_version="v1", temperature=0.1)
            return first, second, other_version, other_temperature

        cache = ResponseCache(path)
        (first, second, v2, t01), client = run(twice, cfg, cache=cache)
        assert not first.cached and second.cached and second.text == first.text
        assert not v2.cached and not t01.cached
        assert len(server.records()) == 3 == len(cache)
        assert client.usage.cache_hits == 1
        cache.close()
        (again, *_), client = run(twice, cfg, cache=ResponseCache(path))
        assert again.cached and again.text == first.text and len(server.records()) == 3


def test_top_logprobs_are_returned_best_first():
    with LLMTestServer() as server:
        completion, _ = run(
            lambda c: c.chat(ask("rate 1-5"), prompt_version="t", max_tokens=1, top_logprobs=5),
            config(server),
        )
    top = completion.top_logprobs()
    assert len(top) == 5
    assert top[0][0] == completion.text[0]
    assert [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
    assert {token for token, _ in top} >= {"1", "2", "3", "4", "5"} - {completion.text[0]}


def test_an_endpoint_without_json_schema_gets_json_mode(caplog):
    with LLMTestServer(Faults(reject_json_schema=True, latency_s=0.05)) as server:

        async def many(client):
            first = await asyncio.gather(
                *(client.structured(ask(f"a{i}"), Answer, prompt_version="t") for i in range(6))
            )
            return [*first, await client.structured(ask("b"), Answer, prompt_version="t")]

        with caplog.at_level(logging.WARNING):
            answers, _ = run(many, config(server))
        assert all(isinstance(a, Answer) for a in answers)
        records = server.records()
        rejected = [r for r in records if r.outcome == "no_json_schema"]
        assert 1 <= len(rejected) <= 6, "each request is rejected at most once"
        answered = [r for r in records if r.status == 200]
        assert len(answered) == 7
        # concurrent rejections step down once: JSON mode with the schema, not no format at all
        assert {r.response_format for r in answered} == {"json_object"}
        assert "using json_object from now on" in caplog.text


def test_requests_in_flight_never_exceed_the_concurrency():
    with LLMTestServer(Faults(latency_s=0.05)) as server:

        async def many(client):
            return await asyncio.gather(
                *(client.chat(ask(f"q{i}"), prompt_version="t") for i in range(24))
            )

        run(many, config(server, concurrency=4))
        assert server.max_in_flight == 4


def test_the_api_key_is_sent_and_kept_out_of_cache_and_errors(tmp_path):
    key = "sk-test-CLIENTKEY-0123456789"
    with LLMTestServer(Faults(api_key=key, rules={"BAD": "400"})) as server:
        path = tmp_path / "cache.sqlite"
        run(
            lambda c: c.chat(ask("q"), prompt_version="t"),
            config(server),
            api_key=SecretStr(key),
            cache=ResponseCache(path),
        )
        with pytest.raises(LLMRequestError, match="HTTP 401") as err:
            run(lambda c: c.chat(ask("q2"), prompt_version="t"), config(server))
        assert key not in str(err.value)
        with pytest.raises(LLMRequestError) as err:
            run(lambda c: c.chat(ask("BAD"), prompt_version="t"), config(server), api_key=key)
        assert key not in str(err.value)
    for file in tmp_path.iterdir():
        assert key.encode() not in file.read_bytes()
