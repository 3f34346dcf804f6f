"""Psychometric scoring: every persona answers a personality inventory "as itself".

Each persona to be scored answers the items of the instrument (`score.instrument`, IPIP-50 by
default), one row per persona; the row gets the bank's `scores` columns: the items in the order
asked, the responses, the five trait scores and the quality flags. Which personas: those the
judge kept, and those without a verdict (mined with `--no-judge`, or whose judgement failed)
unless `score.only_kept`; personas the judge rejected never.

How a persona answers (`score.mode`):

- `logprob` (what `auto` picks where the endpoint returns `top_logprobs`): one request per item,
  a one-token answer with its top alternatives; the probabilities of the scale's answer tokens,
  renormalised, give the expected response and its entropy (`psychometrics.answers`). Support is
  detected once per run by a probe request; a response that still comes without logprobs is read
  as a text answer (the persona's `answer_mode` is then `logprob+text`).
- `calibrated`: logprob mode with contextual calibration (`psychometrics.answers`): before the
  personas, every item is asked once per content-free persona ("N/A", "", "[MASK]"); the mean
  of those answer distributions, the item's prior, is divided out of every persona's answer
  distribution before the expected value is taken (`resolve_stage` measures the priors, the
  manifest records them).
- `text`: one request per item, the answer must be a scale point and nothing else.
- `batch`: all items (or `score.items_per_request` of them) in one JSON answer, one field per item.

An answer that is not a point of the scale is asked again with a repair message (up to
`score.item_retries` times); transport errors are retried by the client. An item that still has
no answer is recorded: null response, its reason in `item_errors`, the persona flagged
`failed_items:<n>`. A persona that would get a trait from fewer than `score.min_items_per_trait`
items fails instead (recorded in `failures` with the traits short of items), and its remaining
requests are cancelled as soon as that is certain.

Prompt: the persona comes first and the item last, so the requests of one persona share their
prefix and server-side prompt caches (llama.cpp's slot cache, OpenAI/vLLM prefix caching) reuse
it. Items are asked in an order shuffled per persona (order effects) with a seed derived from
`seed` and the persona id (`persona_seed`), stored as `score_seed`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import RootModel, ValidationInfo, model_validator

from personagen import TRAITS
from personagen.config import Config, LLMConfig, ScoreConfig
from personagen.errors import PersonagenError
from personagen.io.bank import GROUPS, KEY
from personagen.llm.cache import ResponseCache, host_cache_path
from personagen.llm.client import Endpoint, LLMClient, LLMRequestError
from personagen.llm.prompts import Messages, Prompt, load_prompt
from personagen.llm.structured import OutputError
from personagen.llm.usage import Usage
from personagen.psychometrics.answers import (
    CALIBRATION_SMOOTHING,
    CONTENT_FREE,
    AnswerDistribution,
    NoScaleAnswer,
    answer_distribution,
    answer_point,
    calibrated,
    content_free_prior,
    sample_point,
    supports_logprobs,
)
from personagen.psychometrics.flags import FAILED_ITEMS, quality_flags
from personagen.psychometrics.instruments import Instrument, Item, Scale
from personagen.psychometrics.scoring import align_responses, trait_scores
from personagen.stages.base import DrivenStage, LLMStage, Request, Stage, row_failure, send

log = logging.getLogger(__name__)

STAGE = "score"
LOGPROB_MODES = ("logprob", "calibrated")
"""Answer modes that read the answer token's top alternatives."""
ANSWER_MODES = ("logprob", "calibrated", "sample", "text", "batch")
"""How one item was answered, in the order a persona's `answer_mode` lists them."""
TEXT_MAX_TOKENS = 8
"""Room for "3", "3." or a short refusal, whose text then shows in the failure reason."""
BATCH_TOKENS_PER_ITEM = 12
PROBE_MESSAGES: Messages = [
    {"role": "user", "content": "How much do you like music? Answer with one digit from 1 to 5."}
]

SCORE_COLUMNS = pa.schema([field for field in GROUPS["scores"] if field.name != KEY])


