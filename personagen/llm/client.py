"""The one LLM client of personagen: async OpenAI-compatible chat completions, made reliable.

Every LLM stage (mine, judge, score, revise, query generation) goes through `LLMClient`, whatever
the endpoint: OpenAI, vLLM, a llama.cpp server, or the embedded server personagen starts itself.

- Adaptive concurrency: at most `llm.concurrency` requests in flight per client (one client per
  worker or actor), fewer while timeouts or 429s say the endpoint is overloaded (AIMD, see
  `personagen.llm.limit`); the slot is held for the request only, not while backing off.
- Timeouts and retries: each attempt has `llm.timeout_s`; 429, 5xx, 408/409, connection errors
  and timeouts are retried up to `llm.max_retries` times with exponential backoff and full
  jitter, never sooner than the server's `Retry-After`. Other 4xx (bad request, auth, not found,
  context too long) cannot succeed on retry and fail at once, and so does a 5xx whose message
  declares the request invalid (a validation error, a feature not supported: llama.cpp's server
  asked for logprobs it cannot give).
- Structured output: `structured()` asks for JSON with the stage's schema (`response_format`),
  parses tolerantly, validates with the stage's pydantic model, and makes one repair request
  before giving up with `OutputError`. An endpoint that rejects the structured-output request,
  with whatever status (llama-cpp-python's server answers 500 to `json_schema`), gets the next
  mode down (json_schema, json_object, none) at once, without a retry; `negotiate_format` finds
  the mode an endpoint takes with one probe, which the runtime sends once per endpoint and run.
- Cache: answers are kept in a `ResponseCache` keyed by endpoint identity, model, messages,
  sampling parameters and prompt version, so repeated work makes no new requests.
- Accounting: every call adds to a `Usage` (the caller's, per row) and to `client.usage`.
- Logprobs: `chat(..., top_logprobs=k)` returns the top-k alternatives of each answer token, which
  is how inventories are scored from answer-token probabilities.

The API key is handed to the `openai` client and nowhere else: not in cache keys or values, not
in log records (it is registered with the log filter), not in errors.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai
from pydantic import BaseModel, SecretStr

from personagen.llm.cache import ResponseCache, cache_key
from personagen.llm.limit import AdaptiveLimit, Outcome
from personagen.llm.options import ClientOptions
from personagen.llm.prompts import Messages, repair_messages
from personagen.llm.structured import OutputError, json_schema, parse_answer
from personagen.llm.usage import Usage
from personagen.logs import mask_secrets, register_secret

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

NO_KEY = "no-key"
"""Sent when no key is configured: keyless local servers (llama.cpp, vLLM) accept any value."""

RETRY_STATUS = frozenset({408, 409, 425, 429})
FORMAT_MODES = ("json_schema", "json_object", "none")
INVALID_REQUEST = ("not supported", "validation error")
"""Words of an error message by which a server declares the request itself invalid (llama.cpp's
servers answer such requests with a 500): a retry cannot succeed."""
FORMAT_WORDS = ("response_format", "json_schema")
"""Words of an error message that is about the structured-output request."""
PROBE_MESSAGES: Messages = [
    {"role": "system", "content": "Answer in JSON."},
    {"role": "user", "content": 'Reply with {"ok": true}.'},
]
PROBE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
}


@dataclass(frozen=True)
class Endpoint:
    """Where requests go. `identity` names the endpoint in cache keys: the base URL for a served
    endpoint, the model file for the embedded server (whose loopback port changes every run)."""

    base_url: str
    identity: str
    embedded: bool = False

    @classmethod
    def remote(cls, base_url: str) -> Endpoint:
        return cls(base_url=base_url.rstrip("/"), identity=base_url.rstrip("/"))


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)
    """The most likely tokens at this position with their log-probabilities (best first)."""


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None
    cached: bool = False

    def top_logprobs(self, position: int = 0) -> list[tuple[str, float]]:
        """(token, logprob) alternatives of answer token `position` ([] if none returned)."""
        if not self.logprobs or position >= len(self.logprobs):
            return []
        return self.logprobs[position].top


class LLMRequestError(Exception):
    """A request failed for good: a 4xx that cannot succeed, or retries exhausted."""

    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class LLMClient:
    """One per worker or actor; use from one event loop (the one that first awaits it)."""

    def __init__(
        self,
        cfg: ClientOptions,
        endpoint: Endpoint,
        *,
        api_key: str | SecretStr | None = None,
        cache: ResponseCache | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.endpoint = endpoint
        self.cache = cache
        self.usage = Usage()
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        register_secret(key)
        self._client = openai.AsyncOpenAI(
            base_url=endpoint.base_url,
            api_key=key or NO_KEY,
            timeout=cfg.timeout_s,
            max_retries=0,
        )
        self.limit = AdaptiveLimit(concurrency or cfg.concurrency, cfg.timeout_s)
        mode = cfg.response_format
        if mode == "auto":
            mode = "json_object" if endpoint.embedded else "json_schema"
        self._format_mode = mode

    @property
    def model(self) -> str:
        return self.cfg.model

    @property
    def format_mode(self) -> str:
        """The structured-output mode requests are sent with now (after any rejection)."""
        return self._format_mode

    async def aclose(self) -> None:
        await self._client.close()

    # ------------------------------------------------------------------------------ requests

    async def chat(
        self,
        messages: Messages,
        *,
        prompt_version: str,
        schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        top_logprobs: int | None = None,
        usage: Usage | None = None,
    ) -> Completion:
        """One chat completion (from the cache when this exact request was answered before).

        `schema` asks for a JSON answer of that shape; `top_logprobs` asks for the k most likely
        alternatives of each answer token. Raises `LLMRequestError` when the request fails.
        """
        params: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": messages,
            **sampling(self.cfg, max_tokens, temperature, seed),
        }
        if top_logprobs is not None:
            params["logprobs"] = True
            params["top_logprobs"] = top_logprobs
        row_usage = usage if usage is not None else Usage()
        if self.cache is not None:
            hit = self.cache.get(self._key(params, schema, prompt_version, self._format_mode))
            if hit is not None:
                self._count(row_usage, cache_hits=1)
                return _completion(hit, cached=True)
        answer, mode = await self._request(params, schema, row_usage)
        if self.cache is not None:  # under the mode that was answered (after any rejection)
            self.cache.put(self._key(params, schema, prompt_version, mode), answer)
        self._count(
            row_usage,
            prompt_tokens=answer["prompt_tokens"],
            completion_tokens=answer["completion_tokens"],
        )
        return _completion(answer, cached=False)

    async def structured(
        self,
        messages: Messages,
        answer: type[T],
        *,
        prompt_version: str,
        context: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        usage: Usage | None = None,
        schema: dict[str, Any] | None = None,
    ) -> T:
        """A validated answer of type `answer`, with one repair request if the first is invalid.

        `schema`: the JSON schema to ask for where it is narrower than `answer`'s own (e.g. built
        per request, with `answer` validating against the `context`). Raises `OutputError`
        (still invalid after the repair) or `LLMRequestError`.
        """
        schema = schema if schema is not None else json_schema(answer)
        kwargs: dict[str, Any] = {
            "prompt_version": prompt_version,
            "schema": schema,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": seed,
            "usage": usage,
        }
        first = await self.chat(messages, **kwargs)
        try:
            return parse_answer(first.text, answer, context)
        except OutputError as exc:
            error = _explain(exc, first)
        self._count(usage, repairs=1)
        second = await self.chat(repair_messages(messages, first.text, error), **kwargs)
        try:
            return parse_answer(second.text, answer, context)
        except OutputError as exc:
            raise OutputError(
                f"invalid answer after one repair: {_explain(exc, second)} (first answer: {error})"
            ) from None

    # ------------------------------------------------------------------------------ internals

    def _key(
        self, params: dict[str, Any], schema: dict[str, Any] | None, version: str, mode: str
    ) -> str:
        """The cache key of a request sent in structured-output mode `mode`."""
        return cache_key(
            {
                "endpoint": self.endpoint.identity,
                "params": params,
                "schema": schema,
                "format": mode if schema is not None else None,
                "prompt_version": version,
            }
        )

    def _count(self, usage: Usage | None, **amounts: int) -> None:
        delta = Usage(**amounts)
        self.usage.add(delta)
        if usage is not None:
            usage.add(delta)

    async def _request(
        self, params: dict[str, Any], schema: dict[str, Any] | None, usage: Usage
    ) -> tuple[dict[str, Any], str]:
        """The answer to a request, and the structured-output mode it was answered in."""
        attempt = 0
        while True:
            request = dict(params)
            mode = self._format_mode
            response_format = self._response_format(schema)
            if response_format is not None:
                request["response_format"] = response_format
            self._count(usage, requests=1)
            try:
                return await self._send(request), mode
            except Exception as exc:
                if response_format is not None and _rejects_format(exc):
                    self._downgrade_format(mode, exc)
                    continue
                retryable, reason, wait_hint = _classify(exc)
                if not retryable:
                    raise LLMRequestError(reason, retryable=False) from None
                if attempt >= self.cfg.max_retries:
                    raise LLMRequestError(
                        f"{reason} (gave up after {attempt + 1} attempts)", retryable=True
                    ) from None
                delay = self._backoff(attempt, wait_hint)
                log.debug("retrying in %.2fs after %s", delay, reason)
                attempt += 1
                self._count(usage, retries=1)
                await asyncio.sleep(delay)

    async def _send(self, request: dict[str, Any]) -> dict[str, Any]:
        """One attempt, under the adaptive limit of requests in flight."""
        flight = await self.limit.acquire()
        outcome: Outcome = "failed"
        try:
            response = await asyncio.wait_for(
                self._client.chat.completions.create(**request), timeout=self.cfg.timeout_s
            )
            outcome = "answered"
        except Exception as exc:
            if _overloaded(exc):
                outcome = "overloaded"
            raise
        finally:
            await self.limit.release(flight, outcome)
        return _answer_of(response)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter over an exponential cap, but never sooner than the server asked."""
        cap = min(self.cfg.backoff_max_s, self.cfg.backoff_s * 2**attempt)
        delay = random.uniform(cap / 2, cap)
        if retry_after is not None:
            delay = max(delay, min(retry_after, 10 * self.cfg.backoff_max_s))
        return delay

    def _response_format(self, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is None or self._format_mode == "none":
            return None
        if self._format_mode == "json_schema":
            return {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": False},
            }
        # JSON mode; llama-cpp-python's server also reads `schema` and enforces it by grammar.
        return {"type": "json_object", "schema": schema}

    def _downgrade_format(self, rejected: str, exc: Exception) -> None:
        """One step down from the rejected mode (concurrent rejections of it count once)."""
        if self._format_mode != rejected:
            return
        self._format_mode = FORMAT_MODES[FORMAT_MODES.index(rejected) + 1]
        log.warning(
            "the endpoint rejected the structured-output request (%s); using %s from now on",
            _short(str(exc)),
            self._format_mode,
        )


# ---------------------------------------------------------------------------------- helpers


async def negotiate_format(
    cfg: ClientOptions,
    endpoint: Endpoint,
    *,
    api_key: str | SecretStr | None = None,
    cache: ResponseCache | None = None,
) -> str:
    """The structured-output mode `endpoint` takes, from `cfg.response_format` down: one small
    structured request, asked again one mode down for each rejection (through `cache`, so that
    a resumed run asks nothing). A failure for any other reason (the endpoint is down, slow)
    decides nothing: the mode stays, and the stage meets the failure and reports it."""
    probe = cfg.model_copy(update={"max_retries": 0})
    client = LLMClient(probe, endpoint, api_key=api_key, cache=cache, concurrency=1)
    try:
        await client.chat(
            PROBE_MESSAGES,
            prompt_version="format-probe",
            schema=PROBE_SCHEMA,
            max_tokens=16,
            temperature=0.0,
        )
    except LLMRequestError as exc:
        log.debug("the structured-output probe failed: %s", exc.reason)
    finally:
        await client.aclose()
    return client.format_mode


def sampling(
    cfg: ClientOptions,
    max_tokens: int | None,
    temperature: float | None,
    seed: int | None = None,
) -> dict[str, Any]:
    """max_tokens, temperature and seed of one request: the call's own, else the config's (a
    request's own seed makes samples of the same prompt differ, reproducibly)."""
    params: dict[str, Any] = {
        "max_tokens": max_tokens or cfg.max_tokens,
        "temperature": cfg.temperature if temperature is None else temperature,
    }
    if seed is not None or cfg.seed is not None:
        params["seed"] = cfg.seed if seed is None else seed
    return params


def _answer_of(response: Any) -> dict[str, Any]:
    """The parts of a chat completion the stages use, as plain (cacheable) data."""
    if not response.choices:
        raise OutputError("the endpoint returned no choices")
    choice = response.choices[0]
    usage = response.usage
    logprobs = None
    content = getattr(choice.logprobs, "content", None) if choice.logprobs else None
    if content:
        logprobs = [
            {
                "token": item.token,
                "logprob": item.logprob,
                "top": [[alt.token, alt.logprob] for alt in (item.top_logprobs or [])],
            }
            for item in content
        ]
    return {
        "text": choice.message.content or "",
        "finish_reason": choice.finish_reason,
        "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
        "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
        "logprobs": logprobs,
        "time": time.time(),
    }


def _completion(answer: dict[str, Any], cached: bool) -> Completion:
    logprobs = None
    if answer.get("logprobs") is not None:
        logprobs = [
            TokenLogprob(
                item["token"], float(item["logprob"]), [(t, float(lp)) for t, lp in item["top"]]
            )
            for item in answer["logprobs"]
        ]
    return Completion(
        text=answer["text"],
        finish_reason=answer["finish_reason"],
        prompt_tokens=answer["prompt_tokens"],
        completion_tokens=answer["completion_tokens"],
        logprobs=logprobs,
        cached=cached,
    )


def _explain(exc: OutputError, completion: Completion) -> str:
    if completion.finish_reason == "length":
        return f"{exc} (the answer was cut off at the token limit)"
    return str(exc)


def _classify(exc: Exception) -> tuple[bool, str, float | None]:
    """(retryable, reason, Retry-After seconds) of a failed attempt."""
    if isinstance(exc, (asyncio.TimeoutError, openai.APITimeoutError)):
        return True, "timeout", None
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        reason = f"HTTP {status}: {_short(_error_message(exc))}"
        # a 5xx that declares the request invalid (llama.cpp's server asked for logprobs
        # without per-token logits, or a field it does not know) will not change on a retry
        invalid = any(words in reason.lower() for words in INVALID_REQUEST)
        retryable = (status in RETRY_STATUS or status >= 500) and not invalid
        return retryable, reason, _retry_after(exc.response.headers) if retryable else None
    if isinstance(exc, openai.APIConnectionError):
        return True, f"connection error: {_short(str(exc.__cause__ or exc))}", None
    if isinstance(exc, OutputError):
        return True, f"unusable response: {exc}", None
    return False, f"{type(exc).__name__}: {_short(str(exc))}", None


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return exc.message


def _rejects_format(exc: Exception) -> bool:
    """An error about the structured-output request itself, whatever its status (a 400/422 that
    mentions the schema; llama-cpp-python's server answers a 500 with a validation error of
    `response_format`)."""
    if not isinstance(exc, openai.APIStatusError):
        return False
    text = _error_message(exc).lower()
    words = (*FORMAT_WORDS, "schema") if exc.status_code in (400, 422) else FORMAT_WORDS
    return any(word in text for word in words)


def _overloaded(exc: Exception) -> bool:
    """A failed attempt that says the endpoint has more requests than it can serve in time."""
    if isinstance(exc, (asyncio.TimeoutError, openai.APITimeoutError)):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code == 429


def _retry_after(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _short(text: str, limit: int = 300) -> str:
    text = mask_secrets(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."