class InvalidItemAnswer(OutputError):
    """No answer on the scale for one item, after the repair requests."""


class TooFewItems(OutputError):
    """A trait would be scored from fewer items than the minimum: the persona fails."""


# ------------------------------------------------------------------------------ prompts


def item_prompt(bare: bool = False) -> Prompt:
    """The per-item prompt; `bare`: no persona, the model answers about itself (the no-persona
    baseline)."""
    return load_prompt("score-bare" if bare else "score")


class BatchAnswers(RootModel[dict[str, int]]):
    """Batch mode's answer: item id -> scale point, for exactly the items asked (`ids`, `min`
    and `max` in the validation context). One generic model: building a pydantic model per
    persona's item order costs ~9 ms; the per-request order lives in the schema instead."""

    @model_validator(mode="after")
    def _asked_items(self, info: ValidationInfo) -> BatchAnswers:
        context = info.context or {}
        ids, lo, hi = context.get("ids", []), context.get("min"), context.get("max")
        missing = [i for i in ids if i not in self.root]
        extra = [i for i in self.root if i not in set(ids)]
        off = [i for i, v in self.root.items() if lo is not None and not lo <= v <= hi]
        problems = [
            f"{what}: {', '.join(items[:8])}"
            for what, items in (
                ("missing items", missing),
                ("unknown items", extra),
                (f"ratings outside {lo}-{hi}", off),
            )
            if items
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self


def batch_schema(items: list[Item], scale: Scale) -> dict[str, Any]:
    """The JSON schema of one batch request: one integer property per item, in the order
    asked (a grammar-constrained decoder answers them in this order). The points are an enum:
    llama.cpp's grammar ignores `minimum`/`maximum` and lets a small model answer 0 or 8."""
    rating = {"type": "integer", "enum": list(scale.points)}
    return {
        "type": "object",
        "properties": {item.id: rating for item in items},
        "required": [item.id for item in items],
        "additionalProperties": False,
    }


def batch_prompt() -> Prompt:
    return load_prompt("score-batch", BatchAnswers)


def scale_text(scale: Scale) -> str:
    return ", ".join(
        f"{point} = {label}" for point, label in zip(scale.points, scale.labels, strict=True)
    )


def scale_slots(scale: Scale) -> dict[str, str]:
    return {"MIN": str(scale.min), "MAX": str(scale.max)}


# ------------------------------------------------------------------------------ item order


def persona_seed(seed: int, persona_id: str) -> int:
    """The shuffle seed of one persona: reproducible from the run's `seed` and the persona id,
    independent of which worker scores it and in which order."""
    digest = hashlib.sha256(f"{seed}:{persona_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # fits int64


def item_order(instrument: Instrument, seed: int) -> list[Item]:
    """The instrument's items in the order a persona with shuffle seed `seed` is asked them."""
    order = np.random.default_rng(seed).permutation(len(instrument.items))
    return [instrument.items[i] for i in order]


# ------------------------------------------------------------------------------ one persona


@dataclass(frozen=True)
class ScoreParams:
    instrument: Instrument
    mode: str
    """Resolved: logprob, calibrated, text or batch."""
    prompt: Prompt
    seed: int
    settings: ScoreConfig
    model: str = ""
    bare_temperature: float | None = None
    """The no-persona baseline: no persona in the prompt, and each answer sampled at this
    temperature (from the answer distribution in logprob mode, by the server in text mode)."""
    calibration: Mapping[str, tuple[float, ...]] | None = None
    """Calibrated mode: item id -> its content-free prior over the scale points."""

    @property
    def bare(self) -> bool:
        return self.bare_temperature is not None


@dataclass(frozen=True)
class ItemAnswer:
    value: float
    entropy: float | None
    mode: str


def takes(row: dict[str, Any], params: ScoreParams) -> bool:
    """Whether a persona is scored: kept by the judge, or not judged (unless `only_kept`)."""
    kept = row.get("kept")
    return kept is True or (kept is None and not params.settings.only_kept)


async def score_row(
    client: LLMClient, row: dict[str, Any], usage: Usage, params: ScoreParams
) -> dict[str, Any]:
    """One persona (`persona_id`, `narrative`) -> the bank's `scores` columns: the driver of
    the per-item modes, and of batch mode in several chunks."""
    seed = persona_seed(params.seed, row[KEY])
    order = item_order(params.instrument, seed)
    if params.mode == "batch":
        answers, errors = await _ask_batches(client, row["narrative"], order, usage, params)
    else:
        answers, errors = await _ask_items(client, row["narrative"], order, usage, params, seed)
    return score_columns(params, seed, order, answers, errors)


def score_columns(
    params: ScoreParams,
    seed: int,
    order: list[Item],
    answers: dict[str, ItemAnswer],
    errors: dict[str, str],
) -> dict[str, Any]:
    """The `scores` columns of one persona's answers (in the order asked) and failed items;
    raises `TooFewItems` when a trait is left with fewer than the minimum."""
    ids = [item.id for item in order]
    short = _short_traits(params, Counter(item.trait for item in order if item.id in errors))
    if short:
        raise TooFewItems(_too_few(short, ids, errors, params))
    values = [answers[i].value if i in answers else None for i in ids]
    responses = align_responses([ids], [values], params.instrument)
    traits = trait_scores(responses, params.instrument, params.settings.min_items_per_trait)[0]
    flags = quality_flags(responses, params.instrument, params.settings)[0]
    if errors:
        flags.append(f"{FAILED_ITEMS}{len(errors)}")
    modes = {answer.mode for answer in answers.values()}
    return {
        "instrument": params.instrument.id,
        "answer_mode": "+".join(m for m in ANSWER_MODES if m in modes),
        "item_ids": ids,
        "item_responses": values,
        "item_entropy": [answers[i].entropy if i in answers else None for i in ids],
        **{trait: _finite(traits[k]) for k, trait in enumerate(TRAITS)},
        "score_flags": flags,
        "score_model": params.model,
        "score_prompt_version": params.prompt.version,
        "score_seed": seed,
        "item_errors": [f"{i}: {errors[i]}" for i in ids if i in errors],
    }


# ------------------------------------------------------------ batch mode, one request a persona


def batch_request(row: dict[str, Any], params: ScoreParams) -> Request | None:
    """Every item of the instrument in one JSON answer, in the persona's shuffled order (None
    for a persona that is not scored)."""
    if not takes(row, params):
        return None
    order = item_order(params.instrument, persona_seed(params.seed, row[KEY]))
    return _batch_request(params, row["narrative"], order)


def batch_parse(row: dict[str, Any], answer: BatchAnswers, params: ScoreParams) -> dict[str, Any]:
    seed = persona_seed(params.seed, row[KEY])
    order = item_order(params.instrument, seed)
    answers = {item.id: ItemAnswer(float(answer.root[item.id]), None, "batch") for item in order}
    return score_columns(params, seed, order, answers, {})


def batch_explain(row: dict[str, Any], reason: str, params: ScoreParams) -> str:
    """A failed batch request fails every item: the persona is short of items in every trait."""
    order = item_order(params.instrument, persona_seed(params.seed, row[KEY]))
    errors = dict.fromkeys((item.id for item in order), reason)
    short = _short_traits(params, Counter(item.trait for item in order))
    return _too_few(short, [item.id for item in order], errors, params)


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _short_traits(params: ScoreParams, failed: Counter[str]) -> dict[str, tuple[int, int]]:
    """Traits whose answered items fall below the minimum: trait -> (answered, items)."""
    minimum = params.settings.min_items_per_trait
    sizes = Counter(item.trait for item in params.instrument.items)
    return {
        trait: (sizes[trait] - n, sizes[trait])
        for trait, n in failed.items()
        if sizes[trait] - n < minimum
    }


def _too_few(
    short: dict[str, tuple[int, int]], ids: list[str], errors: dict[str, str], params: ScoreParams
) -> str:
    traits = ", ".join(f"{t} at most {a} of {n}" for t, (a, n) in sorted(short.items()))
    first = next(i for i in ids if i in errors)  # the first failed item in the order asked
    return (
        f"too few items answered: {traits} (minimum {params.settings.min_items_per_trait}); "
        f"{len(errors)} items failed, e.g. {first}: {errors[first]}"
    )


def item_messages(params: ScoreParams, narrative: str, item: Item) -> Messages:
    scale = params.instrument.scale
    data = {"persona": narrative, "scale": scale_text(scale), "statement": item.text}
    if params.bare:
        del data["persona"]
    return params.prompt.messages(data, scale_slots(scale))


def batch_messages(params: ScoreParams, narrative: str, items: list[Item]) -> Messages:
    scale = params.instrument.scale
    data = {
        "persona": narrative,
        "scale": scale_text(scale),
        "statements": [{"id": item.id, "text": item.text} for item in items],
    }
    return params.prompt.messages(data, scale_slots(scale))


def sample_seed(score_seed: int, item: Item) -> int:
    """A sampled answer's own seed: reproducible, distinct per respondent and item (so answers
    to identical prompts differ)."""
    return persona_seed(score_seed, item.id) >> 32  # fits the int32 seeds servers take


async def _ask_items(
    client: LLMClient,
    narrative: str,
    order: list[Item],
    usage: Usage,
    params: ScoreParams,
    score_seed: int,
) -> tuple[dict[str, ItemAnswer], dict[str, str]]:
    """Every item as its own request, all in flight at once (the client bounds concurrency).
    Stops early, cancelling the rest, once a trait can no longer reach the minimum."""

    async def attempt(item: Item) -> tuple[Item, ItemAnswer | str]:
        messages = item_messages(params, narrative, item)
        seed = sample_seed(score_seed, item) if params.bare else None
        prior = params.calibration[item.id] if params.calibration is not None else None
        try:
            return item, await ask_item(client, messages, usage, params, seed, prior)
        except (OutputError, LLMRequestError) as exc:
            return item, row_failure(exc)

    tasks = [asyncio.ensure_future(attempt(item)) for item in order]
    answers: dict[str, ItemAnswer] = {}
    errors: dict[str, str] = {}
    failed: Counter[str] = Counter()
    try:
        for finished, next_done in enumerate(asyncio.as_completed(tasks), 1):
            item, result = await next_done
            if isinstance(result, ItemAnswer):
                answers[item.id] = result
                continue
            errors[item.id] = result
            failed[item.trait] += 1
            short = _short_traits(params, failed)
            if short and finished < len(tasks):
                ids = [item.id for item in order]
                raise TooFewItems(_too_few(short, ids, errors, params) + " (stopped early)")
    finally:
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return answers, errors


async def ask_item(
    client: LLMClient,
    messages: Messages,
    usage: Usage,
    params: ScoreParams,
    seed: int | None = None,
    prior: tuple[float, ...] | None = None,
) -> ItemAnswer:
    """One item in logprob, calibrated or text mode, re-asked with a repair message while the
    answer is not a scale point. A bare respondent's answer is sampled with `seed` (see
    `sample_seed`): drawn from the answer distribution in logprob mode (whose request is the
    same for every respondent, so the cache answers it once), by the server at the temperature
    in text mode. `prior`: the item's content-free prior, divided out (calibrated mode).
    Raises `InvalidItemAnswer` (or the client's `LLMRequestError`)."""
    scale = params.instrument.scale
    logprobs = params.mode in LOGPROB_MODES
    tries = params.settings.item_retries + 1
    sampled_by_server = params.bare and not logprobs
    for attempt in range(tries):
        completion = await client.chat(
            messages,
            prompt_version=params.prompt.version,
            max_tokens=1 if logprobs else TEXT_MAX_TOKENS,
            temperature=params.bare_temperature if sampled_by_server else None,
            seed=seed if sampled_by_server else None,
            top_logprobs=params.settings.top_logprobs if logprobs else None,
            usage=usage,
        )
        top = completion.top_logprobs(0) if logprobs else []
        if top:
            try:
                dist = answer_distribution(top, scale)
                if params.bare_temperature is not None and seed is not None:
                    point = sample_point(dist, scale, params.bare_temperature, seed)
                    return ItemAnswer(float(point), dist.entropy, "sample")
                if prior is not None:
                    dist = calibrated(dist, prior, scale)
                    return ItemAnswer(dist.expected, dist.entropy, "calibrated")
                return ItemAnswer(dist.expected, dist.entropy, "logprob")
            except NoScaleAnswer as exc:
                error = str(exc)
        else:  # text mode, or an answer that came without logprobs
            point = answer_point(completion.text, scale)
            if point is not None:
                return ItemAnswer(float(point), None, "text")
            error = f"{completion.text[:60]!r} is not one digit from {scale.min} to {scale.max}"
        if attempt + 1 < tries:
            messages = params.prompt.repair_messages(messages, completion.text, error)
            usage.repairs += 1
    raise InvalidItemAnswer(f"invalid answer after {tries} attempts: {error}")


async def _ask_batches(
    client: LLMClient, narrative: str, order: list[Item], usage: Usage, params: ScoreParams
) -> tuple[dict[str, ItemAnswer], dict[str, str]]:
    """The items in JSON answers of `items_per_request` items each (default: all at once)."""
    size = params.settings.items_per_request or len(order)
    chunks = [order[start : start + size] for start in range(0, len(order), size)]
    results = await asyncio.gather(
        *(_ask_batch(client, narrative, chunk, usage, params) for chunk in chunks),
        return_exceptions=True,
    )
    answers: dict[str, ItemAnswer] = {}
    errors: dict[str, str] = {}
    for chunk, result in zip(chunks, results, strict=True):
        if isinstance(result, (OutputError, LLMRequestError)):
            errors.update(dict.fromkeys((item.id for item in chunk), row_failure(result)))
        elif isinstance(result, BaseException):
            raise result
        else:
            answers.update(result)
    return answers, errors


async def _ask_batch(
    client: LLMClient, narrative: str, items: list[Item], usage: Usage, params: ScoreParams
) -> dict[str, ItemAnswer]:
    answer = await send(client, _batch_request(params, narrative, items), usage)
    return {item.id: ItemAnswer(float(answer.root[item.id]), None, "batch") for item in items}


def _batch_request(params: ScoreParams, narrative: str, items: list[Item]) -> Request:
    scale = params.instrument.scale
    return Request(
        batch_messages(params, narrative, items),
        BatchAnswers,
        params.prompt.version,
        schema=batch_schema(items, scale),
        context={"ids": [item.id for item in items], "min": scale.min, "max": scale.max},
        max_tokens=BATCH_TOKENS_PER_ITEM * len(items) + 32,
    )


# ------------------------------------------------------------------------------ the mode


async def probe_logprobs(
    llm: LLMConfig, endpoint: Endpoint, k: int, cache_dir: str | None = None
) -> tuple[bool, str, Usage]:
    """(supported, why not, usage) of one request asking for the top-k alternatives; through
    the response cache when given, so a resumed run does not ask again."""
    client = _driver_client(llm, endpoint, cache_dir, concurrency=1)
    usage = Usage()
    try:
        completion = await client.chat(
            PROBE_MESSAGES, prompt_version="score-probe", max_tokens=1, top_logprobs=k, usage=usage
        )
    except LLMRequestError as exc:
        if exc.retryable:
            raise PersonagenError(f"the scoring endpoint does not answer: {exc.reason}") from None
        return False, exc.reason, usage
    finally:
        await client.aclose()
    top = completion.top_logprobs(0)
    if len(top) >= 2:
        return True, "", usage
    return False, "the answer has no top_logprobs" if not top else "only one alternative", usage


def _driver_client(
    llm: LLMConfig, endpoint: Endpoint, cache_dir: str | None, concurrency: int
) -> LLMClient:
    """A client for the driver's own requests (probe, content-free priors), through the
    response cache when given, so a resumed run does not ask again."""
    cache = ResponseCache(host_cache_path(cache_dir)) if cache_dir else None
    return LLMClient(llm, endpoint, api_key=llm.api_key(), cache=cache, concurrency=concurrency)


def resolve_mode(
    settings: ScoreConfig,
    instrument: Instrument,
    llm: LLMConfig,
    endpoint: Endpoint,
    cache_dir: str | None = None,
) -> tuple[str, Usage]:
    """The answer mode of this run (`auto`: logprob if the endpoint supports it, else text)."""
    if settings.mode == "embedding":
        raise PersonagenError(
            "score.mode=embedding scores a whole bank at once, without an LLM: run "
            "`personagen score BANK --mode embedding` (and build.score=false in a build)"
        )
    if settings.mode in ("text", "batch"):
        return settings.mode, Usage()
    if not supports_logprobs(instrument.scale):
        scale = instrument.scale
        if settings.mode in LOGPROB_MODES:
            raise PersonagenError(
                f"score.mode={settings.mode} needs single-digit scale points; instrument "
                f"{instrument.id!r} has {scale.min}-{scale.max} (use text or batch)"
            )
        return "text", Usage()
    ok, why, usage = asyncio.run(probe_logprobs(llm, endpoint, settings.top_logprobs, cache_dir))
    if ok:
        return ("calibrated" if settings.mode == "calibrated" else "logprob"), usage
    if settings.mode in LOGPROB_MODES:
        raise PersonagenError(
            f"score.mode={settings.mode}, but the endpoint gives no top_logprobs ({why}); "
            "use score.mode=auto or text"
        )
    log.warning("the endpoint gives no top_logprobs (%s): scoring in text mode", why)
    return "text", usage


async def content_free_priors(
    client: LLMClient, instrument: Instrument, settings: ScoreConfig, usage: Usage
) -> dict[str, tuple[float, ...]]:
    """Item id -> the item's content-free prior (`content_free_prior`): every item asked once
    per content-free persona (`CONTENT_FREE`), in the per-item prompt, with logprobs. An input
    whose top tokens hold no scale answer is left out of the mean; an item left with none is an
    error (it cannot be calibrated)."""
    prompt = item_prompt()
    params = ScoreParams(instrument, "logprob", prompt, 0, settings)

    async def distribution(item: Item, persona: str) -> AnswerDistribution | None:
        completion = await client.chat(
            item_messages(params, persona, item),
            prompt_version=prompt.version,
            max_tokens=1,
            top_logprobs=settings.top_logprobs,
            usage=usage,
        )
        try:
            return answer_distribution(completion.top_logprobs(0), instrument.scale)
        except NoScaleAnswer:
            return None

    asked = [(item, persona) for item in instrument.items for persona in CONTENT_FREE]
    answers = await asyncio.gather(*(distribution(item, persona) for item, persona in asked))
    by_item: dict[str, list[AnswerDistribution]] = {item.id: [] for item in instrument.items}
    for (item, _), dist in zip(asked, answers, strict=True):
        if dist is not None:
            by_item[item.id].append(dist)
    blank = [item_id for item_id, dists in by_item.items() if not dists]
    if blank:
        raise PersonagenError(
            f"score.mode=calibrated: without a persona the model gives no {instrument.scale.min}-"
            f"{instrument.scale.max} answer to item(s) {', '.join(blank[:5])}, which cannot be "
            "calibrated; use score.mode=logprob"
        )
    return {item_id: content_free_prior(dists) for item_id, dists in by_item.items()}


def measure_calibration(
    llm: LLMConfig,
    endpoint: Endpoint,
    instrument: Instrument,
    settings: ScoreConfig,
    cache_dir: str | None = None,
) -> tuple[dict[str, tuple[float, ...]], Usage]:
    """The content-free priors of the instrument's items (see `content_free_priors`), once per
    run in the driver: len(CONTENT_FREE) requests per item, answered from the response cache
    when a run asks again."""
    client = _driver_client(llm, endpoint, cache_dir, concurrency=llm.concurrency)
    usage = Usage()

    async def main() -> dict[str, tuple[float, ...]]:
        try:
            return await content_free_priors(client, instrument, settings, usage)
        except LLMRequestError as exc:
            raise PersonagenError(
                f"score.mode=calibrated: a content-free request failed: {exc.reason}"
            ) from None
        finally:
            await client.aclose()

    return asyncio.run(main()), usage


def resolve_stage(
    cfg: Config,
    instrument: Instrument,
    llm: LLMConfig,
    endpoint: Endpoint,
    cache_dir: str | None = None,
    after: str | None = None,
    bare_temperature: float | None = None,
) -> tuple[Stage, Usage]:
    """The scoring stage of this run on `endpoint`: the mode resolved (`resolve_mode`) and, in
    calibrated mode, the items' content-free priors measured; with the usage of those requests."""
    mode, usage = resolve_mode(cfg.score, instrument, llm, endpoint, cache_dir)
    calibration = None
    if mode == "calibrated" and bare_temperature is None:
        calibration, asked = measure_calibration(llm, endpoint, instrument, cfg.score, cache_dir)
        usage.add(asked)
    stage = score_stage(cfg, instrument, mode, after, bare_temperature, calibration)
    return stage, usage


# ------------------------------------------------------------------------------ the stage


def score_stage(
    cfg: Config,
    instrument: Instrument,
    mode: str,
    after: str | None = None,
    bare_temperature: float | None = None,
    calibration: Mapping[str, tuple[float, ...]] | None = None,
) -> Stage:
    """The scoring stage (mode resolved, see `resolve_mode`; calibrated mode needs the items'
    `calibration`, see `resolve_stage`): one request per persona in batch mode with every item
    at once, else a driver of its item (or chunk) requests. In a chain after the judge,
    personas the judge rejected pass through unscored. `bare_temperature`: the no-persona
    baseline's respondents, answers sampled at that temperature (per item)."""
    bare = bare_temperature is not None
    if bare and mode in ("batch", "calibrated"):
        raise PersonagenError(
            f"the no-persona baseline answers per item, uncalibrated: use score.mode auto, "
            f"not {mode}"
        )
    if (mode == "calibrated") != (calibration is not None):
        raise ValueError("content-free priors go with calibrated mode, and it needs them")
    prompt = batch_prompt() if mode == "batch" else item_prompt(bare)
    model = cfg.stage_llm(STAGE).model
    params = ScoreParams(
        instrument, mode, prompt, cfg.seed, cfg.score, model, bare_temperature, calibration
    )
    if mode == "batch" and requests_per_persona(params) == 1:
        return LLMStage(
            STAGE,
            SCORE_COLUMNS,
            params,
            batch_request,
            batch_parse,
            prompt.version,
            KEY,
            after,
            explain=batch_explain,
            provenance=provenance(params),
        )
    return DrivenStage(
        STAGE,
        SCORE_COLUMNS,
        params,
        score_row,
        takes,
        prompt.version,
        KEY,
        after,
        requests_per_row=requests_per_persona(params),
        provenance=provenance(params),
    )


def requests_per_persona(params: ScoreParams) -> int:
    """Requests one persona needs (retries and repairs aside)."""
    items = len(params.instrument.items)
    if params.mode == "batch":
        return math.ceil(items / (params.settings.items_per_request or items))
    return items


def provenance(params: ScoreParams) -> dict[str, Any]:
    """What the manifest records about the scores beyond the model and prompt."""
    calibration = None
    if params.calibration is not None:
        calibration = {
            "content_free": list(CONTENT_FREE),
            "prompt_version": params.prompt.version,
            "smoothing": CALIBRATION_SMOOTHING,
            "priors": {item_id: list(prior) for item_id, prior in params.calibration.items()},
        }
    return {
        "instrument": params.instrument.id,
        "answer_mode": params.mode,
        "bare_temperature": params.bare_temperature,
        "calibration": calibration,
        "shuffle_seed": params.seed,
        "shuffle": "items in numpy default_rng(score_seed).permutation order; score_seed = "
        "first 8 bytes of sha256('<seed>:<persona_id>') >> 1",
    }
